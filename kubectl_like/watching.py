"""List, then watch: what ``get -w``, ``wait`` and ``logs -f`` follow the store with.

:class:`ListWatch` reads the objects a command is about (``read``) and opens a store watch
from the revision taken just before that read, so no change falls in a gap between the two.
Events the read already reflects (a revision at or below the listed object's
``resourceVersion``) are dropped, so a stream never goes back in time. Nothing here polls
the store: ``next(timeout)`` blocks on the watch, which the store wakes.

When the store compacts the revisions a watch still needed (``Compacted``), the watcher
reads again and reports what changed as MODIFIED/ADDED events (kubectl's reflector
relists the same way); objects that vanished meanwhile are reported as DELETED only when
they no longer exist.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import store as st
from apis import ObjectMeta, Registry, Resource, StoreUnavailable, TypedWatch, WatchEvent
from apis._registry import kind_prefix, object_key

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
    ``namespace``/``name``, so a caller sees objects that start or stop matching."""

    def __init__(self, registry: Registry, kind: type[R], namespace: str | None,
                 read: Callable[[], Sequence[R]], name: str | None = None) -> None:
        self.registry = registry
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self._read = read
        self._seen: dict[Key, int] = {}  # resourceVersion of the newest state reported per object
        self._watch: TypedWatch[R] | None = None

    # --- life cycle -----------------------------------------------------------------

    def start(self) -> list[R]:
        """Read the objects and start the watch from just before the read."""
        objs, _ = self._relist()
        for o in objs:
            self._seen[key_of(o)] = revision_of(o)
        return objs

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    def __enter__(self) -> ListWatch[R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _prefix(self) -> str:
        if self.name is not None and self.namespace is not None:
            return object_key(self.kind, self.namespace, self.name)
        return kind_prefix(self.kind, self.namespace)

    def _relist(self) -> tuple[list[R], int]:
        self.close()
        store = self.registry.store
        try:
            revision = store.current_revision()
        except st.Unavailable as e:
            raise StoreUnavailable(str(e)) from None
        objs = list(self._read())
        self._watch = TypedWatch(self.kind, store.watch(self._prefix(), revision + 1))
        return objs, revision

    # --- events ---------------------------------------------------------------------

    def next(self, timeout: float | None) -> list[WatchEvent[R]]:
        """The events that arrive within ``timeout`` seconds (possibly none), in revision
        order, without those the read already showed. Raises ``store.WatchClosed`` once
        the watch is closed."""
        assert self._watch is not None, "start() first"
        try:
            raw = self._watch.raw.poll(timeout)
        except st.Compacted:
            return self._catch_up_after_compaction()
        out: list[WatchEvent[R]] = []
        for ev in raw:
            if self.name is not None and not ev.kv.key.endswith("/" + self.name):
                continue  # the exact-key prefix also matches longer names
            wev = self._watch.decode(ev)
            k = key_of(wev.object)
            if self._seen.get(k, 0) >= wev.revision:
                continue  # already shown by the read
            if wev.type == "DELETED":
                self._seen.pop(k, None)
            else:
                self._seen[k] = wev.revision
            out.append(wev)
        return out

    def _catch_up_after_compaction(self) -> list[WatchEvent[R]]:
        before = dict(self._seen)
        objs, revision = self._relist()
        out: list[WatchEvent[R]] = []
        present: set[Key] = set()
        for o in objs:
            k = key_of(o)
            present.add(k)
            rv = revision_of(o)
            if before.get(k) != rv:
                out.append(WatchEvent("MODIFIED" if k in before else "ADDED", o, rv))
            self._seen[k] = rv
        gone = [k for k in before if k not in present]
        for ns, name in gone:
            cur = self.registry.try_get(self.kind, name, ns)
            if cur is None:
                self._seen.pop((ns, name), None)
                stub = self.kind.model_construct(metadata=ObjectMeta(name=name, namespace=ns))
                out.append(WatchEvent("DELETED", stub, revision))
            elif revision_of(cur) != before[(ns, name)]:
                self._seen[(ns, name)] = revision_of(cur)
                out.append(WatchEvent("MODIFIED", cur, revision_of(cur)))
        return out


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
