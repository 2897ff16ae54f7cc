"""The storage contract: an etcd-like key-value store with revisions.

Every backend implements :class:`Store`. The semantics are etcd's (v3), so that
code written against one backend behaves the same on the other:

* Every write (put or delete, alone or in a txn) advances the store's single,
  monotonic revision by one.  All writes of one txn share one revision.
* A key's ``mod_revision`` is the revision of its last write, ``create_revision``
  the revision that created it (since it last did not exist), ``version`` counts
  writes since creation (1 after create).
* ``expect_revision`` on put/delete is a compare-and-swap on ``mod_revision``;
  ``expect_revision=0`` means "the key must not exist".
* ``watch(prefix, start_revision)`` replays every event with revision
  ``>= start_revision`` in order, then streams new ones.  If ``start_revision``
  is at or below the compacted revision, :class:`Compacted` is raised (by
  ``watch`` itself or by the first ``next()``), carrying the compacted
  revision so that the caller can relist and watch again.
* Leases: keys put with ``lease=ID`` vanish (with a delete event) when the
  lease expires or is revoked.

Keys are ``str``; values are ``bytes``.  This module imports nothing of ours.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal


class StoreError(Exception):
    """Base class of every error raised by a store."""


class Conflict(StoreError):
    """A compare-and-swap failed: the key's mod revision was not the expected one.

    ``current`` is the key's current value (None if it does not exist).
    """

    def __init__(self, key: str, expected: int, current: KeyValue | None) -> None:
        self.key = key
        self.expected = expected
        self.current = current
        actual = current.mod_revision if current is not None else 0
        super().__init__(f"conflict on {key!r}: expected revision {expected}, found {actual}")


class Compacted(StoreError):
    """The requested revision has been compacted away; relist and watch again."""

    def __init__(self, requested: int, compact_revision: int) -> None:
        self.requested = requested
        self.compact_revision = compact_revision
        super().__init__(
            f"required revision {requested} has been compacted (compacted revision {compact_revision})"
        )


class Unavailable(StoreError):
    """The store cannot be reached (server down, file not openable, ...)."""


class Forbidden(StoreError):
    """The store's access control refused the request (etcd auth: the caller's role may not
    read or write that key). Nothing was written."""


class TooLarge(StoreError):
    """A txn exceeds the server's limits (etcd's ``--max-txn-ops`` / ``--max-request-bytes``).
    Nothing was written; the caller may split the write into smaller txns."""


class LeaseNotFound(StoreError):
    """The lease does not exist (never granted, expired or revoked)."""


class WatchClosed(StoreError):
    """The watch was closed (by the caller or because the store went away)."""


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Event:
    """One change seen by a watch. For a DELETE, ``kv.value`` is ``b""`` and
    ``kv.mod_revision`` is the revision of the delete; ``prev`` holds the value
    before the change when the backend knows it (always for DELETE)."""

    type: Literal["PUT", "DELETE"]
    kv: KeyValue
    prev: KeyValue | None = None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


@dataclass(frozen=True, slots=True)
class RangeResult:
    kvs: list[KeyValue]
    revision: int  # the store revision the range was read at
    more: bool  # True when ``limit`` cut the result short
    count: int = -1  # total keys in the range (-1 when not computed)

    @property
    def continue_key(self) -> str | None:
        """Pass as ``start_after`` to read the next page (None when no more)."""
        return self.kvs[-1].key if self.more and self.kvs else None


# --- transactions ---------------------------------------------------------------

CompareTarget = Literal["mod", "create", "version", "value"]
CompareOp = Literal["==", "!=", "<", ">"]


@dataclass(frozen=True, slots=True)
class Compare:
    """A condition of a txn. For a key that does not exist, mod/create/version are 0."""

    key: str
    target: CompareTarget
    op: CompareOp
    value: int | bytes

    @staticmethod
    def mod(key: str, op: CompareOp, value: int) -> Compare:
        return Compare(key, "mod", op, value)

    @staticmethod
    def absent(key: str) -> Compare:
        return Compare(key, "create", "==", 0)


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


@dataclass(frozen=True, slots=True)
class Get:
    key: str


Op = Put | Delete | Get


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int  # the store revision after the txn (unchanged if nothing was written)
    # One entry per op of the branch that ran: the KeyValue (or None) for Get,
    # True/False (existed) for Delete, None for Put.
    responses: list[KeyValue | bool | None] = field(default_factory=list)


def _fast_init(cls: type) -> None:
    """Give a frozen slotted dataclass the same ``__init__`` (same parameters and defaults)
    but one that stores each field through its slot's descriptor rather than
    ``object.__setattr__``, which looks the descriptor up again for every field: KeyValues and
    ops are made by the hundred thousand in a bulk write or a big read, and this halves the
    cost of making one."""
    params, body = [], []
    ns: dict[str, Any] = {}
    for i, f in enumerate(dataclasses.fields(cls)):
        if f.default_factory is not dataclasses.MISSING or not f.init:
            return  # keep the dataclass's own
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            ns[f"_d{i}"] = f.default
            params.append(f"{f.name}=_d{i}")
        ns[f"_s{i}"] = cls.__dict__[f.name].__set__
        body.append(f"    _s{i}(self, {f.name})")
    exec(f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body), ns)  # noqa: S102
    init = ns["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__  # type: ignore[misc]
    cls.__init__ = init  # type: ignore[misc]


for _cls in (KeyValue, Event, Compare, Put, Delete, Get):
    _fast_init(_cls)


class Watch(abc.ABC):
    """An iterator of :class:`Event`.  ``next()`` blocks until an event arrives;
    ``poll(timeout)`` returns the events available within ``timeout`` seconds
    (possibly none).  ``close()`` ends it; a blocked ``next()`` then raises
    ``StopIteration``.  Raises :class:`Compacted` when events were lost."""

    @abc.abstractmethod
    def poll(self, timeout: float | None = None) -> list[Event]: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def __iter__(self) -> Iterator[Event]:
        while True:
            try:
                events = self.poll(None)
            except WatchClosed:
                return
            yield from events

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Store(abc.ABC):
    """The contract both backends implement (see module docstring)."""

    url: str

    # reads
    @abc.abstractmethod
    def get(self, key: str) -> KeyValue | None: ...

    @abc.abstractmethod
    def get_many(self, keys: Sequence[str]) -> list[KeyValue | None]:
        """Values of many keys at one revision, in the order asked."""

    @abc.abstractmethod
    def range(
        self,
        prefix: str,
        limit: int = 0,
        start_after: str | None = None,
        keys_only: bool = False,
    ) -> RangeResult:
        """Keys starting with ``prefix`` in key order, after ``start_after`` if given.
        ``limit=0`` means no limit.  ``keys_only`` returns empty values."""

    @abc.abstractmethod
    def count(self, prefix: str) -> int:
        """Number of keys starting with ``prefix`` (without reading values)."""

    def intersect(self, prefixes: Sequence[str]) -> list[str]:
        """The suffixes ``s`` such that ``p + s`` is a key for every ``p`` in ``prefixes``, in
        key order: what a query ANDing several index entries wants, without reading every
        entry of each. This default reads the keys under each prefix, the smallest first, and
        stops as soon as nothing is left; a backend may answer it in one statement."""
        if not prefixes:
            return []
        sized = sorted((self.count(p), p) for p in dict.fromkeys(prefixes))
        if sized[0][0] == 0:
            return []
        result: list[str] | None = None
        for _, p in sized:
            keys = self._keys_under(p)
            if result is None:
                result = keys
            else:
                have = set(keys)
                result = [s for s in result if s in have]
            if not result:
                return []
        return result or []

    def _keys_under(self, prefix: str, page: int = 20000) -> list[str]:
        """Every key under ``prefix``, without it, paged."""
        out: list[str] = []
        after: str | None = None
        n = len(prefix)
        while True:
            res = self.range(prefix, limit=page, start_after=after, keys_only=True)
            out.extend(kv.key[n:] for kv in res.kvs)
            if not res.more:
                return out
            after = res.continue_key

    @abc.abstractmethod
    def current_revision(self) -> int: ...

    # writes
    @abc.abstractmethod
    def put(self, key: str, value: bytes, expect_revision: int | None = None, lease: int = 0) -> int:
        """Write a key; returns the new revision. Raises Conflict on a failed CAS."""

    @abc.abstractmethod
    def delete(self, key: str, expect_revision: int | None = None) -> int | None:
        """Delete a key; returns the new revision, or None if it did not exist
        (with ``expect_revision=None``). Raises Conflict on a failed CAS."""

    @abc.abstractmethod
    def txn(self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult:
        """All compares true → run ``success``, else ``failure``; atomically, one revision.
        A txn may hold any number of ops (backends split nothing: etcd's
        128-op limit is raised by the server configuration or handled inside the backend)."""

    def txn_with_entries(self, compares: Sequence[Compare], success: Sequence[Op], entries: Sequence[str],
                         lease: int = 0) -> TxnResult:
        """``txn(compares, [*success, *(Put(k, b"", lease) for k in entries)])`` with no failure
        branch: the registry's index entries of a bulk create (50k keys per 10k jobs) handed over
        as key strings instead of one ``Put`` each. Responses are those of ``success`` only.
        As in ``txn``, no key may be written twice (entries among themselves or with
        ``success``). Backends may write the entries faster; the result is the same."""
        res = self.txn(compares, [*success, *(Put(k, b"", lease) for k in entries)])
        return TxnResult(res.succeeded, res.revision, res.responses[:len(success)])

    # watch
    @abc.abstractmethod
    def watch(self, prefix: str, start_revision: int | None = None, *, prev_values: bool = True) -> Watch:
        """Events for keys under ``prefix`` from ``start_revision`` (default: current+1).
        ``prev_values=False``: the caller needs no DELETE's previous value, so ``prev`` may be
        None (the etcd backend then spares a read per batch of deletes)."""

    # leases
    @abc.abstractmethod
    def lease_grant(self, ttl: float) -> int: ...

    @abc.abstractmethod
    def lease_keepalive(self, lease_id: int) -> float:
        """Refresh; returns the TTL. Raises LeaseNotFound if it already expired."""

    @abc.abstractmethod
    def lease_revoke(self, lease_id: int) -> None: ...

    # maintenance
    @abc.abstractmethod
    def compact(self, revision: int) -> None:
        """Forget history at or below ``revision``; watches from there raise Compacted."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
