"""The etcd backend: :class:`EtcdStore` over the python3-etcd3 client (etcd v3 gRPC API).

The contract in ``_api`` is etcd's own, so most methods are one RPC.  What this module adds:

* **Endpoints and failover.**  ``etcd://h1:p1,h2:p2,h3:p3`` makes one
  ``etcd3.MultiEndpointEtcd3Client`` with ``time_retry`` of one second (the library's default,
  300 s, keeps a member that failed once unusable for five minutes).  A call that cannot reach
  its member moves on to the next one; reads are retried on any transient failure, writes only
  where etcd cannot have applied them (see ``_rpc``).  A write caught by a leader crash waits out
  etcd's request timeout (5 s) and raises :class:`Unavailable`; the next write goes through.
  When no member answers: :class:`Unavailable` naming the URL, at once.
* **Requests go to the generated gRPC stubs**, built here as protobuf messages, not through the
  library's helpers: txns mix compares, puts, deletes and gets; ranges ask for ``limit`` without
  ``sort_order`` (etcd 3.4 reads the *whole* range when any sort order is given, even ascending by
  key, which is the order it returns anyway: paging 100k keys took 6.5 s instead of 0.7 s).
* **Txn size.**  etcd caps ops per txn (``--max-txn-ops``, default 128) and request size
  (``--max-request-bytes``, default 1.5 MiB).  A txn is never split (it would stop being atomic):
  the server must be started with large limits, as ``scripts/etcd-up`` does
  (``--max-txn-ops 100000 --max-request-bytes 67108864``); a txn over the server's limits raises
  :class:`StoreError` saying which flag to raise, and nothing is written.  etcd also rejects a txn
  that writes one key twice ("duplicate key"), also a StoreError.  Reads (``get_many``) are split
  freely, all chunks read at the first chunk's revision.
* **Watches** run on their own bidirectional gRPC stream each, read by a daemon thread into a
  queue (``poll``).  The library's ``Watcher`` is not used: it shares one stream between all
  watches of a client and, in 0.13.0, dies with ``NameError: six`` when its stream ends, leaving
  iterators blocked forever.  When a stream breaks (its member died), the watch reconnects to a
  live member and resumes after the last revision it delivered, for up to ``timeout`` seconds;
  after that ``poll`` raises an error that is both :class:`WatchClosed` and :class:`Unavailable`.
  The contract raises :class:`Compacted` for ``start_revision <= compacted revision``; etcd only
  refuses ``start_revision < compacted revision``, so the stream starts one revision early and
  drops that revision's events.  A DELETE event's ``prev`` is read in one txn per batch of
  events (see ``_values_before``); a PUT event's ``prev`` is None.
* **Leases**: etcd TTLs are whole seconds, so ``lease_grant`` rounds up.
"""

from __future__ import annotations

import math
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import etcd3
import grpc
from etcd3 import etcdrpc
from etcd3.etcdrpc import kv_pb2
from etcd3.exceptions import NoServerAvailableError

from ._api import (
    Compacted,
    Compare,
    Conflict,
    Delete,
    Event,
    Get,
    KeyValue,
    LeaseNotFound,
    Op,
    Put,
    RangeResult,
    Store,
    StoreError,
    TxnResult,
    Unavailable,
    Watch,
    WatchClosed,
)

T = TypeVar("T")

DEFAULT_PORT = 2379
# etcd's default --max-txn-ops; get_many reads in chunks of this many keys.
READ_CHUNK = 128

_CHANNEL_OPTIONS = [  # a list of tuples: the library's docstring says dict, which grpc rejects
    ("grpc.max_receive_message_length", -1),  # default 4 MiB: a 20k x 1 KB range fails
    ("grpc.max_send_message_length", -1),  # the server's --max-request-bytes is the limit
    ("grpc.initial_reconnect_backoff_ms", 100),  # default 1 s growing to 120 s: a restarted
    ("grpc.min_reconnect_backoff_ms", 100),  # member would stay unreachable for minutes
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10_000),  # notice a dead peer on a silent watch stream
    ("grpc.keepalive_timeout_ms", 5_000),  # (etcd's --grpc-keepalive-min-time is 5 s)
    ("grpc.enable_http_proxy", 0),  # gRPC sends even 127.0.0.1 through $http_proxy otherwise
]

