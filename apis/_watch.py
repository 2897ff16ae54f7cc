"""Typed watches: a query followed as a stream of ADDED / MODIFIED / DELETED events.

    for ev in Job.objects.filter(tags={"run": "7"}).watch():
        print(ev.type, ev.object.name, ev.object.state, ev.revision)

``watch()`` first lists the matching objects (each an ``ADDED`` event), then follows the
store from the revision the list was taken at. ``watch(resource_version=N)`` resumes after
revision ``N`` (an event's ``revision``), listing nothing. As with a label-selector watch in
Kubernetes, an object that stops matching the query is ``DELETED`` from the stream and one that
starts matching is ``ADDED``. When the store has compacted the history a watch needs, it
relists and reports the difference (what vanished as ``DELETED``, what changed as
``MODIFIED``, what appeared as ``ADDED``), so a consumer never misses the latest state.

Only events of the names a query can match are decoded (a name filter is checked on the key).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import store as st

from ._meta import ObjectMeta
from ._registry import Registry, WatchEvent, kind_prefix

if TYPE_CHECKING:
    from ._meta import Resource

R = TypeVar("R", bound="Resource")

EventType = Literal["ADDED", "MODIFIED", "DELETED"]


class KindWatch(Generic[R]):
    """One store watch on a kind's objects in a namespace, decoded into :class:`WatchEvent`
    (``ADDED`` for a first write, ``MODIFIED``, ``DELETED``), for the names ``wants`` accepts.
    Raises ``store.Compacted`` when the history it needs is gone (callers relist)."""

    def __init__(self, registry: Registry, kind: type[R], namespace: str, start_revision: int | None,
                 wants: Callable[[str], bool] | None = None) -> None:
        self.registry = registry
        self.kind = kind
        self.prefix = kind_prefix(kind, namespace)
        self.wants = wants
        self.raw = registry.store.watch(self.prefix, start_revision)

    def poll(self, timeout: float | None) -> list[WatchEvent[R]]:
        out: list[WatchEvent[R]] = []
        plen = len(self.prefix)
        wants = self.wants
        for e in self.raw.poll(timeout):
            if wants is not None and not wants(e.kv.key[plen:]):
                continue
            out.append(self.decode(e))
        return out

    def decode(self, e: st.Event) -> WatchEvent[R]:
        if e.type == "DELETE":
            prev = e.prev
            if prev is not None and prev.value:
                obj = Registry.decode(self.kind, prev)
            else:
                obj = self.kind.model_construct(metadata=ObjectMeta(
                    name=e.kv.key[len(self.prefix):], namespace=self.prefix.rstrip("/").rsplit("/", 1)[1]))
            obj.metadata.resource_version = str(e.revision)
            return WatchEvent("DELETED", obj, e.revision)
        obj = Registry.decode(self.kind, e.kv)
        return WatchEvent("ADDED" if e.kv.version == 1 else "MODIFIED", obj, e.revision)

    def close(self) -> None:
        self.raw.close()


def _current_revision(registry: Registry, prefix: str) -> int:
    return registry.store.current_revision()


def watch_query(
    registry: Registry,
    kind: type[R],
    namespace: str,
    matches: Callable[[Any], bool],
    list_matching: Callable[[], list[R]],
    *,
    names: set[str] | None = None,
    resource_version: int | None = None,
    timeout: float | None = None,
    stop: threading.Event | None = None,
    on_bind: Callable[[R], Any] | None = None,
) -> Iterator[WatchEvent[R]]:
    """The generator behind ``QuerySet.watch`` (see the module docstring). ``names``: the only
    names the query can match (None: any). ``timeout``: the stream ends after that many seconds
    (None: never); ``stop``: it ends once the event is set."""
    deadline = None if timeout is None else time.monotonic() + timeout
    prefix = kind_prefix(kind, namespace)
    wants = None if names is None else names.__contains__
    matching: dict[str, int] = {}  # name -> revision of the last event or listing yielded for it
    resuming = resource_version is not None

    def relist() -> tuple[int, list[R]]:
        rev = _current_revision(registry, prefix)  # before the list: later writes are replayed
        return rev, list_matching()

    if resource_version is None:
        rev, objs = relist()
        for o in objs:
            matching[o.name] = int(o.metadata.resource_version or 0)
            if on_bind is not None:
                on_bind(o)
            yield WatchEvent("ADDED", o, int(o.metadata.resource_version or 0))
        start = rev + 1
    else:
        start = int(resource_version) + 1

    w: KindWatch[R] | None = None
    try:
        while True:
            if stop is not None and stop.is_set():
                return
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            try:
                if w is None:
                    w = KindWatch(registry, kind, namespace, start, wants)
                events = w.poll(0.5 if left is None else min(0.5, left))
            except st.Compacted:
                if w is not None:
                    w.close()
                    w = None
                rev, objs = relist()
                yield from _resync(kind, namespace, objs, matching, on_bind)
                start, resuming = rev + 1, False
                continue
            for ev in events:
                start = ev.revision + 1
                out = _step(ev, matching, matches, resuming)
                if out is not None:
                    if on_bind is not None and out.type != "DELETED":
                        on_bind(out.object)
                    yield out
    finally:
        if w is not None:
            w.close()


def _matches(matches: Callable[[Any], bool], obj: Any) -> bool:
    try:
        return matches(obj)
    except AttributeError:  # a deleted object known by its name only
        return False


def _step(ev: WatchEvent[R], matching: dict[str, int], matches: Callable[[Any], bool],
          resuming: bool) -> WatchEvent[R] | None:
    """The event the query's stream shows for one store event (None: nothing to show).
    ``resuming``: the stream started from a revision, without a listing, so an object not
    seen yet may have matched before (a ``MODIFIED`` write, a deletion of a matching object)."""
    name = ev.object.name
    known = name in matching
    if ev.type == "DELETED":
        if known or (resuming and _matches(matches, ev.object)):
            matching.pop(name, None)
            return ev
        return None
    if known and matching[name] >= ev.revision:
        return None  # the listing showed this write already
    if _matches(matches, ev.object):
        typ: EventType = "MODIFIED" if known or (resuming and ev.type == "MODIFIED") else "ADDED"
        matching[name] = ev.revision
        return WatchEvent(typ, ev.object, ev.revision)
    if known:  # it left the query
        del matching[name]
        return WatchEvent("DELETED", ev.object, ev.revision)
    return None


def _resync(kind: type[Any], namespace: str, objs: list[Any], matching: dict[str, int],
            on_bind: Callable[[Any], Any] | None) -> Iterator[WatchEvent[Any]]:
    """After a compaction: the difference between what the stream showed and the store now."""
    now = {o.name: o for o in objs}
    for name in [n for n in matching if n not in now]:
        rv = matching.pop(name)
        ghost = kind.model_construct(metadata=ObjectMeta(name=name, namespace=namespace))
        yield WatchEvent("DELETED", ghost, rv)
    for name, o in now.items():
        rv = int(o.metadata.resource_version or 0)
        if on_bind is not None:
            on_bind(o)
        if name not in matching:
            matching[name] = rv
            yield WatchEvent("ADDED", o, rv)
        elif matching[name] < rv:
            matching[name] = rv
            yield WatchEvent("MODIFIED", o, rv)
