"""Dependency cycles: refused when a write makes one that the write itself shows.

A Job's parents must exist when it is created (``Registry._admission``), so a cycle made by
creating jobs lies wholly inside one request (one ``apply``, one ``bulk_create``): it is
found here without reading the store and the request is refused. An edit of ``spec.parents``
can close a cycle through jobs that already exist; the DependencyReconciler finds that one
(``find_cycle`` over its cache) and FAILs the jobs in it with a ``DependencyCycle`` reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from ._errors import Invalid
from ._kinds import Job
from ._registry import ADMISSION_CHECKS


def find_cycle(start: str, parents_of: Callable[[str], Sequence[str] | None], limit: int = 100_000) -> list[str] | None:
    """A path ``start → parent → ... → start`` following ``parents_of`` (None: a job not to be
    followed — unknown, or one that cannot be part of a cycle), or None. At most ``limit``
    jobs are visited (then None: a walk this long is not worth its cost in a reconcile)."""
    seen: set[str] = set()
    # Depth-first with an explicit stack of (job, iterator over its parents).
    first = parents_of(start)
    if not first:
        return None
    path = [start]
    stack = [iter(first)]
    while stack:
        nxt = next(stack[-1], None)
        if nxt is None:
            stack.pop()
            path.pop()
            continue
        if nxt == start:
            return [*path, start]
        if nxt in seen:
            continue
        seen.add(nxt)
        if len(seen) > limit:
            return None
        ps = parents_of(nxt)
        if ps:
            path.append(nxt)
            stack.append(iter(ps))
    return None


def cycle_text(cycle: Sequence[str]) -> str:
    return " → ".join(cycle)


def check_batch_acyclic(jobs: Iterable[tuple[str, Sequence[str]]]) -> None:
    """Invalid when the parent links among these (name, parents) form a cycle (a job that
    is its own parent included). Linear in the links: three-colour depth-first search."""
    graph = {name: parents for name, parents in jobs if parents}
    if not graph:
        return
    done: set[str] = set()
    for root in graph:
        if root in done:
            continue
        on_path: dict[str, int] = {}
        path: list[str] = []
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(graph[root]))]
        on_path[root] = 0
        path.append(root)
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                path.pop()
                del on_path[node]
                done.add(node)
                continue
            if nxt in on_path:
                cyc = [*path[on_path[nxt]:], nxt]
                raise Invalid(f'jobs.balsam.io "{cyc[0]}" is invalid: spec.parents: Invalid value: a dependency '
                              f"cycle: {cycle_text(cyc)} (a job cannot wait for itself)")
            if nxt in done or nxt not in graph:
                continue
            on_path[nxt] = len(path)
            path.append(nxt)
            stack.append((nxt, iter(graph[nxt])))


def admit_creates(_registry: object, creates: Sequence[object], _pairs: object) -> None:
    """The admission check ``Registry.write`` runs: no cycle among the jobs one write creates."""

    by_ns: dict[str, list[tuple[str, Sequence[str]]]] = {}
    for o in creates:
        if isinstance(o, Job) and o.spec.parents:
            by_ns.setdefault(o.metadata.namespace, []).append((o.name, o.spec.parents))
    for group in by_ns.values():
        check_batch_acyclic(group)


if admit_creates not in ADMISSION_CHECKS:
    ADMISSION_CHECKS.append(admit_creates)
