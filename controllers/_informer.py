"""A shared informer: list, then watch from the list's revision, into an indexed cache.

One informer per kind per process; every controller of the process reads the same cache
and registers handlers that map changes to work-queue keys. When the watch reports that
its revision was compacted, the informer relists and emits the difference as events, so
handlers never miss a change.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, Literal, TypeVar

import store as st
from apis import Registry, Resource, StoreUnavailable

from ._backoff import Backoff

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Resource)

EventType = Literal["ADDED", "MODIFIED", "DELETED"]
Handler = Callable[[EventType, "Resource | None", "Resource | None"], None]
Indexer = Callable[[R], Iterable[str]]


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """CPython's cyclic GC off while a (re)list decodes and indexes every object: each object is
    dozens of containers that all survive, so collections triggered on the way walk the whole
    growing cache and find nothing; over 10^5 jobs they were over half of the start-up time."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Informer(Generic[R]):
    def __init__(
        self,
        registry: Registry,
        kind: type[R],
        namespace: str = "default",
        indexers: dict[str, Indexer[R]] | None = None,
    ) -> None:
        self.registry = registry
        self.kind = kind
        self.namespace = namespace
        self._indexers: dict[str, Indexer[R]] = dict(indexers or {})
        self._items: dict[str, R] = {}
        self._rv: dict[str, int] = {}
        self._index: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        self._keys: dict[str, dict[str, tuple[str, ...]]] = defaultdict(dict)  # index -> name -> values
        self._handlers: list[Handler] = []
        self._lock = threading.RLock()
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: st.Watch | None = None
        self.revision = 0
        self.relists = 0

    # --- configuration -----------------------------------------------------------

    def add_indexer(self, name: str, fn: Indexer[R]) -> None:
        with self._lock:
            self._indexers[name] = fn
            for obj_name, obj in self._items.items():
                self._index_add(name, fn, obj_name, obj)

    def add_handler(self, fn: Handler) -> None:
        with self._lock:
            self._handlers.append(fn)
            for obj in list(self._items.values()):
                fn("ADDED", None, obj)

    # --- reads -------------------------------------------------------------------

    def get(self, name: str) -> R | None:
        return self._items.get(name)

    def items(self) -> list[R]:
        with self._lock:
            return list(self._items.values())

    def names(self) -> list[str]:
        with self._lock:
            return list(self._items)

    def by_index(self, index: str, value: str) -> list[R]:
        with self._lock:
            names = self._index[index].get(value, ())
            return [self._items[n] for n in names if n in self._items]

    def index_values(self, index: str) -> list[str]:
        with self._lock:
            return [v for v, names in self._index[index].items() if names]

    def __len__(self) -> int:
        return len(self._items)

    # --- cache maintenance -------------------------------------------------------

    def _index_add(self, index: str, fn: Indexer[R], name: str, obj: R) -> None:
        values = tuple(fn(obj))
        self._keys[index][name] = values
        for v in values:
            self._index[index][v].add(name)

    def _index_remove(self, index: str, name: str) -> None:
        for v in self._keys[index].pop(name, ()):
            s = self._index[index].get(v)
            if s is not None:
                s.discard(name)
                if not s:
                    del self._index[index][v]

    def _store_locked(self, name: str, obj: R | None, rv: int) -> tuple[EventType, R | None] | None:
        """Put ``obj`` (None: delete) in the cache if ``rv`` is newer; returns the event."""
        cur_rv = self._rv.get(name, 0)
        if rv and rv < cur_rv:
            return None
        old = self._items.get(name)
        for index in self._indexers:
            self._index_remove(index, name)
        if obj is None:
            if old is None:
                return None
            del self._items[name]
            self._rv[name] = rv
            return "DELETED", old
        self._items[name] = obj
        self._rv[name] = rv
        for index, fn in self._indexers.items():
            self._index_add(index, fn, name, obj)
        return ("ADDED" if old is None else "MODIFIED"), old

    def _emit(self, typ: EventType, old: R | None, new: R | None) -> None:
        for h in self._handlers:
            try:
                h(typ, old, new)
            except Exception:  # a broken handler must not stop the informer
                log.exception("informer handler failed for %s", self.kind.KIND)

    def apply_local(self, obj: R) -> None:
        """Write-through after our own successful write (the watch event that follows is
        then a no-op), so the next reconcile already sees it."""
        rv = int(obj.metadata.resource_version or 0)
        with self._lock:
            res = self._store_locked(obj.name, obj, rv)
        if res is not None:
            self._emit(res[0], res[1], obj)

    def remove_local(self, name: str, rv: int) -> None:
        with self._lock:
            res = self._store_locked(name, None, rv)
        if res is not None:
            self._emit("DELETED", res[1], None)

    # --- list + watch loop -------------------------------------------------------

    def _relist(self) -> int:
        with _gc_paused():
            return self._relist_paused()

    def _relist_paused(self) -> int:
        objs, revision = self.registry.list(self.kind, self.namespace)
        fresh = {o.name: o for o in objs}
        events: list[tuple[EventType, R | None, R | None]] = []
        with self._lock:
            for name in list(self._items):
                if name not in fresh:
                    res = self._store_locked(name, None, revision)
                    if res is not None:
                        events.append(("DELETED", res[1], None))
            for name, obj in fresh.items():
                old = self._items.get(name)
                if old is not None and old.metadata.resource_version == obj.metadata.resource_version:
                    continue
                res = self._store_locked(name, obj, int(obj.metadata.resource_version or 0))
                if res is not None:
                    events.append((res[0], res[1], obj))
            self.revision = revision
        for e in events:
            self._emit(*e)
        return revision

    def start(self) -> None:
        if self._thread is not None:
            return
        revision = self._relist()
        self._watch = self.registry.store.watch(
            f"/registry/{self.kind.PLURAL}/{self.namespace}/", revision + 1
        )
        self._synced.set()
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.kind.PLURAL}", daemon=True)
        self._thread.start()

    def wait_synced(self, timeout: float | None = None) -> bool:
        return self._synced.wait(timeout)

    def _run(self) -> None:
        prefix_len = len(f"/registry/{self.kind.PLURAL}/{self.namespace}/")
        backoff = Backoff(f"{self.kind.PLURAL} informer")
        while not self._stop.is_set():
            watch = self._watch
            if watch is None:  # the last relist failed: the store is away
                error = self._rewatch()
                if error is None:
                    backoff.ok()
                elif not self._stop.is_set():
                    backoff.failed(error, self._stop)
                continue
            try:
                events = watch.poll(0.5)
            except st.Compacted:
                log.warning("%s watch compacted; relisting", self.kind.PLURAL)
                self.relists += 1
                self._drop_watch()
                continue
            except (st.StoreError, StoreUnavailable) as e:
                if self._stop.is_set():
                    return
                if backoff.failing_since is None:
                    log.info("%s watch ended (%s); relisting", self.kind.PLURAL, e)
                self._drop_watch()
                continue
            for ev in events:
                name = ev.kv.key[prefix_len:]
                self.revision = max(self.revision, ev.revision)
                try:
                    if ev.type == "DELETE":
                        with self._lock:
                            res = self._store_locked(name, None, ev.revision)
                        if res is not None:
                            self._emit("DELETED", res[1], None)
                    else:
                        if self._rv.get(name, 0) >= ev.kv.mod_revision:
                            continue  # our own write, already in the cache (apply_local): skip decoding
                        obj = self.registry.decode(self.kind, ev.kv)
                        with self._lock:
                            res = self._store_locked(name, obj, ev.kv.mod_revision)
                        if res is not None:
                            self._emit(res[0], res[1], obj)
                except Exception:
                    log.exception("cannot apply %s event for %s", ev.type, ev.kv.key)

    def _drop_watch(self) -> None:
        if self._watch is not None:
            with contextlib.suppress(st.StoreError):
                self._watch.close()
            self._watch = None

    def _rewatch(self) -> BaseException | None:
        """Relist and watch from the list's revision; returns the store's error instead of
        raising it (the caller backs off: the cache keeps serving its last state)."""
        try:
            revision = self._relist()
            self._watch = self.registry.store.watch(
                f"/registry/{self.kind.PLURAL}/{self.namespace}/", revision + 1
            )
            return None
        except (st.StoreError, StoreUnavailable) as e:
            return e

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
