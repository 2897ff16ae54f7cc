"""``balsamctl delete KIND NAME... | -l SELECTOR | --all | -f FILE``."""

from __future__ import annotations

from collections import defaultdict

import click

from apis import Conflict, NotFound, Registry, Resource

from .._context import common_options, get_ctx
from .._errors import CLIError
from ..completion import complete_field_selector, complete_label_keys, complete_states, complete_targets
from ..fieldselector import parse_field_selector
from ..printers import resource_ref
from ..query import Filters, get_named, query
from ._shared import DRY_RUN, dry_run_suffix, filename_options, load_manifests
from .create import parse_pairs
from .get import resolve_targets

CHUNK = 5000  # objects per store transaction


def delete_chunk(reg: Registry, kind: type[Resource], objs: list[Resource], attempts: int = 20) -> list[Resource]:
    """Delete ``objs`` (and their index keys) in one transaction with CAS on each, so an
    object that moved meanwhile never leaves a stale index key; re-read and retried on a
    race. Returns the objects deleted (those someone else deleted first are left out)."""
    for _ in range(attempts):
        try:
            reg.write(deletes=objs)
            return objs
        except (Conflict, NotFound):
            by_ns: dict[str, list[str]] = defaultdict(list)
            for o in objs:
                by_ns[o.namespace].append(o.name)
            objs = [o for ns, names in by_ns.items() for o in reg.get_many(kind, names, ns) if o is not None]
    raise Conflict(kind.resource_name(), objs[0].name if objs else "?", "objects kept changing during delete")


@click.command("delete")
@click.argument("args", nargs=-1, metavar="KIND [NAME...]", shell_complete=complete_targets)
@filename_options
@click.option("-l", "--selector", default=None, metavar="SELECTOR", shell_complete=complete_label_keys, help="Delete every object it selects.")
@click.option("--state", "states", multiple=True, metavar="STATE", shell_complete=complete_states, help="Only jobs in this state (repeatable).")
@click.option("-t", "--tag", "tags", multiple=True, metavar="KEY=VALUE", shell_complete=complete_label_keys, help="Only objects with this tag.")
@click.option("--field-selector", default=None, metavar="SELECTOR", shell_complete=complete_field_selector,
              help="Delete every object the field selector selects (e.g. status.state=FAILED).")
@click.option("--all", "all_", is_flag=True, help="Delete every object of the kind in the namespace.")
@click.option("--ignore-not-found", is_flag=True, help="A name that does not exist is not an error.")
@DRY_RUN
@common_options
def command(args: tuple[str, ...], filenames: tuple[str, ...], recursive: bool, selector: str | None,
            states: tuple[str, ...], tags: tuple[str, ...], field_selector: str | None, all_: bool,
            ignore_not_found: bool, dry_run: str) -> None:
    """Delete objects by name, by selector, or as named in manifests.

    \b
    balsamctl delete job NAME...
    balsamctl delete jobs -l experiment=foo --state FAILED
    balsamctl delete jobs --field-selector status.state=FAILED,spec.app=hello
    balsamctl delete -f jobs.yaml
    """
    ctx = get_ctx()
    targets: dict[type[Resource], list[Resource]] = defaultdict(list)
    missing: list[NotFound] = []
    if filenames:
        if args or selector or states or tags or field_selector or all_:
            raise CLIError("-f cannot be combined with kinds, names, selectors or --all")
        manifests = load_manifests(ctx, filenames, recursive, require_name=True, verb="delete")
        by_kind: dict[tuple[type[Resource], str], list[str]] = defaultdict(list)
        for m in manifests:
            by_kind[(type(m.obj), m.obj.namespace)].append(m.obj.name)
        for (kind, ns), names in by_kind.items():
            found, miss = get_named(ctx.registry, kind, names, ns)
            targets[kind].extend(found)
            missing.extend(miss)
    else:
        kind, names = resolve_targets(args)
        filters = Filters.parse(selector, states, parse_pairs(tags, "--tag"), None, None,
                                fields=parse_field_selector(field_selector, kind))
        if names and (filters or all_):
            raise CLIError("names cannot be combined with a selector, --state, --tag or --all")
        if not names and not filters and not all_:
            raise CLIError("resource(s) were provided, but no name, label selector, or --all flag specified")
        if names:
            found, missing = get_named(ctx.registry, kind, names, ctx.namespace)
        else:
            found = query(ctx.registry, kind, [ctx.namespace], filters)
            if not found:
                click.echo(f"No resources found in {ctx.namespace} namespace.", err=True)
        targets[kind].extend(found)
    suffix = dry_run_suffix(dry_run)
    for kind, objs in targets.items():
        for i in range(0, len(objs), CHUNK):
            chunk = objs[i : i + CHUNK]
            if dry_run == "none":
                chunk = delete_chunk(ctx.registry, kind, chunk)
            for o in chunk:
                click.echo(f'{resource_ref(kind)} "{o.name}" deleted{suffix}')
    if not ignore_not_found:
        for err in missing:
            ctx.report(err)
