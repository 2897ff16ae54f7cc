"""``balsamctl diff -f FILE|DIR|- [-R] [--prune -l SEL|--all]``: what ``apply`` would change.

For every document, a unified diff of the live object against the object ``apply`` would
write (the three-way merge of ``applier.merge``), as YAML; objects that do not exist yet are
diffed against nothing, objects ``--prune`` would delete against nothing. The write is also
run as a server dry run, so whatever admission would refuse (a missing App, a resource edit
of a RUNNING job) is an error here too.

The last-applied annotation is left out of the texts: it repeats the manifest and changes
with every change. Exit codes are kubectl's: 0 no differences, 1 differences, >1 an error
(bad flags included).
"""

from __future__ import annotations

import difflib
from typing import Any

import click

from apis import API_VERSION, Resource, Selector

from .. import applier
from .._context import common_options, get_ctx
from .._errors import CLIError, render_error
from ..printers import dump_yaml
from ._shared import filename_options
from .apply import load_selected

EXIT_ERROR = 2


class DiffFailed(click.ClickException):
    """A refusal of ``diff`` itself (bad flags): exit 2, as kubectl's diff."""

    exit_code = EXIT_ERROR


class DiffCommand(click.Command):
    """Usage errors exit 2 (kubectl: ">1 = error"), not the 1 other commands use: 1 means
    "differences found" here."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            raise DiffFailed(f"{e.format_message()} (see '{ctx.command_path} --help')") from None


def diff_text(obj: Resource | None) -> str:
    """The YAML ``diff`` compares: the object without its last-applied annotation."""
    if obj is None:
        return ""
    d: dict[str, Any] = obj.to_dict()
    meta = d.get("metadata") or {}
    ann = meta.get("annotations")
    if isinstance(ann, dict) and applier.LAST_APPLIED in ann:
        ann = {k: v for k, v in ann.items() if k != applier.LAST_APPLIED}
        if ann:
            meta["annotations"] = ann
        else:
            meta.pop("annotations", None)
    return dump_yaml(d)


def object_path(obj: Resource) -> str:
    group, version = API_VERSION.split("/")
    return f"{group}.{version}.{obj.KIND}.{obj.namespace}.{obj.name}"


def unified(live: Resource | None, merged: Resource | None, ref: Resource) -> str:
    path = object_path(ref)
    a, b = diff_text(live), diff_text(merged)
    if a == b:
        return ""
    lines = difflib.unified_diff(a.splitlines(keepends=True), b.splitlines(keepends=True),
                                 f"live/{path}", f"merged/{path}")
    body = "".join(ln if ln.endswith("\n") else ln + "\n" for ln in lines)
    return f"diff -u -N live/{path} merged/{path}\n{body}"


@click.command("diff", cls=DiffCommand)
@filename_options
@click.option("-l", "--selector", default=None, metavar="SELECTOR",
              help="Diff only the documents whose labels match; with --prune, prune only objects that match.")
@click.option("--prune", is_flag=True, help="Also show the objects 'apply --prune' would delete.")
@click.option("--all", "prune_all", is_flag=True, help="With --prune: consider every object of the applied kinds.")
@common_options
def command(filenames: tuple[str, ...], recursive: bool, selector: str | None, prune: bool,
            prune_all: bool) -> None:
    """Show what `apply` would change: a unified diff of live versus merged objects.

    Exit status: 0 no differences, 1 differences found, >1 an error.

    \b
    balsamctl diff -R -f manifests/
    balsamctl diff -R -f manifests/ --prune -l app.kubernetes.io/part-of=survey
    """
    ctx = get_ctx()
    try:
        if not filenames:
            raise CLIError("must specify -f FILE|DIR|-")
        manifests, sel = load_selected(ctx, filenames, recursive, selector, prune, prune_all)
        # A server dry run: admission says no here as it would for apply. Nothing is written.
        outcome = applier.apply_manifests(ctx.registry, manifests, dry_run="server",
                                          prune=(sel or Selector()) if prune else None)
    except applier.NothingApplied as e:  # without apply's "(no objects were applied)"
        click.echo(f"error: {e.where}: {e.bare}" if e.where else f"error: {e.bare}", err=True)
        ctx.exit_code = EXIT_ERROR
        return
    except Exception as e:  # noqa: BLE001 - every failure is exit 2, one line
        click.echo(render_error(e), err=True)
        ctx.exit_code = EXIT_ERROR
        return
    out: list[str] = []
    for change, _ in outcome.results:
        if change.action != "unchanged":
            out.append(unified(change.live, change.desired, change.desired))
    for obj in outcome.pruned:
        out.append(unified(obj, None, obj))
    text = "".join(out)
    if text:
        click.echo(text, nl=False)
        ctx.exit_code = 1
