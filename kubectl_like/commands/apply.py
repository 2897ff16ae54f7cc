"""``balsamctl apply -f FILE|DIR|- [-R] [--prune -l SEL | --prune --all] [--dry-run]``."""

from __future__ import annotations

import click

from apis import ApiError, Selector, parse_selector

from .. import applier
from .._context import Ctx, common_options, get_ctx
from .._errors import CLIError
from ..printers import object_ref, printer_for
from ._shared import DRY_RUN, dry_run_suffix, filename_options, load_manifests, warn_finished

PRUNE_ALL_REQUIRED = (
    "all resources selected for prune without explicitly passing --all. To prune all resources, pass the --all "
    "flag. If you did not mean to prune all resources, specify a label selector"
)


def load_selected(ctx: Ctx, filenames: tuple[str, ...], recursive: bool, selector: str | None, prune: bool,
                  prune_all: bool) -> tuple[list[applier.Manifest], Selector | None]:
    """apply's and diff's -l/--prune/--all checked together, then the manifests read and kept
    when their labels match the selector (None without -l)."""
    if prune_all and not prune:
        raise CLIError("--all is only used together with --prune")
    if prune and prune_all and selector:
        raise CLIError("cannot set --all and --selector at the same time")
    if prune and not prune_all and not selector:
        raise CLIError(PRUNE_ALL_REQUIRED)
    sel: Selector | None = parse_selector(selector) if selector else None
    manifests = load_manifests(ctx, filenames, recursive, require_name=True, verb="apply")
    if sel is not None:
        manifests = [m for m in manifests if sel.matches(m.obj.metadata.labels)]
    return manifests, sel


@click.command("apply")
@filename_options
@DRY_RUN
@click.option("-o", "--output", type=click.Choice(["name", "yaml", "json"]), default=None, help="Print the applied objects.")
@click.option("-l", "--selector", default=None, metavar="SELECTOR",
              help="Apply only the documents whose labels match; with --prune, prune only objects that match.")
@click.option("--prune", is_flag=True,
              help="Delete objects of the applied kinds that an earlier apply created (they carry the "
              "last-applied annotation) but that are no longer in the files. Needs -l or --all.")
@click.option("--all", "prune_all", is_flag=True, help="With --prune: consider every object of the applied kinds.")
@common_options
def command(filenames: tuple[str, ...], recursive: bool, dry_run: str, output: str | None, selector: str | None,
            prune: bool, prune_all: bool) -> None:
    """Apply manifests: create what is new, update what changed, leave the rest.

    Updates are kubectl's three-way merge: a field removed from the manifest is removed from the
    object, fields set by others (labels added by hand, status) are kept. Every document is
    validated before anything is written, and everything (prunes included) is written in one
    store transaction: one bad document means no object is applied.
    A finished job whose spec changes is not run again by it (a warning says so): `balsamctl retry job NAME`.
    Prints `job.balsam.io/NAME created|configured|unchanged|pruned` per object.

    \b
    balsamctl apply -R -f manifests/
    balsamctl apply -R -f manifests/ --prune -l app.kubernetes.io/part-of=survey
    """
    if not filenames:
        raise click.UsageError("must specify -f FILE|DIR|-", click.get_current_context())
    ctx = get_ctx()
    manifests, sel = load_selected(ctx, filenames, recursive, selector, prune, prune_all)
    if sel is not None:
        if not manifests and not prune:
            raise CLIError(f"no objects passed to apply match the selector {selector!r}")
    try:
        outcome = applier.apply_manifests(ctx.registry, manifests, dry_run=dry_run,
                                          prune=(sel or Selector()) if prune else None)
    except applier.LocatedError:
        raise
    except ApiError as e:
        raise applier.LocatedError(e, "", " (no objects were applied)") from None
    warn_finished(ctx, [(c.live, obj) for c, obj in outcome.results if c.action == "configured"])
    if output:  # name, yaml or json (click checked it before anything was written)
        objs = [obj for _, obj in outcome.results]
        if objs:
            click.echo(printer_for(output, type(objs[0])).render(objs, single=len(objs) == 1), nl=False)
        return
    suffix = dry_run_suffix(dry_run)
    for change, obj in outcome.results:
        click.echo(f"{object_ref(obj)} {change.action}{suffix}")
    for obj in outcome.pruned:
        click.echo(f"{object_ref(obj)} pruned{suffix}")