_DELETE = kv_pb2.Event.DELETE  # the type of a delete event

_FAILOVER = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

_COMPARE_TARGET = {
    "mod": etcdrpc.Compare.MOD,
    "create": etcdrpc.Compare.CREATE,
    "version": etcdrpc.Compare.VERSION,
    "value": etcdrpc.Compare.VALUE,
}
_COMPARE_FIELD = {"mod": "mod_revision", "create": "create_revision", "version": "version", "value": "value"}
_COMPARE_OP = {
    "==": etcdrpc.Compare.EQUAL,
    "!=": etcdrpc.Compare.NOT_EQUAL,
    "<": etcdrpc.Compare.LESS,
    ">": etcdrpc.Compare.GREATER,
}


def _b(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


def _prefix_end(prefix: bytes) -> bytes:
    """The range_end that covers every key starting with ``prefix`` (b"\\0": to the end)."""
    p = prefix.rstrip(b"\xff")
    return p[:-1] + bytes([p[-1] + 1]) if p else b"\0"


def _kv(kv: Any) -> KeyValue:
    return KeyValue(
        kv.key.decode("utf-8", "surrogateescape"),
        kv.value,
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        kv.lease,
    )


def _reads(keys: Sequence[bytes], revision: int = 0, count_only: bool = False,
           revisions: Sequence[int] | None = None) -> Any:
    """A txn of point reads (``TxnRequest``), built in place: three times cheaper than a
    ``RequestOp(request_range=RangeRequest(...))`` per key, which copies each message."""
    txn = etcdrpc.TxnRequest()
    add = txn.success.add
    for i, key in enumerate(keys):
        r = add().request_range
        r.key = key
        if revisions is not None:
            r.revision = revisions[i]
        elif revision:
            r.revision = revision
        if count_only:
            r.count_only = True
    return txn


def _parse_url(url: str) -> list[tuple[str, int]]:
    bad = Unavailable(f"invalid etcd URL {url!r} (expected etcd://HOST:PORT[,HOST:PORT...])")
    if not url.startswith("etcd://"):
        raise bad
    hosts = []
    for part in url[len("etcd://") :].rstrip("/").split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or host.endswith("]") or host.count(":") and not host.startswith("["):
            host, port = part.strip(), str(DEFAULT_PORT)  # no port, or a bare IPv6 address
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise bad
        hosts.append((host, int(port)))
    return hosts


def _one_line(text: str) -> str:
    return " ".join(text.split())


class EtcdStore(Store):
    """A :class:`Store` on an etcd v3 server or cluster (``etcd://host:port[,host:port...]``).

    ``timeout`` bounds every call (and a watch's attempts to reconnect); ``retry_after`` is how
    long a member that failed is skipped while others are left.  Raises :class:`Unavailable` when
    no member answers.
    """

    def __init__(self, url: str, timeout: float = 5.0, retry_after: float = 1.0) -> None:
        self.url = url
        self._hosts = _parse_url(url)
        self._timeout = timeout
        self._where = ",".join(f"{h}:{p}" for h, p in self._hosts)
        endpoints = [
            etcd3.Endpoint(h, p, secure=False, time_retry=retry_after, opts=_CHANNEL_OPTIONS)
            for h, p in self._hosts
        ]
        self._client = etcd3.MultiEndpointEtcd3Client(endpoints=endpoints, timeout=timeout, failover=True)
        self._read_chunk = 1000  # lowered to READ_CHUNK if the server has the default --max-txn-ops
        self._watches: weakref.WeakSet[_EtcdWatch] = weakref.WeakSet()
        self._closed = False
        try:
            self.current_revision()
        except BaseException:
            self._client.close()
            raise

    # --- plumbing ------------------------------------------------------------------------------

    def _channel(self) -> Any:
        """The channel of a member not marked failed (the library fails over for us)."""
        if self._closed:
            raise Unavailable(f"store {self.url} is closed")
        try:
            return self._client.channel
        except NoServerAvailableError:
            raise Unavailable(f"cannot reach etcd at {self._where}: every member failed just now") from None

    def _mark_failed(self) -> None:
        """Skip the member in use for ``retry_after`` seconds (only when there are others)."""
        if len(self._hosts) > 1:
            self._client.endpoint_in_use.fail()
            self._client._clear_old_stubs()  # cached stubs hold the failed member's channel

    def _rpc(self, stub: str, fn: Callable[[Any, float], T], *, idempotent: bool) -> T:
        """Run ``fn(stub, timeout)`` on a live member, failing over and retrying while that is safe.

        A member that could not be reached got nothing: every call moves on to the next member
        (each member once).  "no leader" and "leader changed" (an election is running) mean the
        request was not applied: it is sent again after a pause.  Any other failure (a deadline,
        a connection lost mid-call) may come after a write was applied, so only reads are retried.
        All within ``timeout`` seconds.
        """
        deadline = time.monotonic() + self._timeout
        unreached = 0
        while True:
            self._channel()
            try:
                return fn(getattr(self._client, stub), max(0.05, deadline - time.monotonic()))
            except grpc.RpcError as e:
                if e.code() not in _FAILOVER:
                    raise self._translate(e) from None
                error = e
            except NoServerAvailableError:  # every member failed within retry_after seconds
                raise self._unavailable(None) from None
            detail = error.details() or ""
            if "failed to connect" in detail.lower():
                self._mark_failed()
                unreached += 1
                if unreached >= len(self._hosts):
                    break
            elif "no leader" in detail or "leader changed" in detail:
                time.sleep(0.05)
            elif idempotent:
                self._mark_failed()
                time.sleep(0.02)
            else:
                break
            if time.monotonic() >= deadline:
                break
        raise self._unavailable(error)

    def _unavailable(self, error: grpc.RpcError | None) -> Unavailable:
        if error is None:
            return Unavailable(f"cannot reach etcd at {self._where}")
        if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return Unavailable(f"etcd at {self._where} did not answer within {self._timeout:g}s")
        # gRPC's details end with the cause: "...: Failed to connect to remote host: Connection refused"
        cause = _one_line(error.details() or "").rsplit(": ", 1)[-1]
        return Unavailable(f"cannot reach etcd at {self._where}" + (f" ({cause})" if cause else ""))

    def _translate(self, e: grpc.RpcError) -> StoreError:
        code, detail = e.code(), _one_line(e.details() or "")
        if "requested lease not found" in detail:
            return LeaseNotFound("lease not found (expired, revoked or never granted)")
        if "too many operations in txn request" in detail:
            return _TooManyOps(
                "txn has more operations than this etcd server allows; nothing was written "
                "(start etcd with --max-txn-ops 100000, as scripts/etcd-up does)"
            )
        if "request is too large" in detail or code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return StoreError(
                "request is larger than this etcd server accepts; nothing was written "
                "(start etcd with --max-request-bytes 67108864, as scripts/etcd-up does)"
            )
        if "duplicate key given in txn request" in detail:
            return StoreError("etcd refuses a txn that writes the same key twice; nothing was written")
        if "database space exceeded" in detail:
            return StoreError(
                f"etcd at {self._where} is out of space (--quota-backend-bytes); compact and defragment it"
            )
        return StoreError(f"etcd at {self._where}: {code.name}: {detail}")

    def _range(self, request: Any) -> Any:
        return self._rpc("kvstub", lambda s, t: s.Range(request, t), idempotent=True)

    def _txn(self, request: Any, idempotent: bool = False) -> Any:
        return self._rpc("kvstub", lambda s, t: s.Txn(request, t), idempotent=idempotent)

    # --- reads -------------------------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        kvs = self._range(etcdrpc.RangeRequest(key=_b(key))).kvs
        return _kv(kvs[0]) if kvs else None

    def get_many(self, keys: Sequence[str]) -> list[KeyValue | None]:
        found: dict[str, KeyValue] = {}
        revision = 0  # 0: the current one; then the first chunk's revision for the others
        start = 0
        while start < len(keys):
            chunk = keys[start : start + self._read_chunk]
            request = _reads([_b(k) for k in chunk], revision)
            try:
                response = self._txn(request, idempotent=True)  # reads only
            except _TooManyOps:
                if self._read_chunk == READ_CHUNK:
                    raise
                self._read_chunk = READ_CHUNK
                continue
            except StoreError as e:
                if revision and "required revision has been compacted" in str(e):
                    found, revision, start = {}, 0, 0  # compacted between chunks: read again
                    continue
                raise
            if not revision:
                revision = response.header.revision
            for op in response.responses:
                for kv in op.response_range.kvs:
                    found[kv.key.decode("utf-8", "surrogateescape")] = _kv(kv)
            start += len(chunk)
        return [found.get(k) for k in keys]

    def _values_before(self, deleted: Sequence[Any]) -> list[KeyValue | None]:
        """For each deleted key (an etcd KeyValue of a DELETE event), its value just before.

        One txn of reads for a batch.  Not etcd's ``prev_kv`` watch option: etcd 3.4 looks each
        one up in a read of its own, 4.8 ms each with 100k keys in the store (a 1000-key txn's
        events took 4.8 s to arrive); batched here, 1000 lookups take 13 ms.  None where the
        revision before was compacted away.
        """
        out: list[KeyValue | None] = []
        for start in range(0, len(deleted), self._read_chunk):
            chunk = deleted[start : start + self._read_chunk]
            request = _reads([kv.key for kv in chunk], revisions=[kv.mod_revision - 1 for kv in chunk])
            try:
                response = self._txn(request, idempotent=True)
            except StoreError as e:
                if "required revision has been compacted" not in str(e):
                    raise
                out += [None] * len(chunk)
                continue
            out += [
                _kv(r.response_range.kvs[0]) if r.response_range.kvs else None for r in response.responses
            ]
        return out

    def range(
        self,
        prefix: str,
        limit: int = 0,
        start_after: str | None = None,
        keys_only: bool = False,
    ) -> RangeResult:
        key = _b(prefix)
        end = _prefix_end(key)
        if start_after is not None and start_after >= prefix:
            key = _b(start_after) + b"\0"
            if end != b"\0" and key >= end:
                return RangeResult([], self.current_revision(), False, 0)
        elif not key:
            key = b"\0"  # etcd reads key b"" as "no key"; b"\0" with range_end b"\0" is everything
        # No sort_order: etcd returns key order anyway, and any sort order makes it read the
        # whole range before applying the limit.
        r = self._range(etcdrpc.RangeRequest(key=key, range_end=end, limit=limit, keys_only=keys_only))
        return RangeResult([_kv(kv) for kv in r.kvs], r.header.revision, r.more, r.count)

    def count(self, prefix: str) -> int:
        key = _b(prefix)
        request = etcdrpc.RangeRequest(key=key or b"\0", range_end=_prefix_end(key), count_only=True)
        return int(self._range(request).count)

    def intersect(self, prefixes: Sequence[str]) -> list[str]:
        """The smallest prefix's keys (keys-only pages), then each other prefix, smallest
        first: a point lookup per candidate (``count_only``, which etcd answers from its
        in-memory index without reading the key's value from disk, in txns of reads) when
        there are fewer candidates than keys under it, else a read of its keys. Every read at
        the revision of the first page. 100k jobs, "experiment=foo,run=5" (50k and 20k keys,
        10k left): 20k lookups took 180-190 ms where reading the 50k keys took ~300 ms."""
        distinct = list(dict.fromkeys(prefixes))
        if len(distinct) < 2:
            return super().intersect(distinct)
        sized = sorted((self.count(p), p) for p in distinct)
        if sized[0][0] == 0:
            return []
        try:
            revision, result = self._suffixes_under(sized[0][1])
            for n, p in sized[1:]:
                if not result:
                    return []
                if 2 * len(result) <= n:
                    result = self._present(p, result, revision)
                else:
                    have = set(self._suffixes_under(p, revision)[1])
                    result = [s for s in result if s in have]
        except StoreError as e:
            if "required revision has been compacted" not in str(e):
                raise
            return super().intersect(distinct)  # compacted meanwhile: unpinned reads
        return result

    def _suffixes_under(self, prefix: str, revision: int = 0, page: int = 20000) -> tuple[int, list[str]]:
        """(revision read at, every key under ``prefix`` without it), paged."""
        key = _b(prefix)
        end = _prefix_end(key)
        n = len(key)
        out: list[str] = []
        while True:
            r = self._range(etcdrpc.RangeRequest(key=key, range_end=end, limit=page, keys_only=True,
                                                 revision=revision))
            revision = revision or r.header.revision
            out.extend(kv.key[n:].decode("utf-8", "surrogateescape") for kv in r.kvs)
            if not r.more or not r.kvs:
                return revision, out
            key = r.kvs[-1].key + b"\0"

    def _present(self, prefix: str, suffixes: list[str], revision: int) -> list[str]:
        """The ``suffixes`` for which ``prefix + suffix`` is a key at ``revision``."""
        p = _b(prefix)
        out: list[str] = []
        for start in range(0, len(suffixes), self._read_chunk):
            chunk = suffixes[start : start + self._read_chunk]
            try:
                response = self._txn(_reads([p + _b(s) for s in chunk], revision, count_only=True),
                                     idempotent=True)
            except _TooManyOps:
                if self._read_chunk == READ_CHUNK:
                    raise
                self._read_chunk = READ_CHUNK
                return self._present(prefix, suffixes, revision)
            out.extend(s for s, r in zip(chunk, response.responses, strict=True) if r.response_range.count)
        return out

    def current_revision(self) -> int:
        return int(self._range(etcdrpc.RangeRequest(key=b"\0", count_only=True)).header.revision)

    # --- writes ------------------------------------------------------------------------------

    def put(self, key: str, value: bytes, expect_revision: int | None = None, lease: int = 0) -> int:
        request = etcdrpc.PutRequest(key=_b(key), value=value, lease=lease)
        if expect_revision is None:
            response = self._rpc("kvstub", lambda s, t: s.Put(request, t), idempotent=False)
            return int(response.header.revision)
        result = self._cas(key, expect_revision, etcdrpc.RequestOp(request_put=request))
        return int(result.header.revision)

    def delete(self, key: str, expect_revision: int | None = None) -> int | None:
        request = etcdrpc.DeleteRangeRequest(key=_b(key))
        if expect_revision is None:
            response = self._rpc("kvstub", lambda s, t: s.DeleteRange(request, t), idempotent=False)
            return int(response.header.revision) if response.deleted else None
        result = self._cas(key, expect_revision, etcdrpc.RequestOp(request_delete_range=request))
        return int(result.header.revision) if result.responses[0].response_delete_range.deleted else None

    def _cas(self, key: str, expect_revision: int, op: Any) -> Any:
        target = Compare.absent(key) if expect_revision == 0 else Compare.mod(key, "==", expect_revision)
        request = etcdrpc.TxnRequest(
            compare=[self._compare(target)],
            success=[op],
            failure=[etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(key=_b(key)))],
        )
        response = self._txn(request)
        if not response.succeeded:
            kvs = response.responses[0].response_range.kvs
            raise Conflict(key, expect_revision, _kv(kvs[0]) if kvs else None)
        return response

    @staticmethod
    def _compare(c: Compare) -> Any:
        if c.target not in _COMPARE_TARGET or c.op not in _COMPARE_OP:
            raise StoreError(f"unsupported compare {c!r}")
        value = c.value
        if c.target == "value":
            if not isinstance(value, bytes):
                raise StoreError(f"compare on value needs bytes: {c!r}")
        elif not isinstance(value, int) or isinstance(value, bool):
            raise StoreError(f"compare on {c.target} needs an int: {c!r}")
        return etcdrpc.Compare(
            key=_b(c.key),
            target=_COMPARE_TARGET[c.target],
            result=_COMPARE_OP[c.op],
            **{_COMPARE_FIELD[c.target]: value},
        )

    @staticmethod
    def _op(op: Op) -> Any:
        if isinstance(op, Put):
            return etcdrpc.RequestOp(
                request_put=etcdrpc.PutRequest(key=_b(op.key), value=op.value, lease=op.lease)
            )
        if isinstance(op, Delete):
            return etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(key=_b(op.key)))
        if isinstance(op, Get):
            return etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(key=_b(op.key)))
        raise StoreError(f"unsupported txn op {op!r}")

    def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        request = etcdrpc.TxnRequest(
            compare=[self._compare(c) for c in compares],
            success=[self._op(op) for op in success],
            failure=[self._op(op) for op in failure],
        )
        response = self._txn(request)
        ops = success if response.succeeded else failure
        results: list[KeyValue | bool | None] = []
        for op, r in zip(ops, response.responses, strict=True):
            if isinstance(op, Get):
                kvs = r.response_range.kvs
                results.append(_kv(kvs[0]) if kvs else None)
            elif isinstance(op, Delete):
                results.append(r.response_delete_range.deleted > 0)
            else:
                results.append(None)
        return TxnResult(bool(response.succeeded), int(response.header.revision), results)

    # --- watch -------------------------------------------------------------------------------

    def watch(self, prefix: str, start_revision: int | None = None) -> Watch:
        if start_revision is None or start_revision <= 0:
            start_revision = self.current_revision() + 1
        key = _b(prefix)
        w = _EtcdWatch(self, key or b"\0", _prefix_end(key), start_revision)
        self._watches.add(w)
        return w

    # --- leases ------------------------------------------------------------------------------

    def lease_grant(self, ttl: float) -> int:
        request = etcdrpc.LeaseGrantRequest(TTL=max(1, math.ceil(ttl)))
        response = self._rpc("leasestub", lambda s, t: s.LeaseGrant(request, t), idempotent=False)
        if response.error:
            raise StoreError(f"etcd refused the lease: {response.error}")
        return int(response.ID)

    def lease_keepalive(self, lease_id: int) -> float:
        def once(stub: Any, timeout: float) -> Any:
            call = stub.LeaseKeepAlive(iter([etcdrpc.LeaseKeepAliveRequest(ID=lease_id)]), timeout)
            try:
                return next(call)
            finally:
                call.cancel()

        response = self._rpc("leasestub", once, idempotent=True)
        if response.TTL <= 0:
            raise LeaseNotFound(f"lease {lease_id:x} not found (expired, revoked or never granted)")
        return float(response.TTL)

    def lease_revoke(self, lease_id: int) -> None:
        request = etcdrpc.LeaseRevokeRequest(ID=lease_id)
        self._rpc("leasestub", lambda s, t: s.LeaseRevoke(request, t), idempotent=False)

    # --- maintenance -------------------------------------------------------------------------

    def compact(self, revision: int) -> None:
        request = etcdrpc.CompactionRequest(revision=revision, physical=True)
        try:
            self._rpc("kvstub", lambda s, t: s.Compact(request, t), idempotent=True)
        except StoreError as e:
            if "required revision has been compacted" in str(e):
                return  # already compacted at or beyond ``revision``
            if "future revision" in str(e):
                raise StoreError(f"cannot compact at {revision}: beyond the current revision") from None
            raise

    def close(self) -> None:
        if self._closed:
            return
        for w in list(self._watches):
            w.close()
        self._closed = True
        self._client.close()


