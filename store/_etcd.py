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
  (``--max-request-bytes``, default 1.5 MiB).  A txn is never split here (it would stop being
  atomic): one over the server's limits raises :class:`TooLarge` saying which flag would let it
  through, and nothing is written; the caller decides what may be split.  etcd also rejects a
  txn that writes one key twice ("duplicate key"), a StoreError.  Reads (``get_many``) are split
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
* **TLS and auth.**  ``etcd://h:p[,h:p...]?cacert=CA&cert=CRT&key=KEY&user=NAME&password-file=F``
  (every value a file path or a name; also from ``BALSAM_ETCD_CACERT``, ``BALSAM_ETCD_CERT``,
  ``BALSAM_ETCD_KEY``, ``BALSAM_ETCD_USER``, ``BALSAM_ETCD_PASSWORD_FILE`` and
  ``BALSAM_ETCD_PASSWORD``).  A password is read from a file or the environment only: a URL
  that carries one is refused, so a URL can be printed.  With ``--client-cert-auth`` on the
  server and no user, etcd takes the certificate's CN as the user (no token to renew).  With a
  user, the store authenticates and re-authenticates when etcd says the token expired
  (python3-etcd3 never does: every call failed after ``--auth-token-ttl``).  A request the
  caller's role may not make raises :class:`Forbidden`.
