"""A shared informer: list, then watch from the list's revision, into an indexed cache.

One informer per kind per process; every controller of the process reads the same cache
and registers handlers that map changes to work-queue keys. When the watch reports that
its revision was compacted, the informer relists and emits the difference as events, so
handlers never miss a change.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, Literal, TypeVar

import store as st
from apis import Registry, Resource, StoreUnavailable
from store.reflector import Delta, Reflector

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Resource)

EventType = Literal["ADDED", "MODIFIED", "DELETED"]
Handler = Callable[[EventType, "Resource | None", "Resource | None"], None]
Indexer = Callable[[R], Iterable[str]]


class Informer(Generic[R]):
    def __init__(
        self,
        registry: Registry,
        kind: type[R],
        namespace: str = "default",
        indexers: dict[str, Indexer[R]] | None = None,
        *,
        evict: Callable[[R], bool] | None = None,
        peek_evict: Callable[[bytes], bool] | None = None,
    ) -> None:
        """``evict(obj)``: an object for which it is true leaves the cache once its event has
        been handed to the handlers (the store keeps it; ``get`` then answers None).
        ``peek_evict(value)``: the same question asked of the stored bytes during the first
        list, so such objects are never decoded at start-up."""
        self.registry = registry
        self._evict = evict
        self._peek_evict = peek_evict
        #: names evicted recently -> their revision: our own write that evicted a job is not
        #: decoded again when its watch event arrives (bounded; older ones are just decoded)
        self._recent: OrderedDict[str, int] = OrderedDict()
        #: name -> (revision, object): our own writes not applied to the cache (``expect``),
        #: handed out when their watch event arrives instead of decoding the stored bytes
        self._expected: dict[str, tuple[int, R]] = {}
        #: name -> how many of our writes of it are in flight (``hold``): its watch events wait,
        #: undecoded, in ``_parked`` until ``release`` (then most are our own, announced by
        #: ``expect``/``apply_local``, and never decoded)
        self._held: dict[str, int] = {}
        self._parked: dict[str, list[Delta[R | None]]] = {}
        #: id -> value that _decode left undecoded because its name was held (the value itself is
        #: kept, so its id is not reused before _apply takes it)
        self._undecoded: dict[int, st.KeyValue] = {}
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
        self._reflector: Reflector[R | None] | None = None
        self._prefix_len = len(f"/registry/{kind.PLURAL}/{namespace}/")
        self._starting = False
        self._failing_since: float | None = None
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

    def indexed(self, index: str, value: str) -> bool:
        """Whether any cached object has ``value`` in ``index`` (no lock, no list: one dict
        read, atomic under the GIL; what a handler asks on every event before it looks)."""
        by_value = self._index.get(index)
        return bool(by_value and by_value.get(value))

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

    def _reindex(self, name: str, obj: R) -> None:
        """Index ``obj`` under ``name``, touching only the indexes whose values moved: most
        events of a job change one index at most (a bind moves ``node``, not ``state`` or
        ``children``), and a value set left empty and made again costs two dict writes."""
        for index, fn in self._indexers.items():
            values = tuple(fn(obj))
            if self._keys[index].get(name) == values:
                continue
            self._index_remove(index, name)
            self._keys[index][name] = values
            by_value = self._index[index]
            for v in values:
                by_value[v].add(name)

    def _unindex(self, name: str) -> None:
        for index in self._indexers:
            self._index_remove(index, name)

    def _store_locked(self, name: str, obj: R | None, rv: int) -> tuple[EventType, R | None] | None:
        """Put ``obj`` (None: delete) in the cache if ``rv`` is newer; returns the event. Newer
        than what left the cache too (``_recent``): a held write's event applied by the writer's
        thread at ``release`` may come after the watch's thread applied the job's end and evicted
        it, and must not bring the job back (issue 19: placement then held its room forever)."""
        cur_rv = self._rv.get(name, 0)
        if rv and (rv < cur_rv or rv <= self._recent.get(name, 0)):
            return None
        old = self._items.get(name)
        if obj is None:
            self._unindex(name)
            if old is None:
                return None
            del self._items[name]
            self._rv.pop(name, None)
            return "DELETED", old
        self._items[name] = obj
        self._rv[name] = rv
        self._reindex(name, obj)
        return ("ADDED" if old is None else "MODIFIED"), old

    def _leave_locked(self, name: str, obj: R, rv: int) -> tuple[EventType, R | None] | None:
        """``_store_locked`` for an object that leaves the cache with this event (``evict``):
        the old version goes at once, without indexing the new one only to take it out again
        (a trivial job's finishing event); the handlers still receive old -> new. The caller
        accounts, then calls ``_evicted``."""
        if rv and (rv < self._rv.get(name, 0) or rv <= self._recent.get(name, 0)):
            return None
        old = self._items.pop(name, None)
        self._rv.pop(name, None)
        self._unindex(name)
        self._remember_left(name, rv)
        return ("ADDED" if old is None else "MODIFIED"), old

    def _remember_left(self, name: str, rv: int) -> None:
        recent = self._recent
        recent[name] = rv
        recent.move_to_end(name)
        while len(recent) > self.RECENT_CAP:
            recent.popitem(last=False)

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
        name = obj.name
        # An object that ends here leaves the cache before the handlers run, as on the watch
        # path (``_apply``): a handler never finds an ended job still cached and indexed.
        leaves = self._evict is not None and self._evict(obj)
        with self._lock:
            if self._recent.get(name, 0) >= rv:
                return
            existed = name in self._items or name in self._recent
            res = (self._leave_locked if leaves else self._store_locked)(name, obj, rv)
            if res is not None:
                self._account(name, res[1], obj, existed)
                if leaves:
                    self._evicted(name, obj)  # (after _account: it reads what left before)
        if res is not None:
            self._emit(res[0], res[1], obj)

    def expect(self, objs: Iterable[R]) -> None:
        """Our own successful writes whose watch events are still to come, left out of the
        cache until then (placement's bindings: the event confirms them, kube-scheduler's
        shape): when an event carries exactly that revision, the object written is what the
        cache and the handlers receive, and the stored bytes are not decoded again. An entry
        whose event never comes is dropped by the next event of the same name."""
        for obj in objs:
            rv = int(obj.metadata.resource_version or 0)
            if rv:
                self._expected[obj.name] = (rv, obj)  # one dict store: atomic under the GIL

    def hold(self, names: Iterable[str]) -> None:
        """Our own writes of ``names`` are about to be made: their watch events, which may
        arrive before the writer can announce what it wrote (``expect``, ``apply_local``),
        wait undecoded until :meth:`release`. Every ``hold`` needs its ``release``."""
        with self._lock:
            held = self._held
            for n in names:
                held[n] = held.get(n, 0) + 1

    def release(self, names: Iterable[str]) -> None:
        """The writes of ``names`` are over (announced with ``expect``/``apply_local`` when
        they landed): the events parked meanwhile are handled now, in order, on this thread;
        one that is our announced write is not decoded, one of another writer is."""
        todo: list[Delta[R | None]] = []
        with self._lock:
            held = self._held
            for n in names:
                left = held.get(n, 0) - 1
                if left > 0:
                    held[n] = left
                    continue
                held.pop(n, None)
                todo.extend(self._parked.pop(n, ()))
        for d in todo:
            self._apply_parked(d)

    def _apply_parked(self, d: Delta[R | None]) -> None:
        if d.type != "DELETED" and d.kv is not None:
            d = Delta(d.type, d.key, self._decode(d.kv), d.revision, d.kv)
        self._apply(d)

    def _park(self, d: Delta[R | None], name: str) -> bool:
        """Keep ``d`` for ``release`` if a write of ``name`` is still held (True)."""
        with self._lock:
            if name in self._held:
                self._parked.setdefault(name, []).append(d)
                return True
        return False

    def remove_local(self, name: str, rv: int) -> None:
        with self._lock:
            res = self._store_locked(name, None, rv)
            if res is not None:
                self._account(name, res[1], None, True)
        if res is not None:
            self._emit("DELETED", res[1], None)

    # --- eviction and accounting (the Job informer overrides _account) ---------------

    RECENT_CAP = 65536

    def _evicted(self, name: str, obj: R) -> None:
        """Called (under the lock) when ``obj`` left the cache."""

    def _account(self, name: str, old: R | None, new: R | None, existed: bool) -> None:
        """Called (under the lock) for every change: ``old`` is the cached object (None when
        it was not cached), ``existed`` whether the store held the object before."""

    def _evicted_deleted(self, name: str, prev: st.KeyValue | None) -> None:
        """Called (under the lock) when an object that had left the cache is deleted;
        ``prev`` is its last stored value (None when a relist found it gone)."""

    def is_evicted(self, name: str) -> bool:
        """True when ``name`` exists in the store but left the cache (``evict``)."""
        if name in self._items:
            return False
        r = self._reflector
        return r is not None and f"/registry/{self.kind.PLURAL}/{self.namespace}/{name}" in r.known

    # --- list + watch loop (store.reflector) --------------------------------------

    def _decode(self, kv: st.KeyValue) -> R | None:
        """The object, or None when the cache already holds this revision (our own write,
        applied by ``apply_local``): the reflector then hands out no decoded copy."""
        name = kv.key[self._prefix_len:]
        rev = kv.mod_revision
        if self._rv.get(name, 0) >= rev or self._recent.get(name, 0) >= rev:
            return None
        if self._held and name in self._held:
            self._undecoded[id(kv)] = kv  # decoded (if at all) when released: see _apply
            return None
        if self._expected:
            exp = self._expected.pop(name, None)
            if exp is not None:
                if exp[0] == rev:
                    return exp[1]
                if exp[0] > rev:  # an older event of it: the write is still to come
                    self._expected[name] = exp
        if self._starting and self._peek_evict is not None and self._peek_evict(kv.value):
            self._peeked(kv)
            return None
        if not self._starting:
            fast = self._decode_fast(name, kv)
            if fast is not None:
                return fast
        return self.registry.decode(self.kind, kv)

    def _decode_fast(self, name: str, kv: st.KeyValue) -> R | None:
        """A cheaper equivalent of decoding ``kv`` for what the handlers read, or None (the
        Job informer answers for a job's last event before it leaves the cache)."""
        return None

    def _peeked(self, kv: st.KeyValue) -> None:
        """An object ``peek_evict`` kept out of the cache at start-up (the Job informer counts it)."""

    def _unavailable(self, error: Exception) -> None:
        if self._starting:  # the first list: the caller (the manager) decides what to do
            raise StoreUnavailable(str(error))
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.warning("%s informer: store unavailable (%s); relisting with backoff", self.kind.PLURAL, error)

    def _available(self) -> None:
        if self._failing_since is not None:
            log.warning("%s informer: store reachable again after %.1fs", self.kind.PLURAL,
                        time.monotonic() - self._failing_since)
        self._failing_since = None

    def _apply(self, d: Delta[R | None]) -> None:
        if d.type == "SYNC":
            self.revision = max(self.revision, d.revision)
            if self._reflector is not None:
                self.relists = self._reflector.relists
            return
        self.revision = max(self.revision, d.revision)
        name = d.key[self._prefix_len:]
        kv = d.kv
        if kv is not None and self._undecoded and self._undecoded.pop(id(kv), None) is kv and d.type != "DELETED":
            if not self._park(d, name):  # released meanwhile: handled as if not held
                self._apply_parked(d)
            return
        if d.type == "DELETED" and self._held and self._park(d, name):
            return  # after the held write's event, in order
        try:
            if d.type == "DELETED":
                self._expected.pop(name, None)
                with self._lock:
                    self._recent.pop(name, None)
                    res = self._store_locked(name, None, d.revision)
                    if res is not None:
                        self._account(name, res[1], None, True)
                    else:  # the reflector knew it, the cache did not: it had left the cache
                        self._evicted_deleted(name, d.kv)
                if res is not None:
                    self._emit("DELETED", res[1], None)
                return
            obj = d.obj
            if obj is None:
                return  # already in the cache (apply_local), or kept out of it (peek_evict)
            leaves = self._evict is not None and self._evict(obj)
            with self._lock:
                res = (self._leave_locked if leaves else self._store_locked)(name, obj, d.revision)
                if res is not None:
                    self._account(name, res[1], obj, d.type == "MODIFIED")
                    if leaves:
                        self._evicted(name, obj)  # (after _account: it reads what left before)
            if res is not None:
                self._emit(res[0], res[1], obj)
        except Exception:
            log.exception("cannot apply %s delta for %s", d.type, d.key)

    def start(self) -> None:
        """List (synchronously: a store that is away raises StoreUnavailable), then follow
        the watch on a thread."""
        if self._thread is not None:
            return
        prefix = f"/registry/{self.kind.PLURAL}/{self.namespace}/"
        self._prefix_len = len(prefix)
        self._reflector = Reflector(
            self.registry.store, prefix, decode_kv=self._decode,
            on_unavailable=self._unavailable, on_available=self._available,
        )
        stream = self._reflector.events(stop=self._stop)
        self._starting = True
        try:
            for d in stream:
                self._apply(d)
                if d.type == "SYNC":
                    break
        except st.StoreError as e:
            stream.close()
            raise StoreUnavailable(str(e)) from None
        except BaseException:
            stream.close()
            raise
        finally:
            self._starting = False
        self._synced.set()
        self._thread = threading.Thread(target=self._run, args=(stream,), name=f"informer-{self.kind.PLURAL}",
                                        daemon=True)
        self._thread.start()

    def wait_synced(self, timeout: float | None = None) -> bool:
        return self._synced.wait(timeout)

    def _run(self, stream: Iterator[Delta[R | None]]) -> None:
        for d in stream:
            self._apply(d)

    def stop(self) -> None:
        self._stop.set()
        if self._reflector is not None:
            self._reflector.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
