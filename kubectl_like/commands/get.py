"""``balsamctl get KIND [NAME...]``: list or show objects, kubectl-style."""

from __future__ import annotations

from dataclasses import dataclass

import click

from apis import Event, Job, NotFound, Registry, Resource, kind_for
from apis._meta import validate_label_key
from store import WatchClosed

from .._context import Ctx, common_options, get_ctx
from .._errors import CLIError
from ..completion import complete_field_selector, complete_label_keys, complete_states, complete_targets
from ..fieldselector import parse_field_selector
from ..printers import Printer, PrintOptions, printer_for, resource_ref
from ..query import Filters, get_named, namespaces_of, query, query_names
from ..reasons import Surroundings, with_current_conditions
from ..watching import ListWatch
from .create import parse_pairs


def resolve_targets(args: tuple[str, ...]) -> tuple[type[Resource], list[str]]:
    """``KIND [NAME...]`` or ``KIND/NAME ...`` → (kind, names)."""
    if not args:
        raise click.UsageError("you must specify the type of resource to get, e.g. 'balsamctl get jobs'")
    if "/" in args[0]:
        kinds: set[type[Resource]] = set()
        names: list[str] = []
        for a in args:
            k, sep, name = a.partition("/")
            if not sep or not name:
                raise CLIError(f"there is no need to specify a resource type as a separate argument when passing "
                               f"arguments in resource/name form (got {a!r})")
            kinds.add(kind_for(k))
            names.append(name)
        if len(kinds) > 1:
            raise CLIError("all resource/name arguments must be of one kind")
        return kinds.pop(), names
    if "," in args[0]:
        raise CLIError("several kinds at once are not supported; run one get per kind")
    return kind_for(args[0]), list(args[1:])


@dataclass(frozen=True)
class About:
    """``--for KIND/NAME``: the object Events must be about."""

    kind: str
    name: str

    def matches(self, ev: Event) -> bool:
        return ev.involved_object.kind == self.kind and ev.involved_object.name == self.name


def parse_for(value: str | None, kind: type[Resource]) -> About | None:
    if value is None:
        return None
    if kind is not Event:
        raise CLIError("--for is only supported with 'get events'")
    k, sep, name = value.partition("/")
    if not sep or not name or not k:
        raise CLIError(f'invalid --for value "{value}": expected KIND/NAME, e.g. job/NAME')
    return About(kind_for(k).KIND, name)


def current(reg: Registry, objs: list[Resource]) -> list[Resource]:
    """Jobs with the conditions that hold now (what a reader adds: no controller manager
    alive, no node agent, ...), so every printer shows the same reason as describe."""
    if not objs or not isinstance(objs[0], Job):
        return objs
    envs: dict[str, Surroundings] = {}
    out: list[Resource] = []
    for o in objs:
        env = envs.get(o.namespace)
        if env is None:
            env = envs[o.namespace] = Surroundings(reg, o.namespace)
        out.extend(with_current_conditions([o], env))  # type: ignore[list-item]
    return out


def parse_label_columns(values: tuple[str, ...]) -> tuple[str, ...]:
    """``-L a,b -L c`` → ``("a", "b", "c")``, each a valid label key (checked before any read)."""
    keys: list[str] = []
    for v in values:
        for k in v.split(","):
            k = k.strip()
            if not k:
                raise CLIError(f'invalid -L value "{v}": expected KEY[,KEY...]')
            try:
                validate_label_key(k)
            except ValueError as e:
                raise CLIError(f"-L {k}: {e}") from None
            keys.append(k)
    return tuple(dict.fromkeys(keys))


def no_resources_message(ctx: Ctx, all_namespaces: bool) -> str:
    return "No resources found" if all_namespaces else f"No resources found in {ctx.namespace} namespace."


@click.command("get")
@click.argument("args", nargs=-1, metavar="KIND [NAME...]", shell_complete=complete_targets)
@click.option("-l", "--selector", default=None, metavar="SELECTOR", shell_complete=complete_label_keys,
              help="Label selector: k=v, k==v, k!=v, 'k in (a,b)', 'k notin (a,b)', k, !k; comma = AND.")
@click.option("--state", "states", multiple=True, metavar="STATE", shell_complete=complete_states, help="Only jobs in this state (repeatable).")
@click.option("-t", "--tag", "tags", multiple=True, metavar="KEY=VALUE", shell_complete=complete_label_keys, help="Only objects with this tag.")
@click.option("--field-selector", default=None, metavar="SELECTOR", shell_complete=complete_field_selector,
              help="Field selector: status.state=FAILED, spec.app==hello, spec.workdir!=a/b, spec.site=x, "
              "metadata.name=n; comma = AND.")
@click.option("--workdir", default=None, metavar="FRAGMENT",
              help="Only jobs whose workdir contains FRAGMENT (Balsam's `job ls --workdir`).")
@click.option("-o", "--output", default=None,
              help="wide, yaml, json, name, jsonpath=TEMPLATE, custom-columns=HDR:PATH,...")
@click.option("-L", "--label-columns", "label_cols", multiple=True, metavar="KEY[,KEY...]",
              help="A column for the value of each of these labels (repeatable; tables only).")