class _TooManyOps(StoreError):
    """The server's --max-txn-ops is below the ops of one txn."""


class _WatchLost(WatchClosed, Unavailable):
    """The watch ended because no etcd member could be reached: it is both closed and unavailable."""


_END = object()  # in a watch's queue: nothing follows


class _EtcdWatch(Watch):
    """One etcd watch on its own gRPC stream, read by a daemon thread into a queue."""

    def __init__(self, store: EtcdStore, key: bytes, end: bytes, start_revision: int) -> None:
        self._store = store
        self._key, self._end = key, end
        self._next = start_revision  # the first revision not delivered yet
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._error: StoreError | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._call: Any = None
        self._requests: queue.SimpleQueue[Any] | None = None
        self._created = threading.Event()  # etcd created the watch (once)
        self._stream_created = False  # ... on the stream being read
        self._thread = threading.Thread(target=self._run, name=f"etcd-watch {key!r}", daemon=True)
        self._thread.start()
        if not self._created.wait(store._timeout + 1):
            self.close()
            raise Unavailable(f"etcd at {store._where} did not create the watch within {store._timeout:g}s")
        if self._error is not None and not isinstance(self._error, Compacted):
            error = self._error
            self.close()
            raise error

    # the reader thread

    def _open(self) -> tuple[Any, queue.SimpleQueue[Any]]:
        # One revision early: etcd refuses only start < compacted, the contract start <= compacted.
        create = etcdrpc.WatchCreateRequest(
            key=self._key, range_end=self._end, start_revision=max(1, self._next - 1)
        )
        requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        requests.put(etcdrpc.WatchRequest(create_request=create))

        def request_stream() -> Iterator[Any]:
            while (request := requests.get()) is not None:
                yield request

        call = etcdrpc.WatchStub(self._store._channel()).Watch(request_stream())
        return call, requests

    def _run(self) -> None:
        try:
            self._follow()
        except BaseException as e:  # a bug must not leave poll() blocked forever
            self._finish(StoreError(f"watch failed: {e!r}"))
            raise

    def _follow(self) -> None:
        """Open the stream and read it; when it breaks, open it again after the last event."""
        attempts = 0  # opens in a row that did not last
        failing_since = 0.0
        while True:
            with self._lock:
                if self._closed:
                    return
                try:
                    call, requests = self._open()
                except Unavailable as e:  # every member failed a moment ago
                    error: StoreError | grpc.RpcError | None = e
                else:
                    self._call, self._requests = call, requests
                    error = None
            if error is None:
                self._stream_created = False
                try:
                    if self._read(call):
                        return
                except (grpc.RpcError, Unavailable) as e:  # Unavailable: looking up deleted values
                    error = e
                finally:
                    requests.put(None)  # ends grpc's thread that sends the request stream
                    call.cancel()
                if self._stream_created:
                    attempts = 0  # this stream worked: a new series of failures begins
            if self._closed:
                return
            if isinstance(error, grpc.RpcError) and error.code() not in _FAILOVER:
                self._finish(self._store._translate(error))
                return
            # The stream broke (its member died) or ended: resume on a live member, within the
            # store's timeout once the watch exists; before, after one try on each member.
            self._store._mark_failed()
            now = time.monotonic()
            if attempts == 0:
                failing_since = now
            attempts += 1
            created = self._created.is_set()
            if (
                not created and attempts >= len(self._store._hosts)
            ) or now - failing_since > self._store._timeout:
                lost = error if isinstance(error, StoreError) else self._store._unavailable(error)
                self._finish(_WatchLost(f"{lost}; the watch ended") if created else lost)
                return
            time.sleep(min(0.05 * attempts, 0.5))

    def _read(self, call: Any) -> bool:
        """Queue the stream's events until it ends (False) or ends the watch (True)."""
        for response in call:
            if response.created:
                self._stream_created = True
                self._created.set()
            if response.compact_revision:
                self._finish(Compacted(self._next, response.compact_revision))
                return True
            if response.canceled:
                reason = _one_line(response.cancel_reason) or "no reason given"
                self._finish(StoreError(f"etcd canceled the watch: {reason}"))
                return True
            events = self._events(response.events)
            if events:
                self._next = events[-1].kv.mod_revision + 1
                self._queue.put(events)
        return False

    def _events(self, raw: Sequence[Any]) -> list[Event]:
        """Our events for etcd's, less those already delivered; a DELETE gets the value it removed."""
        raw = [ev for ev in raw if ev.kv.mod_revision >= self._next]
        deleted = [ev.kv for ev in raw if ev.type == _DELETE]
        prevs = iter(self._store._values_before(deleted) if deleted else ())
        return [
            Event("DELETE", _kv(ev.kv), next(prevs)) if ev.type == _DELETE else Event("PUT", _kv(ev.kv))
            for ev in raw
        ]

    def _finish(self, error: StoreError) -> None:
        self._error = error
        self._queue.put(_END)
        self._created.set()

    # the caller's side

    def poll(self, timeout: float | None = None) -> list[Event]:
        if self._closed:
            raise WatchClosed("watch closed")
        try:
            item = self._queue.get(timeout=None if timeout is None else max(0.0, timeout))
        except queue.Empty:
            return []
        events: list[Event] = []
        while item is not _END:
            events.extend(item)
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return events
        self._queue.put(_END)  # later polls end here too
        if events:
            return events
        if self._closed or self._error is None:
            raise WatchClosed("watch closed")
        raise self._error

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            call, requests = self._call, self._requests
        if requests is not None:
            requests.put(None)
        if call is not None:
            call.cancel()
        self._queue.put(_END)
        self._created.set()
