"""Flags and steps several commands share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from apis import TERMINAL, ApiError, Job, Resource

from .. import applier
from .._context import Ctx
from ..manifests import ManifestError, load_documents
from ..printers import object_ref, printer_for

F = TypeVar("F", bound=Callable[..., Any])

DRY_RUN = click.option(
    "--dry-run", "dry_run", type=click.Choice(["none", "client", "server"]), default="none",
    is_flag=False, flag_value="client", show_default=True,
    help="client: validate and print what would happen; server: also run the store's admission checks. "
    "Nothing is written.",
)


def filename_options(fn: F) -> F:
    fn = click.option("-R", "--recursive", is_flag=True, help="Process directories given with -f recursively.")(fn)
    fn = click.option("-f", "--filename", "filenames", multiple=True, metavar="FILE|DIR|-",
                      help="Manifest file, directory of manifests, or - for stdin (repeatable).")(fn)
    return fn


def load_manifests(ctx: Ctx, filenames: tuple[str, ...], recursive: bool, *, require_name: bool,
                   verb: str) -> list[applier.Manifest]:
    """Read and validate every document of every file; nothing touches the store."""
    done = {"apply": "applied", "create": "created", "delete": "deleted"}.get(verb, verb)
    try:
        docs = load_documents(filenames, recursive)
        if not docs:
            raise ManifestError("", f"no objects passed to {verb}")
        return applier.parse_manifests(docs, ctx.namespace, namespace_explicit=bool(ctx.namespace_flag),
                                       require_name=require_name, verb=verb)
    except applier.NothingApplied as e:
        if done == "applied":
            raise
        raise applier.NothingApplied(e.where, e.bare, done) from None
    except ManifestError as e:
        raise applier.NothingApplied(e.where, e.detail, done) from None


def dry_run_suffix(dry_run: str) -> str:
    return {"client": " (dry run)", "server": " (server dry run)"}.get(dry_run, "")


def write_manifests(ctx: Ctx, manifests: list[applier.Manifest], *, create_only: bool, dry_run: str,
                    output: str | None) -> None:
    verb = "created" if create_only else "applied"
    try:
        results = applier.execute(ctx.registry, manifests, create_only=create_only, dry_run=dry_run)
    except applier.LocatedError:
        raise
    except ApiError as e:
        raise applier.LocatedError(e, "", f" (no objects were {verb})") from None
    if output:  # name, yaml or json (click checked it before anything was written)
        objs = [obj for _, obj in results]
        click.echo(printer_for(output, type(objs[0])).render(objs, single=len(objs) == 1), nl=False)
        return
    suffix = dry_run_suffix(dry_run)
    for change, obj in results:
        click.echo(f"{object_ref(obj)} {change.action}{suffix}")


def warn_finished(ctx: Ctx, pairs: Sequence[tuple[Resource | None, Resource]]) -> None:
    """A kubectl-style warning per finished job whose spec a write changed: nothing re-runs it by
    itself (the controllers act on jobs that have not finished), ``balsamctl retry`` does."""
    for old, new in pairs:
        if not isinstance(old, Job) or not isinstance(new, Job) or old.status.state not in TERMINAL:
            continue
        if old.spec == new.spec:
            continue
        ns = f" -n {old.namespace}" if old.namespace != ctx.namespace else ""
        ctx.warn(f'job "{old.name}" is {old.status.state.value}; spec changes do not re-run it: '
                 f"use balsamctl retry job {old.name}{ns}")
