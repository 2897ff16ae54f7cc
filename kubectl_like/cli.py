"""``balsamctl``: kubectl's habits over the Balsam resource model.

Each command lives in ``kubectl_like/commands/<name>.py`` as a short function that parses
its flags, calls ``apis`` and hands objects to a printer (``printers.py``). This module
only builds the group and guarantees the error contract: whatever goes wrong, the user
sees ONE line on stderr (``error: ...`` or ``Error from server (Reason): ...``) and a
non-zero exit, never a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from store.process import tune_gc

from ._context import Ctx, common_options
from ._errors import render_error


class BalsamGroup(click.Group):
    """A click group whose ``main`` turns every failure into one kubectl-style line."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        code = 0
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except click.exceptions.Exit as e:  # pragma: no cover - click returns it when not standalone
            code = e.exit_code
        except click.Abort:
            click.echo("error: aborted", err=True)
            code = 1
        except KeyboardInterrupt:
            code = 130
        except BrokenPipeError:
            # `balsamctl get jobs | head`: stop quietly, like kubectl.
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except OSError:
                pass
            code = 1
        except click.UsageError as e:
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            click.echo(render_error(e) + hint, err=True)
            code = 1
        except Exception as e:  # noqa: BLE001 - the last line of defence against tracebacks
            click.echo(render_error(e), err=True)
            code = getattr(e, "exit_code", 1) if isinstance(e, click.ClickException) else 1
        if standalone_mode:
            sys.exit(code)
        return code

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(COMMAND_MODULES))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            self.add_command(importlib.import_module(COMMAND_MODULES[cmd_name], __package__).command)
        return self.commands.get(cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        obj = ctx.ensure_object(Ctx)
        try:
            rv = super().invoke(ctx)
        finally:
            obj.close()
        return obj.exit_code if obj.exit_code else rv


CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


@click.group(cls=BalsamGroup, context_settings=CONTEXT_SETTINGS)
@common_options
@click.version_option(package_name="balsamctl", prog_name="balsamctl")
def cli() -> None:
    """balsamctl: the Balsam HPC job system as a Kubernetes-style control plane.

    \b
    Start:   balsamctl init mysite && cd mysite
    Submit:  balsamctl apply -f jobs.yaml   |   balsamctl create job --app hello -w demo/1
    Look:    balsamctl get jobs [-l SELECTOR] [--state S] [-o wide|yaml|json|name|jsonpath=...]
             balsamctl describe job NAME
    Change:  balsamctl label|annotate jobs -l SELECTOR k=v [--overwrite]  |  patch job NAME -p '{...}'
    Re-run:  balsamctl retry -l SELECTOR [--state FAILED]  |  retry job NAME
    Remove:  balsamctl delete job NAME | -l SELECTOR | -f FILE
    Run:     balsamctl up [--until-done] [--nodes N --cpus C --gpus G]
    Follow:  balsamctl get jobs -w | wait job/NAME --for=state=JOB_FINISHED | logs -f NAME
    """


#: Each command's module, imported when the command is run or listed: `balsamctl report`
#: then loads only what it needs, not every other command's dependencies (0.3 s of start-up).
COMMAND_MODULES = {
    "init": ".commands.init", "apply": ".commands.apply", "create": ".commands.create", "get": ".commands.get",
    "describe": ".commands.describe", "explain": ".commands.explain", "delete": ".commands.delete",
    "diff": ".commands.diff", "edit": ".commands.edit", "crds": ".commands.crds", "operator": ".commands.operator",
    "wait": ".commands.wait", "logs": ".commands.logs", "up": ".commands.up",
    "controller-manager": ".commands.controller_manager", "nodeagent": ".commands.node_agent",
    "completion": ".commands.completion", "admin": ".commands.admin", "login": "._login", "queue": "._queue",
    "report": ".commands.report", "top": ".commands.top", "dashboard": ".commands.dashboard",
    "label": ".commands.label", "annotate": ".commands.annotate", "patch": ".commands.patch",
    "retry": ".commands.retry",
}


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``balsamctl``)."""
    tune_gc("cli")  # the process's GC settings, here and only here (store/process.py)
    cli.main(args=list(argv) if argv is not None else None, prog_name="balsamctl")
