"""List, then watch: what ``get -w``, ``wait`` and ``logs -f`` follow the store with.

:class:`ListWatch` reads the objects a command is about (``read``) and opens a store watch
from the revision taken just before that read, so no change falls in a gap between the two.
Events the read already reflects (a revision at or below the listed object's
``resourceVersion``) are dropped, so a stream never goes back in time. Nothing here polls
the store: ``next(timeout)`` blocks on the watch, which the store wakes.

The watch is the store's one list-watch, :class:`store.reflector.Reflector`, resumed at
that revision with the read's objects as its known state: when the store compacts the
revisions it still needed (``Compacted``) or the stream breaks, it relists and reports what
changed as ADDED/MODIFIED/DELETED (kubectl's reflector relists the same way).
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

import store as st
from apis import ObjectMeta, Registry, Resource, StoreUnavailable, WatchEvent
from apis._registry import kind_prefix, object_key
from store.reflector import Delta, Reflector

from ._errors import CLIError

R = TypeVar("R", bound=Resource)

Key = tuple[str, str]  # (namespace, name)

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")


def parse_duration(text: str, flag: str = "--timeout") -> float:
    """kubectl's durations (``30s``, ``5m``, ``1h30m``, ``500ms``; a bare number is seconds)
    → seconds. Negative values are allowed (``-1s``: no limit)."""
    s = text.strip()
    sign = -1.0 if s.startswith("-") else 1.0
    body = s.lstrip("+-")
    try:
        return sign * float(body)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(body):
        if m.start() != pos:
            break
        n, unit = float(m.group(1)), m.group(2)
        total += n * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]
        pos = m.end()
    if not body or pos != len(body):
        raise CLIError(f'invalid argument "{text}" for "{flag}" flag: expected a duration like 30s, 5m or 1h')
    return sign * total


def key_of(obj: Resource) -> Key:
    return obj.namespace, obj.name


def revision_of(obj: Resource) -> int:
    try:
        return int(obj.metadata.resource_version or 0)
    except ValueError:
        return 0


class ListWatch(Generic[R]):
    """The objects ``read`` returns, then every later event of ``kind`` in ``namespace``
    (``None``: all namespaces), optionally of one object (``name``).

    ``read`` may filter (by selector, by name): the watch itself is not filtered beyond
    ``namespace``/``name``, so a caller sees objects that start or stop matching. The watch
    is a :class:`store.reflector.Reflector` resumed at the revision taken before the read,
    on a thread of its own; ``next`` takes what it handed out."""

    def __init__(self, registry: Registry, kind: type[R], namespace: str | None,
                 read: Callable[[], Sequence[R]], name: str | None = None) -> None:
        self.registry = registry
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self._read = read
        self._reflector: Reflector[R] | None = None
        self._queue: queue.Queue[Delta[R] | BaseException] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    # --- life cycle -----------------------------------------------------------------

    def start(self) -> list[R]:
        """Read the objects and start the watch from just before the read."""
        store = self.registry.store
        try:
            revision = store.current_revision()
        except st.Unavailable as e:
            raise StoreUnavailable(str(e)) from None
        objs = list(self._read())
        exact = object_key(self.kind, self.namespace, self.name) \
            if self.name is not None and self.namespace is not None else None
        self._reflector = Reflector(
            store, self._prefix(), decode_kv=self._decode, on_unavailable=self._queue.put,
            key_filter=None if exact is None else exact.__eq__,
        )
        known = {object_key(self.kind, o.namespace, o.name): revision_of(o) for o in objs}
        stream = self._reflector.events(resource_version=revision, stop=self._stop, known=known)
        self._thread = threading.Thread(target=self._pump, args=(stream,), name="list-watch", daemon=True)
        self._thread.start()
        return objs

    def _decode(self, kv: st.KeyValue) -> R:
        return self.registry.decode(self.kind, kv)

    def _pump(self, stream: Iterator[Delta[R]]) -> None:
        try:
            for d in stream:
                self._queue.put(d)
        except BaseException as e:  # handed to the reader
            self._queue.put(e)

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        if self._reflector is not None:
            self._reflector.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ListWatch[R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _prefix(self) -> str:
        if self.name is not None and self.namespace is not None:
            return object_key(self.kind, self.namespace, self.name)
        return kind_prefix(self.kind, self.namespace)

    # --- events ---------------------------------------------------------------------

    def next(self, timeout: float | None) -> list[WatchEvent[R]]:
        """The events that arrive within ``timeout`` seconds (possibly none), in revision
        order, without those the read already showed. Raises ``store.WatchClosed`` once
        the watch is closed, StoreUnavailable when the store went away (the reflector
        keeps trying meanwhile)."""
        if self._closed:
            raise st.WatchClosed("the watch is closed")
        assert self._reflector is not None, "start() first"
        try:
            items = [self._queue.get(timeout=timeout)] if timeout is None or timeout > 0 else []
        except queue.Empty:
            return []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        out: list[WatchEvent[R]] = []
        for d in items:
            if isinstance(d, st.Unavailable):
                raise StoreUnavailable(str(d))
            if isinstance(d, BaseException):
                raise d
            ev = self._event(d)
            if ev is not None:
                out.append(ev)
        return out

    def _event(self, d: Delta[R]) -> WatchEvent[R] | None:
        if d.type == "SYNC":
            return None
        if d.type == "DELETED":
            obj = d.obj
            if obj is None:
                ns, name = d.key.rsplit("/", 2)[-2:]
                obj = self.kind.model_construct(metadata=ObjectMeta(name=name, namespace=ns))
            obj.metadata.resource_version = str(d.revision)
            return WatchEvent("DELETED", obj, d.revision)
        assert d.obj is not None
        return WatchEvent(d.type, d.obj, d.revision)


class Deadline:
    """Seconds left before a timeout (``None``: no limit)."""

    def __init__(self, seconds: float | None) -> None:
        self.end = None if seconds is None or seconds < 0 else time.monotonic() + seconds

    def left(self, cap: float | None = None) -> float | None:
        if self.end is None:
            return cap
        left = max(0.0, self.end - time.monotonic())
        return left if cap is None else min(left, cap)

    @property
    def passed(self) -> bool:
        return self.end is not None and time.monotonic() >= self.end