@click.option("--show-labels", is_flag=True, help="A LABELS column with every label (tables only).")
@click.option("--sort-by", default=None, metavar="FIELD", help="Sort by a field path, e.g. .spec.priority.")
@click.option("--limit", type=click.IntRange(min=0), default=None, help="Show at most N objects.")
@click.option("-A", "--all-namespaces", is_flag=True, help="List across all namespaces.")
@click.option("--no-headers", is_flag=True, help="Table output without the header line.")
@click.option("-w", "--watch", is_flag=True, help="After listing, print one row per change (Ctrl-C ends).")
@click.option("--watch-only", is_flag=True, help="Print changes only, without listing first.")
@click.option("--for", "for_object", default=None, metavar="KIND/NAME",
              help="get events: only those about this object (e.g. --for job/NAME).")
@common_options
def command(args: tuple[str, ...], selector: str | None, states: tuple[str, ...], tags: tuple[str, ...],
            field_selector: str | None, workdir: str | None, output: str | None, label_cols: tuple[str, ...],
            show_labels: bool, sort_by: str | None, limit: int | None, all_namespaces: bool,
            no_headers: bool, watch: bool, watch_only: bool, for_object: str | None) -> None:
    """Show objects: a table by default, or -o yaml|json|name|wide|jsonpath=...

    \b
    balsamctl get jobs --state FAILED -l experiment=foo
    balsamctl get jobs --field-selector status.state=FAILED,spec.app=hello -L experiment
    balsamctl get jobs --workdir production-X --show-labels
    balsamctl get jobs -o jsonpath='{range .items[*]}{.metadata.name}{"\\n"}{end}'
    balsamctl get job NAME -o yaml
    balsamctl get jobs -w            # the table, then a row per change (-o json|yaml|name|wide too)
    balsamctl get events --for job/NAME [-w]
    """
    ctx = get_ctx()
    kind, names = resolve_targets(args)
    about = parse_for(for_object, kind)
    # Parse every flag before touching the store: bad input writes and reads nothing.
    options = PrintOptions(with_namespace=all_namespaces, no_headers=no_headers,
                           label_columns=parse_label_columns(label_cols), show_labels=show_labels)
    printer = printer_for(output, kind, options)
    if workdir is not None and kind is not Job:
        raise CLIError(f"--workdir only applies to jobs, not {kind.PLURAL}")
    filters = Filters.parse(selector, states, parse_pairs(tags, "--tag"), sort_by, limit,
                            fields=parse_field_selector(field_selector, kind))
    filters.workdir = workdir
    if about is not None:
        filters = filters.and_also(lambda o: isinstance(o, Event) and about.matches(o))
    if names and filters:
        raise CLIError("a selector, --state or --tag cannot be combined with names")
    if watch or watch_only:
        if len(names) > 1:
            raise CLIError(f"watch is only supported on individual resources and resource collections, but "
                           f"{len(names)} resources were named")
        name = names[0] if names else None
        stream_changes(ctx, kind, name, filters, printer, all_namespaces, list_first=not watch_only)
        return
    reg = ctx.registry
    if names:
        objs, missing = get_named(reg, kind, names, ctx.namespace)
        if objs:
            shown = objs if output == "name" else current(reg, objs)
            click.echo(printer.render(shown, single=len(names) == 1), nl=False)
        for err in missing:
            ctx.report(err)
        return
    namespaces = namespaces_of(reg, kind) if all_namespaces else [ctx.namespace]
    if output == "name" and not all_namespaces:
        # Names come from the index keys: nothing is read or decoded (listed in name order).
        found = query_names(reg, kind, namespaces, filters)
        if found is not None:
            ref = resource_ref(kind)
            if found:
                click.echo("".join(f"{ref}/{n}\n" for n in found), nl=False)
            else:
                click.echo(no_resources_message(ctx, all_namespaces), err=True)
            return
    objs = query(reg, kind, namespaces, filters)
    if output != "name":  # names need no reasons
        objs = current(reg, objs)
    text = printer.render(objs) if (objs or output in ("json", "yaml")) else ""
    if text:
        click.echo(text, nl=False)
    else:
        click.echo(no_resources_message(ctx, all_namespaces), err=True)


def stream_changes(ctx: Ctx, kind: type[Resource], name: str | None, filters: Filters, printer: Printer,
                   all_namespaces: bool, list_first: bool) -> None:
    """``get -w``: the current objects, then one entry per change of an object that passes
    the filters (and the change that makes one stop passing, kubectl's DELETED), from a
    watch started where the list was read. Ends on Ctrl-C or when the stream closes."""
    reg = ctx.registry
    namespace = None if all_namespaces else ctx.namespace

    def read() -> list[Resource]:
        if name is not None:
            obj = reg.try_get(kind, name, ctx.namespace)
            if obj is None:
                raise NotFound(kind.resource_name(), name)
            return [obj]
        return query(reg, kind, namespaces_of(reg, kind) if all_namespaces else [ctx.namespace], filters)

    with ListWatch(reg, kind, namespace, read, name=name) as lw:
        objs = lw.start()
        matching = {(o.namespace, o.name) for o in objs}
        first = True
        if list_first and objs:
            click.echo(printer.render_watch_start(objs), nl=False)
            first = False
        try:
            while True:
                for ev in lw.next(timeout=1.0):
                    key = (ev.object.namespace, ev.object.name)
                    if ev.type != "DELETED" and filters.matches(ev.object):
                        matching.add(key)
                    elif key in matching:
                        matching.discard(key)  # gone, or no longer passes the filters: its last row
                    else:
                        continue
                    click.echo(printer.render_event(ev.object, first), nl=False)
                    first = False
        except (KeyboardInterrupt, WatchClosed):
            return  # Ctrl-C ends a watch normally (exit 0), as in kubectl
