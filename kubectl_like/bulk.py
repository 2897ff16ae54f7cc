"""Changing objects in place, one or many: ``label``, ``annotate``, ``patch`` and ``retry``.

1. :func:`select` finds the targets the user named: names (``KIND NAME...`` / ``KIND/NAME``),
   or a selector (``-l``, ``--field-selector``, ``--state``) answered from the indexes
   (``query.py``), or ``--all``. Naming nothing is refused, as kubectl refuses it.
2. :func:`update_all` computes every new object first (a change that refuses one object, such as
   a label that exists without ``--overwrite``, raises before anything is written), then writes
   them with a CAS on each resourceVersion, up to ``CHUNK`` objects per store transaction. On a
   race (Conflict: an object moved meanwhile) the chunk is read again and the change computed
   again on the fresh objects, so nobody's write is lost and nothing is half applied.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TypeVar

from apis import Conflict, NotFound, Registry, Resource

from ._context import Ctx
from ._errors import CLIError
from .query import Filters, get_named, query

CHUNK = 5000  # objects per store transaction
ATTEMPTS = 20

R = TypeVar("R", bound=Resource)
#: The new object for one target, or None when it would not change (raises to refuse).
Change = Callable[[R], "R | None"]


def select(ctx: Ctx, kind: type[Resource], names: Sequence[str], filters: Filters, all_: bool
           ) -> tuple[list[Resource], list[NotFound]]:
    """The objects a command acts on, and a NotFound per missing name."""
    if names and (filters or all_):
        raise CLIError("names cannot be combined with a selector, --field-selector, --state or --all")
    if filters and all_:
        raise CLIError("--all cannot be combined with a selector, --field-selector or --state")
    if not names and not filters and not all_:
        raise CLIError(f"one or more resources must be specified as <resource> <name> or <resource>/<name>, "
                       f"or selected with -l, --field-selector or --all (e.g. '{kind.PLURAL} -l key=value')")
    if names:
        return get_named(ctx.registry, kind, names, ctx.namespace)
    return query(ctx.registry, kind, [ctx.namespace], filters), []


def _reread(reg: Registry, kind: type[R], objs: Sequence[R]) -> list[R]:
    by_ns: dict[str, list[str]] = defaultdict(list)
    for o in objs:
        by_ns[o.namespace].append(o.name)
    return [o for ns, names in by_ns.items() for o in reg.get_many(kind, names, ns) if o is not None]


def _changes(objs: Sequence[R], change: Change[R]) -> list[tuple[R, R]]:
    out: list[tuple[R, R]] = []
    for o in objs:
        n = change(o)
        if n is not None:
            out.append((o, n))
    return out


def update_all(reg: Registry, kind: type[R], objs: Sequence[R], change: Change[R], *,
               dry_run: str = "none") -> list[tuple[R, R]]:
    """Apply ``change`` to every object and write what changed (see the module doc).

    Returns (before, after) per changed object, in the order given; ``after`` is what the store
    holds now (server dry run: what it would hold; client dry run: the computed object)."""
    chunks = [list(objs[i : i + CHUNK]) for i in range(0, len(objs), CHUNK)]
    planned = [_changes(c, change) for c in chunks]  # everything computed (and refused) before any write
    if dry_run == "client":
        return [p for ps in planned for p in ps]
    done: list[tuple[R, R]] = []
    for chunk, todo in zip(chunks, planned, strict=True):
        for _ in range(ATTEMPTS):
            if not todo:
                break
            try:
                _, written = reg.write(updates=todo, dry_run=dry_run == "server")
            except (Conflict, NotFound):
                chunk = _reread(reg, kind, chunk)
                todo = _changes(chunk, change)
                continue
            done.extend((old, new) for (old, _), new in zip(todo, written, strict=True))  # type: ignore[misc]
            break
        else:
            raise Conflict(kind.resource_name(), todo[0][0].name, "objects kept changing; nothing more was written")
    return done
