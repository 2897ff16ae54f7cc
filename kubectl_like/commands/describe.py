"""``balsamctl describe KIND NAME...``: everything about an object, for a human."""

from __future__ import annotations

import click

from apis import Event, Job, Registry, Resource, utcnow

from .._context import common_options, get_ctx
from .._errors import CLIError
from ..completion import complete_label_keys, complete_targets
from ..describe import Extra, describe
from ..query import Filters, get_named, query
from ..reasons import Surroundings, current_conditions
from .get import resolve_targets


@click.command("describe")
@click.argument("args", nargs=-1, metavar="KIND [NAME...]", shell_complete=complete_targets)
@click.option("-l", "--selector", default=None, metavar="SELECTOR", shell_complete=complete_label_keys, help="Describe every object it selects.")
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
    env = Surroundings(reg, ctx.namespace, now)
    events = events_by_uid(reg, ctx.namespace) if objs else {}

    def extra(o: Resource) -> Extra:
        conds = current_conditions(o, env) if isinstance(o, Job) else None
        return Extra(conds, events.get(o.metadata.uid or "", []))

    click.echo("\n\n".join(describe(o, now, extra(o)).rstrip("\n") for o in objs) + ("\n" if objs else ""),
               nl=False)
    for err in missing:
        ctx.report(err)


def events_by_uid(reg: Registry, namespace: str) -> dict[str, list[Event]]:
    """The namespace's Events by the uid of the object they are about (Events are few: only
    situations that matter make one, and they expire)."""
    out: dict[str, list[Event]] = {}
    for ev in reg.list(Event, namespace)[0]:
        out.setdefault(ev.involved_object.uid or "", []).append(ev)
    return out
