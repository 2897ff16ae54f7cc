"""``balsamctl wait``: block until objects meet a condition, on a store watch (no polling)."""

from __future__ import annotations

from dataclasses import dataclass

import click

from apis import JobState, NotFound, Resource, parse_state

from .._context import common_options, get_ctx
from .._errors import CLIError
from ..fieldselector import parse_field_selector
from ..jsonpath import find, format_value
from ..printers import resource_ref
from ..query import Filters, _state_of, get_named, query
from ..watching import Deadline, ListWatch, parse_duration
from .get import resolve_targets

TERMINAL = {JobState.JOB_FINISHED.value, JobState.FAILED.value}


@dataclass(frozen=True)
class WaitFor:
    """A parsed ``--for``: ``delete``, ``state=S``, ``condition=TYPE[=VALUE]`` or
    ``jsonpath={PATH}=VALUE``."""

    text: str
    what: str  # delete | state | condition | jsonpath
    key: str = ""
    value: str = ""

    @classmethod
    def parse(cls, text: str, kind: type[Resource]) -> WaitFor:
        what, sep, rest = text.partition("=")
        what = what.strip().lower()
        if what == "delete" and not sep:
            return cls(text, "delete")
        if what == "state" and rest:
            if kind.KIND == "Job":
                try:
                    rest = parse_state(rest).value
                except ValueError as e:
                    raise CLIError(f"--for={text}: {e}") from None
            return cls(text, "state", value=rest)
        if what == "condition" and rest:
            ctype, _, value = rest.partition("=")
            return cls(text, "condition", ctype, value or "True")
        if what == "jsonpath" and rest:
            path, eq, value = rest.rpartition("=") if "}=" in rest else (rest, "", "")
            path = path.strip().strip("'\"")
            if not eq or not (path.startswith("{") and path.endswith("}")):
                raise CLIError(f"--for={text}: expected jsonpath={{.path}}=VALUE")
            find({}, path[1:-1])  # syntax errors now, before anything is read
            return cls(text, "jsonpath", path[1:-1], value)
        raise CLIError(f"unrecognized condition: {text!r} (use delete, state=STATE, condition=TYPE[=VALUE] "
                       f"or jsonpath={{.path}}=VALUE)")

    def check(self, obj: Resource | None) -> tuple[bool, str | None]:
        """(met, why it never will be) for the object's current state (``None``: deleted)."""
        if self.what == "delete":
            return obj is None, None
        if obj is None:
            return False, f"was deleted while waiting for {self.text}"
        if self.what == "state":
            state = _state_of(obj) or ""
            if state.upper() == self.value.upper():
                return True, None
            if state in TERMINAL and self.value in TERMINAL:
                # Deviation from kubectl (which would wait out the timeout): a job that
                # reached the other end state will not get there by itself.
                return False, f"reached {state} while waiting for state={self.value}"
            return False, None
        if self.what == "condition":
            # kubectl compares condition types and values case-insensitively
            conds = getattr(getattr(obj, "status", None), "conditions", None) or []
            cond = next((c for c in conds if c.type.lower() == self.key.lower()), None)
            return cond is not None and str(cond.status).lower() == self.value.lower(), None
        found = find(obj.to_dict(), self.key)
        return bool(found) and format_value(found[0]) == self.value, None


@click.command("wait")
@click.argument("args", nargs=-1, metavar="KIND/NAME... | KIND NAME... | KIND -l SELECTOR")
@click.option("--for", "for_", required=True, metavar="CONDITION",
              help="state=JOB_FINISHED, condition=TYPE[=VALUE], delete, or jsonpath={.path}=VALUE.")
@click.option("--timeout", default="30s", show_default=True, metavar="DURATION",
              help="How long to wait (30s, 5m, 1h); 0 checks once, a negative value waits without limit.")
@click.option("-l", "--selector", default=None, metavar="SELECTOR", help="Wait for every object this selects.")
@click.option("--field-selector", default=None, metavar="SELECTOR",
              help="Wait for every object the field selector selects (e.g. spec.app=hello).")
@click.option("--all", "all_", is_flag=True, help="Wait for every object of the kind in the namespace.")
@common_options
def command(args: tuple[str, ...], for_: str, timeout: str, selector: str | None, field_selector: str | None,
            all_: bool) -> int:
    """Wait until objects meet a condition; print KIND/NAME condition met for each.

    \b
    balsamctl wait job/hello --for=state=JOB_FINISHED --timeout=60s
    balsamctl wait jobs -l experiment=foo --for=state=JOB_FINISHED
    balsamctl wait job/a job/b --for=condition=Unschedulable
    balsamctl wait job/old --for=delete

    Unlike kubectl, waiting for state=JOB_FINISHED ends at once (exit 1) when a job reaches
    FAILED (and state=FAILED when it reaches JOB_FINISHED): it would never get there by
    itself, so waiting out the timeout would only delay the error. A job deleted while
    waiting for a state or condition ends the wait the same way.
    """
    ctx = get_ctx()
    if not args:
        raise click.UsageError("you must specify the type of resource to wait for, e.g. 'balsamctl wait job/NAME'")
    kind, names = resolve_targets(args)
    cond = WaitFor.parse(for_, kind)
    seconds = parse_duration(timeout)
    filters = Filters.parse(selector, (), {}, None, None, fields=parse_field_selector(field_selector, kind))
    if names and (filters or all_):
        raise CLIError("a selector or --all cannot be combined with names")
    if not names and not filters and not all_:
        raise CLIError("resource(s) were provided, but no name, label selector, or --all flag specified")
    reg, ns = ctx.registry, ctx.namespace

    def read() -> list[Resource]:
        if names:
            return get_named(reg, kind, names, ns)[0]
        return query(reg, kind, [ns], filters)

    with ListWatch(reg, kind, ns, read, name=names[0] if len(names) == 1 else None) as lw:
        objs = {o.name: o for o in lw.start()}
        order = list(dict.fromkeys(names)) if names else list(objs)
        if not order:
            raise CLIError("no matching resources found")
        missing = [n for n in order if n not in objs]
        if missing and cond.what != "delete":
            raise NotFound(kind.resource_name(), missing[0])
        pending = dict.fromkeys(order)
        deadline = Deadline(seconds)

        def settle(name: str, obj: Resource | None) -> None:
            met, never = cond.check(obj)
            if met:
                del pending[name]
                click.echo(f"{resource_ref(kind)}/{name} condition met")
            elif never:
                raise CLIError(f"{kind.SINGULAR} {name} {never}")

        for name in order:
            settle(name, objs.get(name))
        try:
            while pending:
                left = deadline.left(1.0)
                for ev in lw.next(left):
                    if ev.object.name in pending:
                        settle(ev.object.name, None if ev.type == "DELETED" else ev.object)
                if pending and deadline.passed:
                    first = next(iter(pending))
                    raise CLIError(f"timed out waiting for the condition on {kind.PLURAL}/{first}")
        except KeyboardInterrupt:
            return 130
    return 0
