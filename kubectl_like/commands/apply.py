"""``balsamctl apply -f FILE|DIR|- [-R]``: create or update objects from manifests."""

from __future__ import annotations

import click

from .._context import common_options, get_ctx
from ._shared import DRY_RUN, filename_options, load_manifests, write_manifests


@click.command("apply")
@filename_options
@DRY_RUN
@click.option("-o", "--output", type=click.Choice(["name", "yaml", "json"]), default=None, help="Print the applied objects.")
@common_options
def command(filenames: tuple[str, ...], recursive: bool, dry_run: str, output: str | None) -> None:
    """Apply manifests: create what is new, update what changed, leave the rest.

    Every document is validated before anything is written, and everything is written in
    one store transaction: one bad document means no object is applied.
    Prints `job.balsam.io/NAME created|configured|unchanged` per object.
    """
    if not filenames:
        raise click.UsageError("must specify -f FILE|DIR|-", click.get_current_context())
    ctx = get_ctx()
    manifests = load_manifests(ctx, filenames, recursive, require_name=True, verb="apply")
    write_manifests(ctx, manifests, create_only=False, dry_run=dry_run, output=output)