* **Retries that are safe** (failover nobody sees).  Reads are retried on any transient
  failure.  A write that failed before it reached etcd ("failed to connect", "no leader") is
  sent again.  A write whose outcome is unknown (the connection broke mid-call, a deadline)
  is sent again only where a compare makes a second copy harmless, and a compare that then
  fails is checked against what the first attempt would have left (the value written, one
  revision for all the txn's puts): a create that landed is reported created, not
  AlreadyExists, and never made twice.  Plain puts are last-writer-wins, so sending them again
  is harmless.  One attempt waits at most ``ATTEMPT_TIMEOUT`` (plus time for big requests), so
  a request stuck on a member whose leader died is sent elsewhere within about 2 s, not after
  etcd's own 5 s.
* **Server limits.**  A txn over ``--max-txn-ops`` or ``--max-request-bytes`` raises
  :class:`TooLarge` (nothing written): ``apis`` splits a bulk create then (see docs/design.md).
  ``txn_limits()`` reports the limits learnt so far.
"""

from __future__ import annotations

import math
import os
import queue
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import etcd3
import grpc
from etcd3 import etcdrpc
from etcd3.etcdrpc import auth_pb2, kv_pb2
from etcd3.exceptions import NoServerAvailableError

from ._api import (
    Compacted,
    Compare,
    Conflict,
    Delete,
    Event,
    Forbidden,
    Get,
    KeyValue,
    LeaseNotFound,
    Op,
    Put,
    RangeResult,
    Store,
    StoreError,
    TooLarge,
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
# What etcd says, with status UNKNOWN, when a member could not serve a request in time while
# the cluster changes leader (a linearizable read waiting for a read index, a proposal that
# timed out): transient like the codes above — a node agent crashed on the first of these when
# the Raft leader was killed mid-run.
_TRANSIENT_UNKNOWN = ("context deadline exceeded", "request timed out", "leader changed", "no leader",
                      "timed out waiting for read index")


def _transient(e: grpc.RpcError) -> bool:
    code = e.code()
    if code in _FAILOVER:
        return True
    return code == grpc.StatusCode.UNKNOWN and any(w in (e.details() or "") for w in _TRANSIENT_UNKNOWN)

# One attempt of a call waits this long (plus 1 s per 200 kB of request) before it is sent
# to another member: a request caught on a follower whose leader died would otherwise wait for
# etcd's own request timeout (5 s + 2 election timeouts) and only then fail.
ATTEMPT_TIMEOUT = 1.5
# The first call of a new store (connections, TLS handshakes) may take this long.
OPEN_TIMEOUT = 20.0

# How gRPC says that nothing listens at an address (as opposed to a slow handshake).
_NOBODY_THERE = ("refused", "no route", "unreachable", "name resolution", "dns resolution", "not known")

# The key read (count only, never written) for the current revision: any key gives the
# revision in the response header, but under auth the caller must be allowed to read it, so
# every role gets read access to this one (apis/_siteroles.py).
REVISION_KEY = b"/revision"

# Query parameters of an etcd URL, and the environment variables that stand in for them.
_URL_OPTIONS = {
    "cacert": "BALSAM_ETCD_CACERT",
    "cert": "BALSAM_ETCD_CERT",
    "key": "BALSAM_ETCD_KEY",
    "user": "BALSAM_ETCD_USER",
    "password-file": "BALSAM_ETCD_PASSWORD_FILE",
}
PASSWORD_ENV = "BALSAM_ETCD_PASSWORD"

_PERM = {"read": auth_pb2.Permission.READ, "write": auth_pb2.Permission.WRITE,
         "readwrite": auth_pb2.Permission.READWRITE}

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
           revisions: Sequence[int] | None = None, serializable: bool = False) -> Any:
    """A txn of point reads (``TxnRequest``), built in place: three times cheaper than a
    ``RequestOp(request_range=RangeRequest(...))`` per key, which copies each message.
    ``serializable``: the member answers from its own state, without asking the leader
    (a read-only txn is serializable when all its ranges are)."""
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
        if serializable:
            r.serializable = True
    return txn


@dataclass(frozen=True)
class Credentials:
    """How to reach a secured etcd: TLS files and an etcd user. ``password`` is never shown
    (repr, errors); it comes from a file or the environment only."""

    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        return self.cacert is not None

    @classmethod
    def resolve(cls, query: str, environ: Any = None) -> Credentials:
        """From the URL's query (``cacert=...&cert=...``), else the environment."""
        env = os.environ if environ is None else environ
        given: dict[str, str] = {}
        for k, v in parse_qsl(query, keep_blank_values=True):
            if k == "password":
                raise Unavailable(
                    "an etcd URL must not carry a password: use password-file=PATH in the URL, "
                    f"or ${_URL_OPTIONS['password-file']} / ${PASSWORD_ENV}"
                )
            if k not in _URL_OPTIONS:
                raise Unavailable(f"unknown etcd URL option {k!r} (known: {', '.join(_URL_OPTIONS)})")
            given[k] = v
        opt = {k: given.get(k) or env.get(var) or None for k, var in _URL_OPTIONS.items()}
        password = env.get(PASSWORD_ENV) or None
        if opt["password-file"]:
            try:
                with open(opt["password-file"]) as f:
                    password = f.read().strip()
            except OSError as e:
                raise Unavailable(f"cannot read the etcd password file {opt['password-file']}: {e.strerror}") from None
        if (opt["cert"] is None) != (opt["key"] is None):
            raise Unavailable("an etcd client certificate needs both cert= and key=")
        if opt["cert"] and not opt["cacert"]:
            raise Unavailable("an etcd client certificate needs cacert= (the CA that signed the server's)")
        if password and not opt["user"]:
            raise Unavailable("an etcd password needs user=")
        if opt["user"] and not password:
            raise Unavailable(f"etcd user {opt['user']!r} has no password (password-file= or ${PASSWORD_ENV})")
        return cls(opt["cacert"], opt["cert"], opt["key"], opt["user"], password)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        def read(path: str | None) -> bytes | None:
            if path is None:
                return None
            try:
                with open(path, "rb") as f:
                    return f.read()
            except OSError as e:
                raise Unavailable(f"cannot read {path}: {e.strerror}") from None

        return grpc.ssl_channel_credentials(read(self.cacert), read(self.key), read(self.cert))


def _split_url(url: str) -> tuple[str, str]:
    """(the part naming the members, the query)."""
    base, _, query = url.partition("?")
    return base, query


def redact(url: str) -> str:
    """The URL without its query (file paths and user names: nothing secret, but long)."""
    return _split_url(url)[0]


def _parse_url(url: str) -> list[tuple[str, int]]:
    bad = Unavailable(f"invalid etcd URL {redact(url)!r} (expected etcd://HOST:PORT[,HOST:PORT...][?OPTIONS])")
    url = _split_url(url)[0]
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


def _token_refused(e: grpc.RpcError) -> bool:
    """etcd refused the request's auth token: it expired or is unknown (``UNAUTHENTICATED``),
    or it is a JWT signed before the last change of users or roles ("revision of auth store
    is old": a JWT carries the auth revision it was issued at). A new token fixes both."""
    return e.code() == grpc.StatusCode.UNAUTHENTICATED or "revision of auth store is old" in (e.details() or "")


def _one_line(text: str) -> str:
    return " ".join(text.split())


class EtcdStore(Store):
    """A :class:`Store` on an etcd v3 server or cluster (``etcd://host:port[,host:port...]``,
    with TLS and auth options, see the module's docstring).

    ``timeout`` bounds every call (and a watch's attempts to reconnect); ``retry_after`` is how
    long a member that failed is skipped while others are left.  Raises :class:`Unavailable` when
    no member answers.
    """

    def __init__(self, url: str, timeout: float = 5.0, retry_after: float = 1.0,
                 credentials: Credentials | None = None) -> None:
        self.url = url  # file paths and a user name at most: never a password (refused in a URL)
        self._hosts = _parse_url(url)
        self._creds = credentials or Credentials.resolve(_split_url(url)[1])
        self._timeout = timeout
        self._where = ",".join(f"{h}:{p}" for h, p in self._hosts)
        channel_creds = self._creds.channel_credentials() if self._creds.tls else None
        endpoints = [
            etcd3.Endpoint(h, p, secure=self._creds.tls, creds=channel_creds, time_retry=retry_after,
                           opts=_CHANNEL_OPTIONS)
            for h, p in self._hosts
        ]
        self._client = etcd3.MultiEndpointEtcd3Client(endpoints=endpoints, timeout=timeout, failover=True)
        self._metadata: tuple[tuple[str, str], ...] | None = None  # the auth token, once authenticated
        self._auth_lock = threading.Lock()
        self._read_chunk = 1000  # lowered to READ_CHUNK if the server has the default --max-txn-ops
        self._watches: weakref.WeakSet[_EtcdWatch] = weakref.WeakSet()
        self._closed = False
        # The first call sets up the connections (TLS handshakes: slow on a loaded machine) and
        # gets longer; a member that refuses the connection still fails it at once.
        self._timeout = max(timeout, OPEN_TIMEOUT)
        try:
            if self._creds.user:
                self._authenticate(None)
            self.current_revision()
        except BaseException:
            self._client.close()
            raise
        finally:
            self._timeout = timeout

    def __repr__(self) -> str:
        return f"EtcdStore({redact(self.url)!r})"

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

    def _authenticate(self, stale: Any) -> None:
        """Get a token for the configured user (again, when ``stale`` is the token etcd refused;
        another thread may have renewed it already)."""
        with self._auth_lock:
            if stale is not None and self._metadata is not stale:
                return
            request = etcdrpc.AuthenticateRequest(name=self._creds.user, password=self._creds.password)
            response = self._rpc("authstub", lambda s, t, md: s.Authenticate(request, t), retry="read",
                                 authenticating=True, attempt_timeout=self._timeout)  # bcrypt: slow
            self._metadata = (("token", response.token),)

    def _rpc(self, stub: str, fn: Callable[[Any, float, Any], T], *, retry: str = "read",
             size: int = 0, authenticating: bool = False, ambiguous: list[bool] | None = None,
             attempt_timeout: float = ATTEMPT_TIMEOUT) -> T:
        """Run ``fn(stub, timeout, metadata)`` on a live member, failing over and retrying while
        that is safe; the result of the first attempt that got an answer.

        ``retry``: ``"read"`` (any transient failure is retried), ``"write"`` (retried when
        sending it again is harmless: a plain put, or a write guarded by a compare, whose caller
        checks a failed compare with :meth:`_landed`; ``ambiguous`` gets a True appended when an
        attempt's outcome was unknown), or ``"once"`` (only failures that show
        the request never reached etcd are retried).  A member that could not be reached got
        nothing: every call moves on to the next member.  "no leader" and "leader changed" (an
        election is running) mean the request was not applied: it is sent again after a pause.
        An expired auth token is renewed and the request sent again.  All within ``timeout``
        seconds, each attempt within ``ATTEMPT_TIMEOUT`` (more for big requests).
        """
        deadline = time.monotonic() + self._timeout
        per_attempt = attempt_timeout + size / 200_000
        unreached = 0
        while True:
            try:
                self._channel()
            except Unavailable:
                # Every member was marked failed a moment ago (deadlines on a loaded machine
                # mark them too): while time is left, try them all again.
                if self._closed or time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)
                for endpoint in self._client.endpoints.values():
                    endpoint.last_failed = 0
                continue
            metadata = None if authenticating else self._metadata
            try:
                left = max(0.05, deadline - time.monotonic())
                return fn(getattr(self._client, stub), min(left, per_attempt), metadata)
            except grpc.RpcError as e:
                if _token_refused(e) and self._creds.user and not authenticating:
                    self._authenticate(metadata)  # the token expired (--auth-token-ttl) or is stale: refused
                    if time.monotonic() >= deadline:
                        raise self._translate(e) from None
                    continue
                if not _transient(e):
                    raise self._translate(e) from None
                error = e
            except NoServerAvailableError:  # every member failed within retry_after seconds
                raise self._unavailable(None) from None
            detail = error.details() or ""
            lowered = detail.lower()
            if "failed to connect" in lowered and not any(w in lowered for w in _NOBODY_THERE):
                # A TLS handshake cut short, no HTTP/2 settings in time (a loaded machine): the
                # member is there, try again while time is left
                self._mark_failed()
                time.sleep(0.1)
            elif "failed to connect" in lowered:
                self._mark_failed()
                unreached += 1
                if unreached >= len(self._hosts):
                    break  # no member listens: say so at once
            elif "no leader" in detail or "leader changed" in detail:
                time.sleep(0.05)
            elif retry in ("read", "write"):
                # A deadline or a connection lost mid-call: the outcome of a write is unknown.
                if retry == "write" and ambiguous is not None:
                    ambiguous.append(True)
                if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    # Slow, not gone (a loaded machine; a follower waiting for a new leader):
                    # the same member again, with more time.
                    per_attempt *= 2
                else:
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
        if code == grpc.StatusCode.PERMISSION_DENIED or "permission denied" in detail:
            who = f"etcd user {self._creds.user!r}" if self._creds.user else "this client's certificate"
            return Forbidden(f"{who} may not do this at etcd {self._where} (etcdserver: permission denied)")
        if "authentication failed" in detail:
            return Forbidden(f"etcd at {self._where} refused user {self._creds.user!r}: wrong user or password")
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return Forbidden(f"etcd at {self._where} refused the credentials: {detail}")
        if "requested lease not found" in detail:
            return LeaseNotFound("lease not found (expired, revoked or never granted)")
        if "too many operations in txn request" in detail:
            return _TooManyOps(
                "txn has more operations than this etcd server allows; nothing was written "
                "(start etcd with --max-txn-ops 100000, as scripts/etcd-up does)"
            )
        if "request is too large" in detail or code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return TooLarge(
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
        return self._rpc("kvstub", lambda s, t, md: s.Range(request, t, metadata=md))

    def _txn(self, request: Any, idempotent: bool = False, ambiguous: list[bool] | None = None) -> Any:
        """A txn: reads only (``idempotent``) are retried freely; writes are sent again when
        their outcome is unknown, and ``ambiguous`` says so afterwards."""
        return self._rpc("kvstub", lambda s, t, md: s.Txn(request, t, metadata=md),
                         retry="read" if idempotent else "write",
                         size=0 if idempotent else request.ByteSize(), ambiguous=ambiguous)

    def _landed(self, puts: Sequence[tuple[bytes, bytes]], deletes: Sequence[bytes],
                since: dict[bytes, int] | None = None) -> int | None:
        """After a write whose first attempt had an unknown outcome and whose retry failed its
        compare: the revision at which the first attempt was applied, or None when it was not.

        ``since`` maps a put key to the mod revision a compare required of it. Then the answer
        comes from the key's history, not its present: the first change of that key after that
        revision is the first attempt's if the first attempt landed at all (its compare held
        until it was applied), so it landed iff that change wrote our value, with every other
        put and delete of the txn at the same revision. Reading the present instead is wrong
        under contention: another writer may already have moved the key on (it read our value
        and wrote its own), and the caller, told Conflict, would apply its change a second
        time. Where the history is compacted, or no put key was compared by revision, the
        present is all there is: every put key holds the value written, all at one mod
        revision, and every deleted key is gone."""
        if not puts:
            return None
        anchored = [(k, since[k]) for k, _ in puts if since and since.get(k, 0) > 0]
        revision = 0
        if anchored:
            try:
                revision = self._first_change_after(*anchored[0])
            except StoreError:  # compacted past it: judge by the present
                revision = 0
            if revision < 0:
                return None  # the key was never changed after the compared revision
        keys = [k for k, _ in puts] + list(deletes)
        response = self._txn(_reads(keys, revision), idempotent=True)
        kvs = [r.response_range.kvs[0] if r.response_range.kvs else None for r in response.responses]
        revs = set()
        for (_, value), kv in zip(puts, kvs, strict=False):
            if kv is None or kv.value != value:
                return None
            revs.add(kv.mod_revision)
        if len(revs) != 1 or any(kv is not None for kv in kvs[len(puts):]):
            return None
        landed = revs.pop()
        return landed if not revision or landed == revision else None

    def _first_change_after(self, key: bytes, since: int) -> int:
        """The first revision after ``since`` at which ``key`` changed (a put or a delete), or
        -1 when it has not changed since. A binary search over ranges at past revisions: a
        handful of reads, on the rare path of a write whose outcome was unknown."""
        now = self._range(etcdrpc.RangeRequest(key=key))
        hi = int(now.kvs[0].mod_revision) if now.kvs else int(now.header.revision)
        if now.kvs and hi == since:
            return -1
        lo = since  # the key is as it was at ``since`` up to lo; it has changed by hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            at = self._range(etcdrpc.RangeRequest(key=key, revision=mid))
            if at.kvs and int(at.kvs[0].mod_revision) == since:
                lo = mid
            else:
                hi = mid
        return hi

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
            keys, revisions = [kv.key for kv in chunk], [kv.mod_revision - 1 for kv in chunk]
            # Serializable: a past revision is the same on every member that has applied it,
            # so the member need not ask the leader first (a linearizable read costs a
            # ReadIndex round trip through Raft: on three members, messages to both peers).
            # A member behind the revision says so; then the leader is asked.
            try:
                try:
                    response = self._txn(_reads(keys, revisions=revisions, serializable=True), idempotent=True)
                except StoreError as e:
                    if "future revision" not in str(e):
                        raise
                    response = self._txn(_reads(keys, revisions=revisions), idempotent=True)
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
        return int(self._range(etcdrpc.RangeRequest(key=REVISION_KEY, count_only=True)).header.revision)

    # --- writes ------------------------------------------------------------------------------

    def put(self, key: str, value: bytes, expect_revision: int | None = None, lease: int = 0) -> int:
        request = etcdrpc.PutRequest(key=_b(key), value=value, lease=lease)
        if expect_revision is None:
            response = self._rpc("kvstub", lambda s, t, md: s.Put(request, t, metadata=md), retry="write",
                                 size=len(value))
            return int(response.header.revision)
        result = self._cas(key, expect_revision, etcdrpc.RequestOp(request_put=request))
        return int(result.header.revision)

    def delete(self, key: str, expect_revision: int | None = None) -> int | None:
        request = etcdrpc.DeleteRangeRequest(key=_b(key))
        if expect_revision is None:
            response = self._rpc("kvstub", lambda s, t, md: s.DeleteRange(request, t, metadata=md),
                                 retry="write")
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
        ambiguous: list[bool] = []
        response = self._txn(request, ambiguous=ambiguous)
        if not response.succeeded:
            kvs = response.responses[0].response_range.kvs
            if ambiguous:  # did the first attempt land? then the compare failed on our own write
                if op.HasField("request_put") and kvs and kvs[0].value == op.request_put.value \
                        and expect_revision == 0:
                    response.succeeded = True
                    response.header.revision = kvs[0].mod_revision
                    return response
                if op.HasField("request_put") and expect_revision:
                    put = (op.request_put.key, op.request_put.value)
                    landed = self._landed([put], [], since={put[0]: expect_revision})
                    if landed is not None:
                        response.succeeded = True
                        response.header.revision = landed
                        return response
                if op.HasField("request_delete_range") and not kvs and expect_revision:
                    response.succeeded = True
                    response.responses[0].response_delete_range.deleted = 1
                    return response
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
        ambiguous: list[bool] = []
        response = self._txn(request, ambiguous=ambiguous)
        if not response.succeeded and ambiguous and compares and not any(isinstance(op, Get) for op in success):
            # The first attempt's outcome was unknown and the retry failed its compares: if the
            # first one was applied, it is this txn's result (a create is not reported as
            # AlreadyExists for the object it made itself).
            puts = [(_b(op.key), op.value) for op in success if isinstance(op, Put)]
            since = {_b(c.key): int(c.value) for c in compares
                     if c.target == "mod" and c.op == "==" and isinstance(c.value, int)}
            revision = self._landed(puts, [_b(op.key) for op in success if isinstance(op, Delete)], since)
            if revision is not None:
                return TxnResult(True, revision, [True if isinstance(op, Delete) else None for op in success])
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

    def watch(self, prefix: str, start_revision: int | None = None, *, prev_values: bool = True) -> Watch:
        if start_revision is None or start_revision <= 0:
            start_revision = self.current_revision() + 1
        key = _b(prefix)
        w = _EtcdWatch(self, key or b"\0", _prefix_end(key), start_revision, prev_values)
        self._watches.add(w)
        return w

    # --- leases ------------------------------------------------------------------------------

    def lease_grant(self, ttl: float) -> int:
        request = etcdrpc.LeaseGrantRequest(TTL=max(1, math.ceil(ttl)))
        response = self._rpc("leasestub", lambda s, t, md: s.LeaseGrant(request, t, metadata=md),
                             retry="write")  # a lease granted twice expires unused
        if response.error:
            raise StoreError(f"etcd refused the lease: {response.error}")
        return int(response.ID)

    def lease_keepalive(self, lease_id: int) -> float:
        def once(stub: Any, timeout: float, metadata: Any) -> Any:
            call = stub.LeaseKeepAlive(iter([etcdrpc.LeaseKeepAliveRequest(ID=lease_id)]), timeout,
                                       metadata=metadata)
            try:
                return next(call)
            finally:
                call.cancel()

        response = self._rpc("leasestub", once)
        if response.TTL <= 0:
            raise LeaseNotFound(f"lease {lease_id:x} not found (expired, revoked or never granted)")
        return float(response.TTL)

    def lease_revoke(self, lease_id: int) -> None:
        request = etcdrpc.LeaseRevokeRequest(ID=lease_id)
        ambiguous: list[bool] = []
        try:
            self._rpc("leasestub", lambda s, t, md: s.LeaseRevoke(request, t, metadata=md), retry="write",
                      ambiguous=ambiguous)
        except LeaseNotFound:
            if not ambiguous:  # else the first attempt revoked it
                raise

    # --- users and roles (etcd auth; the caller must be root) -----------------------------------

    def _auth(self, method: str, request: Any) -> Any:
        # etcd hashes passwords with bcrypt: seconds on a loaded machine
        return self._rpc("authstub", lambda s, t, md: getattr(s, method)(request, t, metadata=md),
                         attempt_timeout=self._timeout)

    def ensure_role(self, role: str, permissions: Sequence[tuple[str, str]]) -> None:
        """Make ``role`` grant exactly ``permissions``: (``"read"``/``"write"``/``"readwrite"``,
        key prefix) pairs; a prefix ending in ``\0`` names the single key before it."""
        try:
            self._auth("RoleAdd", etcdrpc.AuthRoleAddRequest(name=role))
        except StoreError as e:
            if "role name already exists" not in str(e):
                raise
        have = self._auth("RoleGet", etcdrpc.AuthRoleGetRequest(role=role)).perm
        want = {}
        for kind, prefix in permissions:
            if prefix.endswith("\0"):
                key, end = _b(prefix[:-1]), b""
            else:
                key, end = _b(prefix), _prefix_end(_b(prefix))
            want[(key, end)] = _PERM[kind]
        for p in have:
            if want.get((p.key, p.range_end)) != p.permType:
                self._auth("RoleRevokePermission",
                           etcdrpc.AuthRoleRevokePermissionRequest(role=role, key=p.key, range_end=p.range_end))
        kept = {(p.key, p.range_end) for p in have if want.get((p.key, p.range_end)) == p.permType}
        for (key, end), perm in want.items():
            if (key, end) not in kept:
                self._auth("RoleGrantPermission", etcdrpc.AuthRoleGrantPermissionRequest(
                    name=role, perm=auth_pb2.Permission(permType=perm, key=key, range_end=end)))

    def ensure_user(self, user: str, password: str | None = None, roles: Sequence[str] = ()) -> None:
        """Create ``user`` if missing (with ``password``; a random one, never shown, for a user
        that signs in by certificate), set the password when given, and grant ``roles``."""
        try:
            self._auth("UserAdd", etcdrpc.AuthUserAddRequest(name=user, password=password or secrets.token_urlsafe(24)))
        except StoreError as e:
            if "user name already exists" not in str(e):
                raise
            if password:
                self._auth("UserChangePassword", etcdrpc.AuthUserChangePasswordRequest(name=user, password=password))
        have = set(self._auth("UserGet", etcdrpc.AuthUserGetRequest(name=user)).roles)
        for role in roles:
            if role not in have:
                self._auth("UserGrantRole", etcdrpc.AuthUserGrantRoleRequest(user=user, role=role))

    def auth_enable(self) -> None:
        """Turn etcd's auth on (needs the ``root`` user with the root role)."""
        try:
            self._auth("AuthEnable", etcdrpc.AuthEnableRequest())
        except StoreError as e:
            if "already enabled" not in str(e):
                raise

    # --- maintenance -------------------------------------------------------------------------

    def compact(self, revision: int) -> None:
        request = etcdrpc.CompactionRequest(revision=revision, physical=True)
        try:
            self._rpc("kvstub", lambda s, t, md: s.Compact(request, t, metadata=md))
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


class _TooManyOps(TooLarge):
    """The server's --max-txn-ops is below the ops of one txn."""


class _WatchLost(WatchClosed, Unavailable):
    """The watch ended because no etcd member could be reached: it is both closed and unavailable."""


class _StaleToken(Exception):
    """A watch was canceled for its token: a JWT issued before the last change of users or
    roles (maybe, for "permission denied"): renew the token and try once more."""


_END = object()  # in a watch's queue: nothing follows


class _EtcdWatch(Watch):
    """One etcd watch on its own gRPC stream, read by a daemon thread into a queue."""

    def __init__(self, store: EtcdStore, key: bytes, end: bytes, start_revision: int,
                 prev_values: bool = True) -> None:
        self._store = store
        self._prev_values = prev_values  # read a DELETE's previous value (else prev is None)
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

        channel = self._store._channel()
        call = etcdrpc.WatchStub(channel).Watch(request_stream(), metadata=self._store._metadata)
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
        renewed = False  # a permission-denied cancel has been retried with a new token
        while True:
            with self._lock:
                if self._closed:
                    return
                try:
                    call, requests = self._open()
                except Unavailable as e:  # every member failed a moment ago
                    error: StoreError | grpc.RpcError | None = e
                except ValueError:  # grpc's "Channel closed": the store closed under this open
                    if not self._store._closed:
                        raise
                    self._finish(Unavailable(f"store {self._store.url} is closed"))
                    return
                else:
                    self._call, self._requests = call, requests
                    error = None
            if error is None:
                self._stream_created = False
                try:
                    if self._read(call, retry_denied=self._store._creds.user is not None and not renewed):
                        return
                except _StaleToken:
                    # etcd 3.4 cancels a watch whose JWT predates the last change of users or
                    # roles ("revision of auth store is old"; "permission denied" in some
                    # paths): once, with a new token, before saying so.
                    renewed = True
                    try:
                        self._store._authenticate(self._store._metadata)
                    except StoreError as e:
                        self._finish(e)
                        return
                    continue
                except (grpc.RpcError, Unavailable) as e:  # Unavailable: looking up deleted values
                    error = e
                finally:
                    requests.put(None)  # ends grpc's thread that sends the request stream
                    call.cancel()
                if self._stream_created:
                    attempts = 0  # this stream worked: a new series of failures begins
            if self._closed:
                return
            if isinstance(error, grpc.RpcError) and _token_refused(error) and self._store._creds.user:
                try:  # the token expired: renew it and open the stream again at once
                    self._store._authenticate(self._store._metadata)
                    continue
                except StoreError as e:
                    self._finish(e)
                    return
            if isinstance(error, grpc.RpcError) and not _transient(error):
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

    def _read(self, call: Any, retry_denied: bool = False) -> bool:
        """Queue the stream's events until it ends (False) or ends the watch (True).
        ``retry_denied``: a "permission denied" cancel raises :class:`_StaleToken` instead."""
        for response in call:
            if response.created and not response.canceled:  # a refused watch comes created and canceled
                self._stream_created = True
                self._created.set()
            if response.compact_revision:
                self._finish(Compacted(self._next, response.compact_revision))
                return True
            if response.canceled:
                reason = _one_line(response.cancel_reason) or "no reason given"
                if retry_denied and ("permission denied" in reason or "revision of auth store is old" in reason):
                    raise _StaleToken(reason)
                if "permission denied" in reason:
                    self._finish(Forbidden(f"etcd refused to watch {self._key.decode(errors='replace')}: {reason}"))
                else:
                    self._finish(StoreError(f"etcd canceled the watch: {reason}"))
                return True
            events = self._events(response.events)
            if events:
                self._next = events[-1].kv.mod_revision + 1
                self._queue.put(events)
        return False

    def _events(self, raw: Sequence[Any]) -> list[Event]:
        """Our events for etcd's, less those already delivered; a DELETE gets the value it
        removed (unless the watch was opened with ``prev_values=False``)."""
        raw = [ev for ev in raw if ev.kv.mod_revision >= self._next]
        deleted = [ev.kv for ev in raw if ev.type == _DELETE] if self._prev_values else []
        prevs = iter(self._store._values_before(deleted) if deleted else ())
        return [
            Event("DELETE", _kv(ev.kv), next(prevs, None)) if ev.type == _DELETE else Event("PUT", _kv(ev.kv))
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
