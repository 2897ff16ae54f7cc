"""``balsamctl describe KIND NAME...``: everything about an object, for a human."""

from __future__ import annotations

import click

from apis import utcnow

from .._context import common_options, get_ctx
from .._errors import CLIError
from ..describe import describe
from ..query import Filters, get_named, query
from .get import resolve_targets


@click.command("describe")
@click.argument("args", nargs=-1, metavar="KIND [NAME...]")
@click.option("-l", "--selector", default=None, metavar="SELECTOR", help="Describe every object it selects.")
@common_options
def command(args: tuple[str, ...], selector: str | None) -> None:
    """Show an object's spec, status, conditions and events (its state history).

    \b
    balsamctl describe job NAME
    balsamctl describe jobs -l experiment=foo
    """
    ctx = get_ctx()
    kind, names = resolve_targets(args)
    filters = Filters.parse(selector, (), {}, None, None)
    if names and filters:
        raise CLIError("a selector cannot be combined with names")
    if not names and not filters:
        raise CLIError(f"you must specify the name of the {kind.SINGULAR} to describe (or -l SELECTOR)")
    reg = ctx.registry
    if names:
        objs, missing = get_named(reg, kind, names, ctx.namespace)
    else:
        objs, missing = query(reg, kind, [ctx.namespace], filters), []
        if not objs:
            click.echo(f"No resources found in {ctx.namespace} namespace.", err=True)
    now = utcnow()
    click.echo("\n\n".join(describe(o, now).rstrip("\n") for o in objs) + ("\n" if objs else ""), nl=False)
    for err in missing:
        ctx.report(err)
