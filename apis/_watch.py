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

A resumed watch reports an object deleted after ``N`` that matched the query as ``DELETED``
even though it never showed it: the store's previous value of the deleted key (etcd's
``prev_kv``; the SQLite backend's watch keeps it too) is matched against the query. (After a
compaction the previous values are gone: the relist reports only what still exists.)

Only events of the names a query can match are decoded (a name filter is checked on the key).
The following is the shared list-watch of ``store.reflector`` (issue 13's Reflector), as is the
futures' shared watcher (``apis._futures.JobWatcher``: key-only, listing nothing, re-reading its
waited-for jobs on each relist).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from store.reflector import Reflector

from ._meta import ObjectMeta
from ._registry import Registry, WatchEvent, kind_prefix

if TYPE_CHECKING:
    from ._meta import Resource

R = TypeVar("R", bound="Resource")

EventType = Literal["ADDED", "MODIFIED", "DELETED"]


class _EitherStop(threading.Event):
    """Set by the stream's timeout, or by the caller's ``stop``."""

    def __init__(self, other: threading.Event | None) -> None:
        super().__init__()
        self.other = other

    def is_set(self) -> bool:
        return super().is_set() or (self.other is not None and self.other.is_set())


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
    """The generator behind ``QuerySet.watch`` (see the module docstring), on the shared
    list-watch of ``store.reflector``: the query lists what it matches itself (from the
    indexes), then the Reflector follows the kind's prefix from the revision taken before that
    list, skipping writes the list already showed and relisting after a compaction or a broken
    stream. ``names``: the only names the query can match (None: any). ``timeout``: the stream
    ends after that many seconds (None: never); ``stop``: it ends once the event is set."""
    prefix = kind_prefix(kind, namespace)
    plen = len(prefix)
    matching: dict[str, int] = {}  # name -> revision of what the stream last showed of it
    known: dict[str, int] = {}  # the Reflector's view: key -> revision
    resuming = resource_version is not None
    if resource_version is None:
        rev = registry.store.current_revision()  # before the list: later writes are replayed
        for o in list_matching():
            r = int(o.metadata.resource_version or 0)
            matching[o.name] = known[prefix + o.name] = r
            if on_bind is not None:
                on_bind(o)
            yield WatchEvent("ADDED", o, r)
    else:
        rev = int(resource_version)
    either = _EitherStop(stop)
    timer = None
    if timeout is not None:
        timer = threading.Timer(max(0.0, timeout), either.set)
        timer.daemon = True
        timer.start()
    refl: Reflector[R] = Reflector(
        registry.store, prefix, decode_kv=lambda kv: Registry.decode(kind, kv),
        key_filter=None if names is None else (lambda key: key[plen:] in names), poll_interval=0.5,
        unseen_deletes=resuming)
    try:
        for d in refl.events(resource_version=rev, stop=either, known=known):
            if d.type == "SYNC":
                continue
            name = d.key[plen:]
            if d.type == "DELETED":
                obj = d.obj if d.obj is not None else kind.model_construct(
                    metadata=ObjectMeta(name=name, namespace=namespace))
                ev: WatchEvent[R] = WatchEvent("DELETED", obj, d.revision)
            else:
                assert d.obj is not None
                created = d.kv is not None and d.kv.version == 1
                ev = WatchEvent("ADDED" if created else "MODIFIED", d.obj, d.revision)
            out = _step(ev, matching, matches, resuming)
            if out is not None:
                if on_bind is not None and out.type != "DELETED":
                    on_bind(out.object)
                yield out
    finally:
        refl.close()
        if timer is not None:
            timer.cancel()


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
