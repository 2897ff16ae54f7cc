"""The embedded backend: the store contract on one SQLite file (kine-style log, WAL mode).

Layout of the file:

* ``log`` — one row per write, never updated. ``id`` packs the revision and the
  row's position in its txn: ``id = revision << 24 | seq``, so every row of one
  txn shares one revision, rows are in revision order, and ``id >> 24`` is the
  revision. A delete is a tombstone row (``deleted = 1``). ``prev_id`` points at
  the row this one superseded (for DELETE events' ``prev`` and for compaction).
  Values live here and only here.
* ``kv`` — the latest live version of each key (``WITHOUT ROWID``, keyed by
  name): ``log_id`` points at its log row, so ``mod_revision = log_id >> 24``.
  Rows are small (no value), so ``count`` and ``keys_only`` ranges walk a
  compact b-tree, and get/range never do latest-per-name scans of the log.
* ``idx`` (schema 2) — *index entries*: keys under ``/index/`` written with an empty value
  (the registry's secondary indexes), ``WITHOUT ROWID``, keyed by name, with their mod and
  create revision, version and lease. They have no ``log`` and no ``kv`` rows: a bulk create
  of a job with 5 index keys writes 1 log row, 1 kv row and 5 idx rows, not 6 + 6.
* ``idx_log`` — one row per txn that changed index entries: ``(rev, changes)``, the entries'
  events as text (records joined by NUL; a new entry without a lease is just its key, others
  carry their create revision, version, lease and, for a delete, the previous revision).
  Watches read it beside ``log`` when their prefix can hold index entries, and place each
  txn's entry events after its log rows. Compaction drops its rows at or below the
  compacted revision (``idx`` holds the state). A valued key under ``/index/`` (a kind's
  index schema) is an ordinary key in ``log``/``kv``; a key moves between the two tables
  when its value becomes or stops being empty, and is never in both.
* ``lease`` — ``(id, ttl, expiry)`` with ``expiry`` in wall-clock seconds.
* ``meta`` — one row: ``current_revision``, ``compact_revision``, ``schema_version`` (2). A
  schema-1 file (index entries in log and kv) is migrated when a process first opens it
  (entries moved to ``idx``, their log rows dropped, the log compacted to the current
  revision, so watches from before relist); a file of a newer schema is refused in one line.

Writers take SQLite's write lock with ``BEGIN IMMEDIATE`` (and, within one
process, a mutex first, so threads queue instead of sleeping in SQLite's busy
handler); compares are evaluated inside that transaction, so several processes
on one file lose no update. A txn that writes N keys advances the revision by
exactly one; a txn that writes nothing leaves it alone (as etcd does).

One background thread per store instance serves every watch of the instance: it
checks ``PRAGMA data_version`` every ``poll_interval`` seconds (1 ms) while a
watch is open, is woken at once by writes of its own process, reads the new log
rows once and hands them to each watch whose prefix matches. A watch that
starts in the past first replays the log itself, on its caller's thread. The
same thread reaps expired leases (every 100 ms, and once at open), deleting
their keys through ordinary tombstones so watches see DELETE events.

The file must be on a local filesystem: WAL needs shared memory between the
processes that open it (one host). It is created 0600 (SQLite gives its -wal and -shm
files the same mode): the store holds every job's parameters.

Options ride on the URL's query: ``sqlite:///PATH?synchronous=full&history=600``.

* ``synchronous`` (``normal``, the default, or ``full``/``extra``/``off``): SQLite's
  durability. In WAL mode ``normal`` never corrupts the file, but a power loss (not a process
  crash) may drop the transactions committed since the last checkpoint; ``full`` fsyncs the
  WAL on every commit (its cost is measured by ``python -m bench store`` / ``e2e``).
* ``history`` (seconds, default 600; 0 = never): auto-compaction, as etcd's
  ``--auto-compaction-retention``. Every long-lived process's poller notes the revision
  every ``history/10`` seconds and compacts the log to the revision it noted ``history``
  seconds ago: superseded rows and tombstones below it are deleted, so the log holds the
  live keys plus the last ``history`` seconds of changes. A watch that falls further behind
  gets ``Compacted`` and relists (informers, ``get -w``, futures and agents do).

When writes fail (a full disk) the poller says so once and retries every second; when they
work again it first renews every lease by its TTL (as etcd's new leader does), so that the
outage itself expires no live holder's lease (agents' Nodes, the leader's lease).
  New files use ``auto_vacuum=INCREMENTAL`` and give freed pages back after a compaction.

Opening an existing store writes nothing (no schema statements, no pragma that writes), so
reads work on a full disk; writes then fail with ``Unavailable`` until space returns.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import json
import logging
import operator
import os
import sqlite3
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Concatenate, ParamSpec, TypeVar

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
from ._wake import FALLBACK as WAKE_FALLBACK
from ._wake import Listener, Notifier

log = logging.getLogger(__name__)

_SEQ_BITS = 24  # log.id = revision << 24 | position in the txn
_MAX_TXN_OPS = 1 << _SEQ_BITS
_IN_CHUNK = 500  # keys per "name IN (...)" statement
_IDX_CHUNK = 2000  # index entries per "name IN (...)" probe of idx (a bulk create probes 50k)
_EVENT_CHUNK = 5000  # log rows read per statement by watches
_LEASE_INTERVAL = 0.1  # seconds between checks for expired leases
_SYNCHRONOUS = ("off", "normal", "full", "extra")
DEFAULT_SYNCHRONOUS = "normal"
DEFAULT_HISTORY = 600.0  # seconds of revisions kept for watches (auto-compaction)
_COMPACT_STEP = 20_000  # revisions compacted per write transaction (the write lock is shared)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    current_revision INTEGER NOT NULL,
    compact_revision INTEGER NOT NULL,
    schema_version INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta VALUES (0, 1, 0, 2);
CREATE TABLE IF NOT EXISTS log (
    id INTEGER PRIMARY KEY,            -- revision << 24 | seq
    name TEXT NOT NULL,
    deleted INTEGER NOT NULL,          -- 1 for a tombstone
    create_revision INTEGER NOT NULL,
    version INTEGER NOT NULL,
    lease INTEGER NOT NULL,
    prev_id INTEGER,                   -- the row this one superseded
    value BLOB
);
CREATE TABLE IF NOT EXISTS kv (
    name TEXT PRIMARY KEY,
    log_id INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    version INTEGER NOT NULL,
    lease INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_by_lease ON kv (lease) WHERE lease != 0;
CREATE TABLE IF NOT EXISTS lease (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ttl REAL NOT NULL,
    expiry REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS lease_by_expiry ON lease (expiry);
""" + """;
CREATE TABLE IF NOT EXISTS idx (
    name TEXT PRIMARY KEY,
    rev INTEGER NOT NULL,              -- mod revision
    create_revision INTEGER NOT NULL,
    version INTEGER NOT NULL,
    lease INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_by_lease ON idx (lease) WHERE lease != 0;
CREATE TABLE IF NOT EXISTS idx_log (
    rev INTEGER PRIMARY KEY,           -- one row per txn that changed index entries
    changes TEXT NOT NULL              -- its entry events, see _idx_record
);
"""
SCHEMA_VERSION = 2  # 1: index entries in kv and log like every key (migrated on open)

#: Keys under this prefix written with an empty value are *index entries* (the registry's
#: secondary indexes, apis/_registry.py): kept in ``idx`` with one row per txn in ``idx_log``
#: for watches, never in ``log``/``kv``. Every other key (a valued one under it too) as before.
INDEX_PREFIX = "/index/"
_INDEX_END = "/index0"
# An index entry's event in ``idx_log.changes``: records joined by NUL, fields by \x01.
_REC, _FLD = "\x00", "\x01"
_IDX_SEQ = (1 << 24) - 1  # an idx_log event's position in its revision: after the log rows

# kv columns for a KeyValue without its value, and with it (joined to its log row).
_KV_META = "name, log_id, create_revision, version, lease"
_KV_ROW_VALUES = "k.name, l.value, k.create_revision, k.log_id >> 24, k.version, k.lease"
_KV_ROW_KEYS = "k.name, X'', k.create_revision, k.log_id >> 24, k.version, k.lease"
_IDX_ROW = "name, X'', create_revision, rev, version, lease"  # an index entry as a KeyValue row
_EVENT_COLS = (
    "l.id, l.name, l.deleted, l.create_revision, l.version, l.lease, l.value,"
    " p.id, p.create_revision, p.version, p.lease, p.value"
    " FROM log l LEFT JOIN log p ON l.deleted = 1 AND p.id = l.prev_id"
)

# (log_id, create_revision, version, lease, in idx) of a live key
_State = tuple[int, int, int, int, bool]


def _first(row: tuple) -> str:  # type: ignore[type-arg]
    return row[0]  # type: ignore[no-any-return]


def _prefix_end(prefix: str) -> str | None:
    """The smallest string above every string that starts with ``prefix`` (None: no bound)."""
    p = prefix
    while p:
        c = ord(p[-1]) + 1
        if c <= 0x10FFFF:
            if 0xD800 <= c <= 0xDFFF:  # surrogates cannot be encoded; skip them
                c = 0xE000
            return p[:-1] + chr(c)
        p = p[:-1]
    return None


@functools.lru_cache(maxsize=64)
def _in_sql(template: str, n: int) -> str:
    return template.format(",".join("?" * n))


def _chunks(seq: Sequence[str], n: int = _IN_CHUNK) -> Iterator[Sequence[str]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


_JSON_ESCAPED = bytes(range(32)) + b'"\\'  # what JSON escapes in a string (ensure_ascii=False)


def _json_strings(names: list[str]) -> str:
    """``json.dumps(names, ensure_ascii=False)``, joined directly when no name holds a
    character JSON escapes (index keys are percent-quoted values and object names): the
    JSON encoder takes ~2.8 µs per job for a bulk create's 5 entries per job, this ~1.6."""
    flat = "".join(names).encode("utf-8", "surrogatepass")
    if len(flat.translate(None, _JSON_ESCAPED)) != len(flat):
        return json.dumps(names, ensure_ascii=False)
    return '["' + '", "'.join(names) + '"]' if names else "[]"


def _compare_holds(c: Compare, st: _State | None, value: bytes | None) -> bool:
    a: int | bytes
    if c.target == "value":
        if st is None or value is None:
            return False  # as etcd: a value compare on a missing key always fails
        a = value
    elif st is None:
        a = 0
    elif c.target == "mod":
        a = st[0] >> _SEQ_BITS
    elif c.target == "create":
        a = st[1]
    elif c.target == "version":
        a = st[2]
    else:
        raise ValueError(f"unknown compare target {c.target!r}")
    b = c.value
    if type(a) is not type(b):
        raise TypeError(f"compare {c.target} of {c.key!r} with {type(b).__name__} {b!r}")
    if c.op == "==":
        return a == b
    if c.op == "!=":
        return a != b
    if c.op == "<":
        return a < b  # type: ignore[operator]
    if c.op == ">":
        return a > b  # type: ignore[operator]
    raise ValueError(f"unknown compare op {c.op!r}")


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _translated(fn: Callable[Concatenate[SQLiteStore, _P], _T]) -> Callable[Concatenate[SQLiteStore, _P], _T]:
    """SQLite's operational errors (locked past busy_timeout, I/O, not a database) → Unavailable."""

    @functools.wraps(fn)
    def wrapper(self: SQLiteStore, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return fn(self, *args, **kwargs)
        except sqlite3.ProgrammingError as e:
            if self._closed:
                raise StoreError(f"store {self.url} is closed") from e
            raise
        except sqlite3.IntegrityError:
            raise
        except sqlite3.DatabaseError as e:
            raise Unavailable(f"SQLite store {self.path}: {e}") from e

    return wrapper


class InvalidRequest(StoreError, ValueError):
    """A request the store refuses before running it (as etcd does): nothing was written."""


_KEY = operator.attrgetter("key")


def _check_branch(ops: Sequence[Op]) -> None:
    if len(ops) >= _MAX_TXN_OPS:
        raise InvalidRequest(f"a txn branch holds at most {_MAX_TXN_OPS - 1} ops, got {len(ops)}")
    keys = [op.key for op in ops if type(op) is not Get]
    if len(set(keys)) != len(keys):
        seen: set[str] = set()
        for key in keys:
            if key in seen:
                raise InvalidRequest(f"a txn may write a key only once, {key!r} is written twice")
            seen.add(key)


def _merged(
    events: list[tuple[int, str, Event]], more: list[tuple[int, str, Event]]
) -> list[tuple[int, str, Event]]:
    """Two lists of (position, key, event), each in position order, as one."""
    if not more:
        return events
    if not events:
        return more
    return list(heapq.merge(events, more, key=_first_int))


def _first_int(item: tuple[int, str, Event]) -> int:
    return item[0]


def _event(row: tuple) -> Event:  # type: ignore[type-arg]
    lid, name, deleted, cr, ver, lease, value, pid, pcr, pver, plse, pval = row
    rev = lid >> _SEQ_BITS
    if not deleted:
        return Event("PUT", KeyValue(name, value, cr, rev, ver, lease))
    prev = None if pid is None else KeyValue(name, pval, pcr, pid >> _SEQ_BITS, pver, plse)
    return Event("DELETE", KeyValue(name, b"", 0, rev, 0, 0), prev)


class SQLiteStore(Store):
    """The store contract on a SQLite file: ``SQLiteStore("sqlite:///abs/path/store.db")``."""

    def __init__(self, url: str, *, poll_interval: float = 0.001, wake: bool = True) -> None:
        """``poll_interval``: how often the watchers' poller asks SQLite for new writes when
        nothing wakes it; ``wake``: other processes' commits wake it (store/_wake.py; then it
        asks at most every 50 ms on its own), else it polls every ``poll_interval``."""
        if not url.startswith("sqlite://") or len(url) <= len("sqlite://"):
            raise Unavailable(f"not a SQLite store URL: {url!r} (expected sqlite:///PATH)")
        self.url = url
        raw_path, _, query = url[len("sqlite://") :].partition("?")
        self.path = os.path.abspath(raw_path)
        self.synchronous, self.history = self._options(query)
        parent = os.path.dirname(self.path)
        if not os.path.isdir(parent):
            raise Unavailable(f"cannot open SQLite store {self.path}: directory {parent} does not exist")
        self._poll_interval = poll_interval
        # Whether this process's own commits wake its watchers at once. A node agent sets it
        # False: its watches (the jobs bound to it, Apps, its BatchJob) never need its own job
        # writes soon, so its poller catches them up with the next other writer's wake-up (or
        # the WAKE_FALLBACK poll) instead of once per agent commit (issue 19, fifth round).
        self.wake_own_writes = True
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._write_mutex = threading.Lock()  # threads of this process queue here, not in SQLite
        self._closed = False
        # watch state: see watch() and _catch_up()
        self._watches: set[_SQLiteWatch] = set()
        self._wlock = threading.Lock()
        self._catchup_lock = threading.Lock()
        self._dispatched_id = 0  # every log row with id <= this was handed to the registered watches
        # A binary flag the poller sleeps on: held = nothing new; released = "look now".
        # (A raw lock wakes cheaper than a Condition; the poller wakes ~1000 times a second.)
        self._wake = threading.Lock()
        self._wake.acquire()
        # Across processes (store/_wake.py): our FIFO, made with the first watch, and the
        # writer's side that wakes every other watcher of the file after each commit.
        self._listener: Listener | None = None
        self._wake_across = wake
        self._notifier = Notifier(self.path)
        self._stop = False

        self._compact_marks: deque[tuple[float, int]] = deque()  # (monotonic time, revision) noted
        self._unwritable = False  # the poller's last write failed (full disk...): said once
        self._immutable = False  # opened as a read-only snapshot (a full disk, see _open)
        self._has_idx = False  # the file has schema 2's idx/idx_log (see _open)
        self._create_private()
        try:
            self._open()
        except (sqlite3.Error, StoreError) as e:
            if not self._snapshot_possible():
                self.close()
                if isinstance(e, Unavailable):
                    raise
                raise Unavailable(f"cannot open SQLite store {self.path}: {e}") from e
            # No process has the store open (no -wal) and SQLite cannot make its -shm: a full
            # disk. Read the file as it is, read-only, so that 'get' and 'describe' still work.
            self._drop_connections()
            self._immutable = True
            log.info("SQLite store %s: opened read-only (%s)", self.path, e)
            try:
                self._open()
            except (sqlite3.Error, StoreError) as e2:
                self.close()
                raise Unavailable(f"cannot open SQLite store {self.path}: {e2}") from e2
        self._poller = threading.Thread(
            target=self._run, name=f"sqlite-store-poller:{self.path}", daemon=True
        )
        self._poller.start()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.url!r})"

    @staticmethod
    def _options(query: str) -> tuple[str, float]:
        """(synchronous, history seconds) from the URL's query; an unknown option is refused."""
        opts = urllib.parse.parse_qs(query, keep_blank_values=True, strict_parsing=False)
        unknown = sorted(set(opts) - {"synchronous", "history"})
        if unknown:
            raise Unavailable(f"unknown SQLite store option {unknown[0]!r} (known: synchronous, history)")
        sync = opts.get("synchronous", [DEFAULT_SYNCHRONOUS])[-1].lower()
        if sync not in _SYNCHRONOUS:
            raise Unavailable(f"SQLite store option synchronous={sync!r}: expected one of {', '.join(_SYNCHRONOUS)}")
        try:
            history = float(opts.get("history", [DEFAULT_HISTORY])[-1])
        except ValueError:
            raise Unavailable(f"SQLite store option history={opts['history'][-1]!r}: expected seconds") from None
        if history < 0:
            raise Unavailable(f"SQLite store option history={history}: expected seconds >= 0")
        return sync, history

    def _create_private(self) -> None:
        """A new store file is made 0600 before SQLite opens it (its -wal/-shm take its mode)."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return
        except OSError as e:
            raise Unavailable(f"cannot create SQLite store {self.path}: {e.strerror}") from None
        os.close(fd)

    def _open(self) -> None:
        """Make the schema of a new file; an existing store is only read (nothing written, so a
        full disk does not stop reads)."""
        conn = self._conn()
        if not self._has_schema(conn):
            if self._immutable:
                raise Unavailable(f"cannot open SQLite store {self.path}: not a store (no schema)")
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only takes on a file with no tables yet
            conn.execute("PRAGMA journal_mode=WAL").fetchall()
            with self._writing() as c:
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        c.execute(stmt)
        elif not self._immutable and conn.execute("PRAGMA journal_mode").fetchall()[0][0] != "wal":
            conn.execute("PRAGMA journal_mode=WAL").fetchall()
        version = int(conn.execute("SELECT schema_version FROM meta").fetchall()[0][0])
        if version > SCHEMA_VERSION:
            raise Unavailable(f"SQLite store {self.path} has schema {version}, newer than this balsamctl's "
                              f"({SCHEMA_VERSION}): upgrade balsamctl")
        if version < SCHEMA_VERSION and not self._immutable:
            self._migrate()
            version = SCHEMA_VERSION
        self._has_idx = version >= 2
        if self._immutable:
            return
        try:
            self._reap_expired()  # a CLI that only lists must not see keys of expired leases
        except (sqlite3.Error, Unavailable) as e:
            # A full disk: reads still work; the next writer (or our poller) reaps.
            log.info("SQLite store %s: cannot reap expired leases now (%s)", self.path, e)

    def _migrate(self) -> None:
        """Schema 1 → 2, once, by whichever process opens the file first: index entries move
        from kv (and their history from the log) to ``idx``. The log's history is cut at the
        current revision (watches from before it get Compacted and relist)."""
        try:
            with self._writing() as c:
                if int(c.execute("SELECT schema_version FROM meta").fetchall()[0][0]) >= SCHEMA_VERSION:
                    return  # another process did it meanwhile
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        c.execute(stmt)
                rng = (INDEX_PREFIX, _INDEX_END)
                c.execute(
                    "INSERT INTO idx SELECT k.name, k.log_id >> 24, k.create_revision, k.version, k.lease"
                    " FROM kv k CROSS JOIN log l ON l.id = k.log_id"
                    " WHERE k.name >= ? AND k.name < ? AND length(l.value) = 0 AND instr(k.name, char(0)) = 0",
                    rng,
                )
                c.execute("DELETE FROM log WHERE name >= ? AND name < ? AND name IN (SELECT name FROM idx)", rng)
                c.execute("DELETE FROM kv WHERE name >= ? AND name < ? AND name IN (SELECT name FROM idx)", rng)
                c.execute(
                    "UPDATE meta SET schema_version = ?, compact_revision = MAX(compact_revision, current_revision)",
                    (SCHEMA_VERSION,),
                )
        except (sqlite3.Error, Unavailable) as e:
            raise Unavailable(
                f"cannot migrate SQLite store {self.path} to schema {SCHEMA_VERSION}: {e} "
                "(free the disk and open it again; it is migrated on its first open)"
            ) from e

    def _snapshot_possible(self) -> bool:
        """A store file exists and holds everything committed (no -wal beside it, or an empty
        one: what our failed open just made)."""
        wal = self.path + "-wal"
        return (
            not self._immutable
            and os.path.isfile(self.path)
            and os.path.getsize(self.path) > 0
            and (not os.path.exists(wal) or os.path.getsize(wal) == 0)
        )

    def _drop_connections(self) -> None:
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()

    @staticmethod
    def _has_schema(conn: sqlite3.Connection) -> bool:
        """True when the file already holds a store (then opening it writes nothing)."""
        try:
            return bool(conn.execute("SELECT schema_version FROM meta").fetchall())
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return False
            raise

    # --- connections and transactions ---------------------------------------------

    def _conn(self, writer: bool = False) -> sqlite3.Connection:
        """This thread's connection. Writers get their own with busy_timeout 0: SQLite's
        busy handler sleeps 1, 2, 5, 10... ms when another process holds the write lock,
        which costs milliseconds per write between a controller and its node agents;
        ``_writing`` retries with sub-millisecond waits instead."""
        if self._closed:
            raise StoreError(f"store {self.url} is closed")
        attr = "wconn" if writer else "conn"
        conn: sqlite3.Connection | None = getattr(self._local, attr, None)
        if conn is not None:
            return conn
        if writer and self._immutable:
            raise Unavailable(f"SQLite store {self.path} is open read-only (the disk was full when it was opened)")
        try:
            if self._immutable:
                target, uri = f"file:///{urllib.parse.quote(self.path.lstrip('/'))}?immutable=1", True
            else:
                target, uri = self.path, False
            conn = sqlite3.connect(
                target, timeout=30.0, isolation_level=None, check_same_thread=False, cached_statements=256, uri=uri
            )
            conn.execute(f"PRAGMA busy_timeout={0 if writer else 30000}")
            conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            conn.execute("PRAGMA cache_size=-65536")
            conn.execute("PRAGMA temp_store=MEMORY")
        except sqlite3.Error as e:
            raise Unavailable(f"cannot open SQLite store {self.path}: {e}") from e
        with self._conns_lock:
            if self._closed:
                conn.close()
                raise StoreError(f"store {self.url} is closed")
            self._conns.append(conn)
        setattr(self._local, attr, conn)
        return conn

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE); commits on success, rolls back on error."""
        conn = self._conn(writer=True)
        with self._write_mutex:
            self._retry_busy(conn, "BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            try:
                self._retry_busy(conn, "COMMIT")
            except (sqlite3.Error, Unavailable) as e:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise Unavailable(f"SQLite store {self.path}: commit failed: {e}") from e
        if self._watches and self.wake_own_writes:
            self._poke()
        self._notifier.notify()

    def _retry_busy(self, conn: sqlite3.Connection, sql: str, patience: float = 30.0) -> None:
        """Run ``sql``, retrying while another process holds the lock: 50 µs doubling to 1 ms."""
        delay, deadline = 0.00005, time.monotonic() + patience
        while True:
            try:
                conn.execute(sql)
                return
            except sqlite3.OperationalError as e:
                msg = str(e)
                if ("locked" not in msg and "busy" not in msg) or time.monotonic() > deadline:
                    raise Unavailable(f"SQLite store {self.path}: {e}") from e
            time.sleep(delay)
            delay = min(delay * 2, 0.001)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every statement inside sees one snapshot."""
        conn = self._conn()
        try:
            conn.execute("BEGIN")
        except sqlite3.OperationalError as e:
            raise Unavailable(f"SQLite store {self.path}: {e}") from e
        try:
            yield conn
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("COMMIT")

    @staticmethod
    def _revisions(conn: sqlite3.Connection) -> tuple[int, int]:
        row = conn.execute("SELECT current_revision, compact_revision FROM meta").fetchall()
        return row[0][0], row[0][1]

    def _states(self, conn: sqlite3.Connection, keys: Sequence[str]) -> dict[str, _State]:
        """The live state of each key that exists; an index entry's (in ``idx``) has its
        log id as ``rev << 24 | _IDX_SEQ`` and ``True`` as its fifth field."""
        out: dict[str, _State] = {}
        ordered = sorted(set(keys))
        entries: list[str] = []
        if self._has_idx:
            # Keys under the index prefix live in idx, but for the few valued ones (a kind's
            # index schema): one short range read of kv instead of a kv probe per entry.
            entries = [k for k in ordered if k.startswith(INDEX_PREFIX)]
            if entries:
                valued = {r[0] for r in conn.execute(
                    "SELECT name FROM kv WHERE name >= ? AND name < ?", (INDEX_PREFIX, _INDEX_END)).fetchall()}
                if len(entries) == len(ordered) and not valued:
                    ordered = []
                else:
                    plain = [k for k in ordered if not k.startswith(INDEX_PREFIX) or k in valued]
                    entries = [k for k in entries if k not in valued]
                    ordered = plain
        # In key order: each IN (...) list then probes neighbouring b-tree pages.
        for chunk in _chunks(ordered):
            sql = _in_sql(f"SELECT {_KV_META} FROM kv WHERE name IN ({{}})", len(chunk))
            for name, lid, cr, ver, lease in conn.execute(sql, chunk).fetchall():
                out[name] = (lid, cr, ver, lease, False)
        for chunk in _chunks(entries, _IDX_CHUNK):
            sql = _in_sql("SELECT name, rev, create_revision, version, lease FROM idx WHERE name IN ({})", len(chunk))
            for name, rev, cr, ver, lease in conn.execute(sql, chunk).fetchall():
                out[name] = (rev << _SEQ_BITS | _IDX_SEQ, cr, ver, lease, True)
        return out

    @staticmethod
    def _values(conn: sqlite3.Connection, log_ids: Sequence[int]) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        ids = list(log_ids)
        for i in range(0, len(ids), _IN_CHUNK):
            chunk = ids[i : i + _IN_CHUNK]
            sql = _in_sql("SELECT id, value FROM log WHERE id IN ({})", len(chunk))
            out.update(conn.execute(sql, chunk).fetchall())
        return out

    # --- reads ----------------------------------------------------------------------

    @_translated
    def get(self, key: str) -> KeyValue | None:
        rows = (
            self._conn()
            .execute(
                f"SELECT {_KV_ROW_VALUES} FROM kv k CROSS JOIN log l ON l.id = k.log_id WHERE k.name = ?",
                (key,),
            )
            .fetchall()
        )
        if rows:
            return KeyValue(*rows[0])
        if self._has_idx and key.startswith(INDEX_PREFIX):
            rows = self._conn().execute(f"SELECT {_IDX_ROW} FROM idx WHERE name = ?", (key,)).fetchall()
            if rows:
                return KeyValue(*rows[0])
        return None

    @_translated
    def get_many(self, keys: Sequence[str]) -> list[KeyValue | None]:
        found: dict[str, KeyValue] = {}
        distinct = list(dict.fromkeys(keys))
        with self._reading() as conn:
            for chunk in _chunks(distinct):
                sql = _in_sql(
                    f"SELECT {_KV_ROW_VALUES} FROM kv k CROSS JOIN log l ON l.id = k.log_id"
                    " WHERE k.name IN ({})",
                    len(chunk),
                )
                for row in conn.execute(sql, chunk).fetchall():
                    found[row[0]] = KeyValue(*row)
            if self._has_idx:
                entries = [k for k in distinct if k.startswith(INDEX_PREFIX) and k not in found]
                for chunk in _chunks(entries):
                    sql = _in_sql(f"SELECT {_IDX_ROW} FROM idx WHERE name IN ({{}})", len(chunk))
                    for row in conn.execute(sql, chunk).fetchall():
                        found[row[0]] = KeyValue(*row)
        return [found.get(k) for k in keys]

    @_translated
    def range(
        self,
        prefix: str,
        limit: int = 0,
        start_after: str | None = None,
        keys_only: bool = False,
    ) -> RangeResult:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        where, params = self._key_range(prefix, start_after)
        cols = _KV_ROW_KEYS if keys_only else _KV_ROW_VALUES
        join = "" if keys_only else " CROSS JOIN log l ON l.id = k.log_id"
        sql = f"SELECT {cols} FROM kv k{join} WHERE {where} ORDER BY k.name LIMIT ?"
        lim = limit + 1 if limit else -1
        with self._reading() as conn:
            rev, _ = self._revisions(conn)
            rows = conn.execute(sql, (*params, lim)).fetchall()
            if self._overlaps_idx(prefix):
                # Index entries from their own table, merged in key order.
                iwhere, iparams = self._key_range(prefix, start_after, "name")
                irows = conn.execute(
                    f"SELECT {_IDX_ROW} FROM idx WHERE {iwhere} ORDER BY name LIMIT ?", (*iparams, lim)
                ).fetchall()
                if irows:
                    rows = list(heapq.merge(rows, irows, key=_first)) if rows else irows
        more = bool(limit) and len(rows) > limit
        if more:
            del rows[limit:]
        kvs = [KeyValue(*r) for r in rows]
        # Counting the rest of a cut-short range costs a scan per page; -1 says "not computed".
        return RangeResult(kvs=kvs, revision=rev, more=more, count=-1 if more else len(kvs))

    @staticmethod
    def _key_range(prefix: str, start_after: str | None, col: str = "k.name") -> tuple[str, list[str]]:
        """SQL condition on ``col`` for the keys under ``prefix`` (after ``start_after``)."""
        conds: list[str] = []
        params: list[str] = []
        if start_after is not None and start_after >= prefix:
            conds.append(f"{col} > ?")
            params.append(start_after)
        else:
            conds.append(f"{col} >= ?")
            params.append(prefix)
        end = _prefix_end(prefix)
        if end is not None:
            conds.append(f"{col} < ?")
            params.append(end)
        return " AND ".join(conds), params

    def _overlaps_idx(self, prefix: str) -> bool:
        """Whether keys under ``prefix`` may be index entries (kept in ``idx``)."""
        return self._has_idx and (prefix.startswith(INDEX_PREFIX) or INDEX_PREFIX.startswith(prefix))

    @_translated
    def count(self, prefix: str) -> int:
        where, params = self._key_range(prefix, None)
        sql = f"SELECT COUNT(*) FROM kv k WHERE {where}"
        if self._overlaps_idx(prefix):
            iwhere, _ = self._key_range(prefix, None, "name")
            sql = f"SELECT ({sql}) + (SELECT COUNT(*) FROM idx WHERE {iwhere})"
            params = params * 2
        rows = self._conn().execute(sql, params).fetchall()
        return int(rows[0][0])

    @_translated
    def intersect(self, prefixes: Sequence[str]) -> list[str]:
        """One statement: the keys of the smallest prefix's range that exist under every other
        prefix, found by point lookups in ``kv``'s b-tree (10^6 jobs, 3 index entries ANDed:
        0.2 s, where reading every entry of each took 3 s)."""
        distinct = list(dict.fromkeys(prefixes))
        if not distinct:
            return []
        with self._reading() as conn:
            sized = []
            for p in distinct:
                sized.append((self._count_in(conn, p), p))
            sized.sort()
            if sized[0][0] == 0:
                return []
            base = sized[0][1]
            start = len(base) + 1  # substr() counts characters from 1, as len() does
            params: list[str] = []
            exists = ""
            for i, (_, p) in enumerate(sized[1:]):
                # An index entry is in idx (or, valued or from before schema 2, in kv).
                probe = f"EXISTS (SELECT 1 FROM kv x{i} WHERE x{i}.name = ? || substr(k.name, {start}))"
                params.append(p)
                if self._overlaps_idx(p):
                    probe = (f"(EXISTS (SELECT 1 FROM idx y{i} WHERE y{i}.name = ? || substr(k.name, {start}))"
                             f" OR {probe})")
                    params.insert(len(params) - 1, p)
                exists += f" AND {probe}"
            where, wparams = self._key_range(base, None)
            rows = conn.execute(
                f"SELECT substr(k.name, {start}) FROM kv k WHERE {where}{exists}", (*wparams, *params)
            ).fetchall()
            if self._overlaps_idx(base):
                where, wparams = self._key_range(base, None)
                rows += conn.execute(
                    f"SELECT substr(k.name, {start}) FROM idx k WHERE {where}{exists}", (*wparams, *params)
                ).fetchall()
        return sorted(r[0] for r in rows)

    def _count_in(self, conn: sqlite3.Connection, prefix: str) -> int:
        where, params = self._key_range(prefix, None)
        n = int(conn.execute(f"SELECT COUNT(*) FROM kv k WHERE {where}", params).fetchall()[0][0])
        if self._overlaps_idx(prefix):
            n += int(conn.execute(f"SELECT COUNT(*) FROM idx k WHERE {where}", params).fetchall()[0][0])
        return n

    @_translated
    def current_revision(self) -> int:
        return self._revisions(self._conn())[0]

    # --- writes ---------------------------------------------------------------------

    @_translated
    def put(self, key: str, value: bytes, expect_revision: int | None = None, lease: int = 0) -> int:
        compares = [] if expect_revision is None else [Compare.mod(key, "==", expect_revision)]
        with self._writing() as conn:
            res = self._txn_in(conn, compares, [Put(key, value, lease)], [Get(key)])
        if not res.succeeded:
            current = res.responses[0]
            assert current is None or isinstance(current, KeyValue)
            raise Conflict(key, expect_revision or 0, current)
        return res.revision

    @_translated
    def delete(self, key: str, expect_revision: int | None = None) -> int | None:
        compares = [] if expect_revision is None else [Compare.mod(key, "==", expect_revision)]
        with self._writing() as conn:
            res = self._txn_in(conn, compares, [Delete(key)], [Get(key)])
        if not res.succeeded:
            current = res.responses[0]
            assert current is None or isinstance(current, KeyValue)
            raise Conflict(key, expect_revision or 0, current)
        return res.revision if res.responses[0] else None

    @_translated
    def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        _check_branch(success)
        _check_branch(failure)
        with self._writing() as conn:
            return self._txn_in(conn, compares, success, failure)

    @_translated
    def txn_with_entries(self, compares: Sequence[Compare], success: Sequence[Op], entries: Sequence[str],
                         lease: int = 0) -> TxnResult:
        if not entries:
            return self.txn(compares, success)
        _check_branch(success)
        if len(success) + len(entries) >= _MAX_TXN_OPS:
            raise InvalidRequest(f"a txn branch holds at most {_MAX_TXN_OPS - 1} ops, got {len(success) + len(entries)}")
        given = dict.fromkeys(entries, lease)  # one C pass, which also finds a key given twice
        if len(given) != len(entries) or not given.keys().isdisjoint(map(_KEY, success)):
            _check_branch([*success, *(Put(k, b"", lease) for k in entries)])  # raises, naming the key
        with self._writing() as conn:
            return self._txn_in(conn, compares, success, (), given)

    def _txn_in(
        self,
        conn: sqlite3.Connection,
        compares: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op],
        entries: dict[str, int] | None = None,
    ) -> TxnResult:
        """The txn on ``conn`` (a write transaction). ``entries`` (``txn_with_entries``): keys
        (none in ``success``) put with an empty value under their lease after ``success`` when
        the compares hold, without responses."""
        cur, _ = self._revisions(conn)
        # Compares: the state of every compared key (absent ones are known absent too).
        ckeys = [c.key for c in compares]
        state = self._states(conn, ckeys) if ckeys else {}
        known = set(ckeys)
        cvalues: dict[int, bytes] = {}
        if any(c.target == "value" for c in compares):
            cvalues = self._values(conn, [state[c.key][0] for c in compares if c.key in state and not state[c.key][4]])
        ok = True
        for c in compares:
            st = state.get(c.key)
            if st is None and c.value == 0 and c.op == "==" and c.target != "value" and type(c.value) is int:
                continue  # "absent" (a create's compare): a missing key's revisions are 0
            if not _compare_holds(c, st, (b"" if st[4] else cvalues.get(st[0])) if st else None):
                ok = False
                break
        ops = success if ok else failure
        has_idx = self._has_idx
        gets = Get in set(map(type, ops))  # a Get may read what this txn wrote (``written``)
        extra: dict[str, int] = {}  # entries given as keys (txn_with_entries), when they are written
        valued_keys: set[str] | None = None  # _valued_entries, read at most once per txn
        if ok and entries:
            extra = entries
            # Their own path only where every one is an index entry (a key between the index
            # prefix and its end, without the event separator) of a txn without Gets; else
            # they are Puts like any other (the same result, slower).
            if (not has_idx or gets or min(extra) < INDEX_PREFIX or max(extra) >= _INDEX_END
                    or _REC in "".join(extra) or not (valued_keys := self._valued_entries(conn)).isdisjoint(extra)):
                expanded = [*ops, *(Put(k, b"", lease) for k, lease in extra.items())]
                res = self._txn_in(conn, compares, expanded, ())
                return TxnResult(res.succeeded, res.revision, res.responses[:len(ops)])
        # Index entries put by a txn without Gets (a bulk create's) need no state read first:
        # they are inserted as new, and only those that existed are looked at (_put_entries).
        deferred: dict[str, int] = {}  # entry -> lease
        # The ops the loop below looks at, and their positions (the others are deferred puts).
        rest: Sequence[Op] = ops
        slots: list[int] = []
        if has_idx and not gets:
            unknown = []
            rest = []
            for i, op in enumerate(ops):
                key = op.key
                if type(op) is Put and not op.value and key.startswith(INDEX_PREFIX) and _REC not in key:
                    deferred[key] = op.lease
                    continue
                rest.append(op)
                slots.append(i)
                if key not in known:
                    unknown.append(key)
            if deferred:
                if valued_keys is None:
                    valued_keys = self._valued_entries(conn)
                valued = valued_keys.intersection(deferred)
                for key in valued:
                    del deferred[key]  # in kv now: the general path
                    unknown.append(key)
                if valued:
                    slots = [i for i, op in enumerate(ops) if op.key not in deferred]
                    rest = [ops[i] for i in slots]
            deferred.update(extra)
        else:
            unknown = [op.key for op in ops if op.key not in known]
        if unknown:
            state.update(self._states(conn, unknown))

        rev = cur + 1
        base = rev << _SEQ_BITS
        seq = 0
        log_rows: list[tuple[int, str, int, int, int, int, int | None, bytes | None]] = []
        new_rows: list[tuple[int, str, int, int, bytearray]] = []  # puts of keys that did not exist
        idx_rows: list[tuple[str, int, int, int, int]] = []  # index entries put
        idx_recs: list[str] = []  # their events, and those of entries deleted (idx_log)
        idx_gone: list[str] = []  # entries deleted, or now valued keys (kv)
        kv_gone: list[str] = []  # keys of kv that are index entries now (no tombstone row)
        deleted = False
        leases: set[int] = set()
        responses: list[KeyValue | bool | None] = []
        # key -> (deleted, create_revision, version, lease, value) as this txn wrote it, for a
        # later Get of this txn
        written: dict[str, tuple[int, int, int, int, bytes | None]] = {}
        pending_gets: list[tuple[int, str, _State]] = []
        for op in rest:
            t = type(op)
            key = op.key
            if t is Put:
                assert isinstance(op, Put)
                st = state.get(key)
                cr, ver = (rev, 1) if st is None else (st[1], st[2] + 1)
                lease = op.lease
                if has_idx and not op.value and key.startswith(INDEX_PREFIX) and _REC not in key:
                    idx_rows.append((key, rev, cr, ver, lease))
                    idx_recs.append(key if cr == rev and ver == 1 and not lease
                                    else f"{key}{_FLD}P{_FLD}{cr}{_FLD}{ver}{_FLD}{lease}")
                    if st is not None and not st[4]:
                        kv_gone.append(key)
                    if gets:
                        written[key] = (0, cr, ver, lease, b"")
                elif st is None:
                    # A new key (every put of a create): fewer columns bound, and the value as a
                    # bytearray, which sqlite3 binds without its adapter look-up (two failed
                    # attribute look-ups per bytes or None parameter: ~0.5 µs per row).
                    new_rows.append((base | seq, key, rev, lease, bytearray(op.value)))
                    seq += 1
                    if gets:
                        written[key] = (0, cr, ver, lease, op.value)
                else:
                    log_rows.append((base | seq, key, 0, cr, ver, lease, None if st[4] else st[0], op.value))
                    seq += 1
                    if st[4]:
                        idx_gone.append(key)
                    if gets:
                        written[key] = (0, cr, ver, lease, op.value)
                if lease:
                    leases.add(lease)
                responses.append(None)
            elif t is Delete:
                st = state.get(key)
                if st is None:
                    responses.append(False)
                else:
                    if st[4]:
                        idx_gone.append(key)
                        idx_recs.append(f"{key}{_FLD}D{_FLD}{st[1]}{_FLD}{st[2]}{_FLD}{st[3]}{_FLD}{st[0] >> _SEQ_BITS}")
                    else:
                        log_rows.append((base | seq, key, 1, 0, 0, 0, st[0], None))
                        seq += 1
                        deleted = True
                    written[key] = (1, 0, 0, 0, None)
                    responses.append(True)
            elif t is Get:
                if key in written:
                    gone, cr, ver, lease, value = written[key]
                    responses.append(None if gone else KeyValue(key, value or b"", cr, rev, ver, lease))
                elif (st := state.get(key)) is None:
                    responses.append(None)
                elif st[4]:
                    responses.append(KeyValue(key, b"", st[1], st[0] >> _SEQ_BITS, st[2], st[3]))
                else:
                    pending_gets.append((len(responses), key, st))
                    responses.append(None)
            else:
                raise TypeError(f"not a txn op: {op!r}")
        if pending_gets:
            vals = self._values(conn, [st[0] for _, _, st in pending_gets])
            for i, key, (lid, cr, ver, lease, _) in pending_gets:
                responses[i] = KeyValue(key, vals[lid], cr, lid >> _SEQ_BITS, ver, lease)
        if deferred:
            if len(responses) != len(ops):
                # The deferred puts' responses (None, as every put's) around the others'.
                full: list[KeyValue | bool | None] = [None] * len(ops)
                for i, r in zip(slots, responses, strict=True):
                    full[i] = r
                responses = full
            leases.update(set(deferred.values()))
            leases.discard(0)
        if not log_rows and not new_rows and not idx_recs and not deferred:
            return TxnResult(ok, cur, responses)
        if leases:
            have = {
                r[0]
                for r in conn.execute(
                    _in_sql("SELECT id FROM lease WHERE id IN ({})", len(leases)), list(leases)
                ).fetchall()
            }
            if missing := leases - have:
                raise LeaseNotFound(f"lease {min(missing)} not found")
        if new_rows:
            conn.executemany("INSERT INTO log (id, name, deleted, create_revision, version, lease, value)"
                             " VALUES (?, ?, 0, ?, 1, ?, ?)", new_rows)
        if log_rows:
            conn.executemany("INSERT INTO log VALUES (?,?,?,?,?,?,?,?)", log_rows)
        if log_rows or new_rows:
            # kv follows from the rows just written (cheaper than binding every row twice).
            span = (base, base | seq)
            conn.execute(
                "INSERT OR REPLACE INTO kv SELECT name, id, create_revision, version, lease FROM log"
                " WHERE id >= ? AND id < ? AND deleted = 0 ORDER BY name",
                span,
            )
            if deleted:
                conn.execute(
                    "DELETE FROM kv WHERE name IN (SELECT name FROM log WHERE id >= ? AND id < ? AND deleted = 1)",
                    span,
                )
        if idx_gone:
            conn.executemany("DELETE FROM idx WHERE name = ?", [(k,) for k in idx_gone])
        if kv_gone:
            conn.executemany("DELETE FROM kv WHERE name = ?", [(k,) for k in kv_gone])
        if idx_rows:
            idx_rows.sort()  # in key order: one walk along the b-tree's pages
            conn.executemany("INSERT OR REPLACE INTO idx VALUES (?,?,?,?,?)", idx_rows)
        if deferred:
            self._put_entries(conn, rev, deferred, idx_recs)
        if idx_recs:
            conn.execute("INSERT INTO idx_log VALUES (?, ?)", (rev, _REC.join(idx_recs)))
        conn.execute("UPDATE meta SET current_revision = ?", (rev,))
        return TxnResult(ok, rev, responses)

    @staticmethod
    def _valued_entries(conn: sqlite3.Connection) -> set[str]:
        """Keys under the index prefix that kv holds (valued ones: a kind's index schema)."""
        return {r[0] for r in conn.execute(
            "SELECT name FROM kv WHERE name >= ? AND name < ?", (INDEX_PREFIX, _INDEX_END)).fetchall()}

    @staticmethod
    def _put_entries(conn: sqlite3.Connection, rev: int, entries: dict[str, int], recs: list[str]) -> None:
        """Put index entries whose state was not read: all are inserted as new in one statement
        (SQLite parses the names' JSON array); when fewer rows went in than were given, the
        ones that existed are read and updated as re-puts (create revision kept, version + 1).
        Their events are added to ``recs``."""
        # In key order, so each insert lands beside the last one. Python's sort, not SQLite's
        # ORDER BY: the registry hands a bulk create's entries over grouped by index value,
        # names ascending, i.e. sorted or nearly, which Python's sort sees in one pass (SQLite's
        # sorter does the whole n log n: 7.5 -> 4.8 µs per job for 5 entries, raw model).
        names = sorted(entries)
        leased = any(entries.values())
        if leased:
            doc = json.dumps([[k, entries[k]] for k in names], ensure_ascii=False)
            sql = "INSERT OR IGNORE INTO idx SELECT value ->> 0, ?1, ?1, 1, value ->> 1 FROM json_each(?2)"
        else:
            doc = _json_strings(names)
            sql = "INSERT OR IGNORE INTO idx SELECT value, ?1, ?1, 1, 0 FROM json_each(?2)"
        inserted = conn.execute(sql, (rev, doc)).rowcount
        if inserted == len(names):
            recs.extend(names if not leased else
                        [k if not entries[k] else f"{k}{_FLD}P{_FLD}{rev}{_FLD}1{_FLD}{entries[k]}" for k in names])
            return
        names_doc = doc if not leased else json.dumps(names, ensure_ascii=False)
        existed = {r[0]: r[1:] for r in conn.execute(
            "SELECT name, create_revision, version FROM idx WHERE name IN (SELECT value FROM json_each(?))"
            " AND rev != ?", (names_doc, rev)).fetchall()}
        updates = []
        for k in names:
            lease = entries[k]
            if k in existed:
                cr, ver = existed[k]
                updates.append((rev, ver + 1, lease, k))
                recs.append(f"{k}{_FLD}P{_FLD}{cr}{_FLD}{ver + 1}{_FLD}{lease}")
            else:
                recs.append(k if not lease else f"{k}{_FLD}P{_FLD}{rev}{_FLD}1{_FLD}{lease}")
        conn.executemany("UPDATE idx SET rev = ?, version = ?, lease = ? WHERE name = ?", updates)

    # --- leases ---------------------------------------------------------------------

    @_translated
    def lease_grant(self, ttl: float) -> int:
        if ttl <= 0:
            raise ValueError(f"lease TTL must be > 0, got {ttl}")
        with self._writing() as conn:
            cur = conn.execute(
                "INSERT INTO lease (ttl, expiry) VALUES (?, ?)", (float(ttl), time.time() + ttl)
            )
            lease_id = cur.lastrowid
        assert lease_id is not None
        return lease_id

    @_translated
    def lease_keepalive(self, lease_id: int) -> float:
        with self._writing() as conn:
            rows = conn.execute("SELECT ttl, expiry FROM lease WHERE id = ?", (lease_id,)).fetchall()
            now = time.time()
            if rows and rows[0][1] >= now:
                ttl = float(rows[0][0])
                conn.execute("UPDATE lease SET expiry = ? WHERE id = ?", (now + ttl, lease_id))
                return ttl
            if rows:  # expired, not reaped yet: reap it now
                self._revoke_in(conn, lease_id)
        raise LeaseNotFound(f"lease {lease_id} not found (expired or revoked)")

    @_translated
    def lease_revoke(self, lease_id: int) -> None:
        with self._writing() as conn:
            if not self._revoke_in(conn, lease_id):
                raise LeaseNotFound(f"lease {lease_id} not found")

    def _revoke_in(self, conn: sqlite3.Connection, lease_id: int) -> bool:
        """Delete a lease and its keys (one revision, if it had keys). False if no such lease."""
        if not conn.execute("DELETE FROM lease WHERE id = ?", (lease_id,)).rowcount:
            return False
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM kv WHERE lease = ? AND lease != 0 ORDER BY name", (lease_id,)
            ).fetchall()
        ]
        if self._has_idx:
            names += [r[0] for r in conn.execute(
                "SELECT name FROM idx WHERE lease = ? AND lease != 0 ORDER BY name", (lease_id,)).fetchall()]
        if names:
            self._txn_in(conn, (), [Delete(n) for n in names], ())
        return True

    def _renew_leases(self) -> None:
        """After writes failed (a full disk), give every lease its TTL again from now, as
        etcd does when a new leader takes over: no holder could send a keepalive while
        nothing could be written, so an outage must not expire the leases of live holders."""
        with self._writing() as conn:
            conn.execute("UPDATE lease SET expiry = MAX(expiry, ? + ttl)", (time.time(),))

    def _reap_expired(self) -> None:
        now = time.time()
        conn = self._conn()
        if not conn.execute("SELECT 1 FROM lease WHERE expiry < ? LIMIT 1", (now,)).fetchall():
            return
        with self._writing() as conn:
            for (lease_id,) in conn.execute("SELECT id FROM lease WHERE expiry < ?", (now,)).fetchall():
                self._revoke_in(conn, lease_id)

    # --- maintenance ----------------------------------------------------------------

    @_translated
    def compact(self, revision: int) -> None:
        if self._watches:  # let this process's watches take what they need first
            self._catch_up(self._conn())
        with self._writing() as conn:
            cur, done = self._revisions(conn)
            if revision > cur:
                raise InvalidRequest(f"cannot compact to revision {revision}: the store is at {cur}")
            if revision <= done:
                return
            lo, hi = (done + 1) << _SEQ_BITS, (revision + 1) << _SEQ_BITS
            # A row goes when a later write at or below ``revision`` superseded it, and so
            # does a tombstone at or below it; what remains at or below is the state at
            # ``revision``, which kv and later events' ``prev`` still need.
            conn.execute(
                "DELETE FROM log WHERE id IN"
                " (SELECT prev_id FROM log WHERE id >= ? AND id < ? AND prev_id IS NOT NULL)",
                (lo, hi),
            )
            conn.execute("DELETE FROM log WHERE id >= ? AND id < ? AND deleted = 1", (lo, hi))
            if self._has_idx:  # index entries keep no history: idx holds their state
                conn.execute("DELETE FROM idx_log WHERE rev >= ? AND rev <= ?", (done + 1, revision))
            conn.execute("UPDATE meta SET compact_revision = ?", (revision,))

    def _auto_compact(self) -> None:
        """Note the revision every history/10 s; compact to the one noted ``history`` s ago."""
        if self.history <= 0:
            return
        now = time.monotonic()
        marks = self._compact_marks
        if not marks or now - marks[-1][0] >= self.history / 10:
            marks.append((now, self.current_revision()))
        target = 0
        while marks and now - marks[0][0] >= self.history:
            target = marks.popleft()[1]
        if target:
            self.compact_to(target)

    @_translated
    def compact_to(self, revision: int) -> int:
        """Compact to ``revision`` in steps of at most _COMPACT_STEP revisions per write
        (writers wait for one step, not for the whole backlog), then give freed pages back
        when more than a quarter of the file is free. Returns the compacted revision."""
        conn = self._conn()
        done = self._revisions(conn)[1]
        while done < revision:
            step = min(revision, done + _COMPACT_STEP)
            self.compact(step)
            done = step
        pages, free = (conn.execute(f"PRAGMA {p}").fetchall()[0][0] for p in ("page_count", "freelist_count"))
        if free * 4 > pages:  # a no-op on files made before auto_vacuum=INCREMENTAL
            with self._writing() as c:
                c.execute(f"PRAGMA incremental_vacuum({int(free)})").fetchall()
        return done

    def close(self) -> None:
        self._stop = True
        self._poke()
        poller = getattr(self, "_poller", None)
        if poller is not None and poller is not threading.current_thread():
            poller.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
        self._notifier.close()
        with self._wlock:
            watches = list(self._watches)
        for w in watches:
            w.close()
        with self._conns_lock:
            self._closed = True
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    # --- watch ----------------------------------------------------------------------

    @_translated
    def watch(self, prefix: str, start_revision: int | None = None, *, prev_values: bool = True) -> Watch:
        # prev_values: SQLite's watch has the previous values at hand anyway; always given.
        conn = self._conn()
        cur, compacted = self._revisions(conn)
        start = cur + 1 if start_revision is None or start_revision <= 0 else start_revision
        if start <= compacted:
            raise Compacted(start, compacted)
        w = _SQLiteWatch(self, prefix, start)
        # Not during a catch-up: it reads only the prefixes watched when it began.
        with self._catchup_lock, self._wlock:
            if not self._watches:
                # Nothing was dispatched while no watch was open: start from now.
                cur, _ = self._revisions(conn)
                self._dispatched_id = max(self._dispatched_id, ((cur + 1) << _SEQ_BITS) - 1)
            # Rows up to _dispatched_id the watch replays itself; later ones come from the poller.
            w.live_from_id = max(self._dispatched_id, (start << _SEQ_BITS) - 1)
            self._watches.add(w)
        if self._listener is None and self._wake_across and not self._immutable:
            try:
                self._listener = Listener(self.path)
                self._notifier.set_own(self._listener)
            except OSError as e:  # a read-only directory...: the poller asks SQLite every millisecond
                log.debug("SQLite store %s: no wake-ups across processes (%s)", self.path, e)
        self._poke()
        return w

    def _unregister(self, w: _SQLiteWatch) -> None:
        with self._wlock:
            self._watches.discard(w)

    def _poke(self) -> None:
        with contextlib.suppress(RuntimeError):  # already released: a poke is pending
            self._wake.release()
        listener = self._listener
        if listener is not None:
            listener.poke()

    def _run(self) -> None:
        last_version = -1
        now = time.monotonic()
        next_reap = now + _LEASE_INTERVAL
        last_change = now
        while True:
            listener = self._listener
            if not self._watches:
                interval = _LEASE_INTERVAL
            elif listener is not None:
                # writers wake us (store/_wake.py); a longer poll_interval (tests) is kept
                interval = max(self._poll_interval, min(WAKE_FALLBACK, _LEASE_INTERVAL))
            elif now - last_change < 1.0:
                interval = self._poll_interval
            else:  # quiet for a second: poll half as often (half the idle CPU)
                interval = 2 * self._poll_interval
            if listener is not None and self._watches:
                woken = listener.wait(interval)
            else:
                woken = self._wake.acquire(timeout=interval)
            if self._stop:
                break
            now = time.monotonic()
            try:
                conn = self._conn()
                if self._watches:
                    version = conn.execute("PRAGMA data_version").fetchall()[0][0]
                    if woken or version != last_version:
                        last_version = version
                        last_change = now
                        self._catch_up(conn)
                if time.monotonic() >= next_reap and not self._immutable:
                    next_reap = time.monotonic() + _LEASE_INTERVAL
                    if self._unwritable:
                        self._renew_leases()  # first: nobody could keep a lease alive meanwhile
                    self._reap_expired()
                    self._auto_compact()
                if self._unwritable:
                    self._unwritable = False
                    log.warning("SQLite store %s: writable again", self.path)
            except (sqlite3.Error, Unavailable) as e:
                if self._stop or self._closed:
                    break
                # A full disk or a lock held too long: one line per outage, not one per try.
                if not self._unwritable:
                    self._unwritable = True
                    log.warning("SQLite store %s: %s; retrying every second", self.path, e)
                time.sleep(1.0)
            except Exception:
                if self._stop or self._closed:
                    break
                log.exception("SQLite store poller: %s", self.path)
                time.sleep(0.1)
        with contextlib.suppress(Exception):
            self._local.conn = None

    def _catch_up(self, conn: sqlite3.Connection) -> None:
        """Hand every log row after _dispatched_id to the watches (one snapshot)."""
        with self._catchup_lock, self._reading():
            cur, compacted = self._revisions(conn)
            lo = self._dispatched_id + 1
            hi = (cur + 1) << _SEQ_BITS
            if lo >= hi:
                return
            if compacted >= lo >> _SEQ_BITS:
                # Rows at or below ``compacted`` may be gone: watches that still
                # needed them cannot go on.
                lost_to = ((compacted + 1) << _SEQ_BITS) - 1
                with self._wlock:
                    lost = [w for w in self._watches if w.live_from_id < lost_to]
                for w in lost:
                    w._fail(Compacted(max(w.live_from_id + 1, lo) >> _SEQ_BITS, compacted))
                self._dispatch([], lost_to)
                lo = lost_to + 1
            where, params, kept = self._watched_ranges()
            entries = [p for p in kept if self._overlaps_idx(p)]
            while lo < hi:
                rows = conn.execute(
                    f"SELECT {_EVENT_COLS} WHERE l.id >= ? AND l.id < ? AND ({where}) ORDER BY l.id LIMIT ?",
                    (lo, hi, *params, _EVENT_CHUNK),
                ).fetchall()
                last = rows[-1][0] if len(rows) == _EVENT_CHUNK else hi - 1
                events = [(r[0], r[1], _event(r)) for r in rows]
                if entries:
                    events = _merged(events, self._idx_events(conn, lo, last, tuple(entries)))
                self._dispatch(events, last)
                lo = last + 1

    @staticmethod
    def _idx_events(
        conn: sqlite3.Connection, lo: int, hi: int, prefixes: tuple[str, ...]
    ) -> list[tuple[int, str, Event]]:
        """Events of index entries (``idx_log``) whose position lies in [lo, hi] and whose key
        starts with one of ``prefixes``; all of a txn's sit after its log rows."""
        out: list[tuple[int, str, Event]] = []
        for rev, changes in conn.execute(
            "SELECT rev, changes FROM idx_log WHERE rev >= ? AND rev <= ? ORDER BY rev",
            (lo >> _SEQ_BITS, hi >> _SEQ_BITS),
        ).fetchall():
            lid = rev << _SEQ_BITS | _IDX_SEQ
            if lid < lo or lid > hi:
                continue
            for rec in changes.split(_REC):
                if not rec.startswith(prefixes):
                    continue
                key, sep, rest = rec.partition(_FLD)
                if not key.startswith(prefixes):
                    continue
                if not sep:  # a new entry without a lease: the common case, written shortest
                    out.append((lid, key, Event("PUT", KeyValue(key, b"", rev, rev, 1, 0))))
                    continue
                f = rest.split(_FLD)
                if f[0] == "P":
                    out.append((lid, key, Event("PUT", KeyValue(key, b"", int(f[1]), rev, int(f[2]), int(f[3])))))
                else:
                    prev = KeyValue(key, b"", int(f[1]), int(f[4]), int(f[2]), int(f[3]))
                    out.append((lid, key, Event("DELETE", KeyValue(key, b"", 0, rev, 0, 0), prev)))
        return out

    def _watched_ranges(self) -> tuple[str, list[str], list[str]]:
        """SQL condition matching only keys some open watch covers: the rows of other keys
        (index keys, other kinds) are never read or turned into objects."""
        with self._wlock:
            prefixes = sorted({w.prefix for w in self._watches})
        kept: list[str] = []
        for pfx in prefixes:  # sorted: a prefix that covers the next one comes first
            if not kept or not pfx.startswith(kept[-1]):
                kept.append(pfx)
        if not kept or kept == [""]:
            return "1", [], [""]
        parts, params = [], []
        for pfx in kept:
            where, ps = self._key_range(pfx, None, "l.name")
            parts.append(f"({where})")
            params.extend(ps)
        return " OR ".join(parts), params, kept

    def _dispatch(self, events: list[tuple[int, str, Event]], upto: int) -> None:
        with self._wlock:
            for w in self._watches:
                mine = [ev for lid, name, ev in events if lid > w.live_from_id and name.startswith(w.prefix)]
                if mine:
                    w._push(mine)
            self._dispatched_id = max(self._dispatched_id, upto)

    @_translated
    def _replay(self, w: _SQLiteWatch, upto: int) -> list[Event]:
        """The next rows of a watch's replay (ids from w.next_id to ``upto``)."""
        where, params = self._key_range(w.prefix, None, "l.name")
        with self._reading() as conn:
            _, compacted = self._revisions(conn)
            if compacted >= w.next_id >> _SEQ_BITS:
                raise Compacted(w.next_id >> _SEQ_BITS, compacted)
            rows = conn.execute(
                f"SELECT {_EVENT_COLS} WHERE l.id >= ? AND l.id <= ? AND {where} ORDER BY l.id LIMIT ?",
                (w.next_id, upto, *params, _EVENT_CHUNK),
            ).fetchall()
            last = rows[-1][0] if len(rows) == _EVENT_CHUNK else upto
            events = [(r[0], r[1], _event(r)) for r in rows]
            if self._overlaps_idx(w.prefix):
                events = _merged(events, self._idx_events(conn, w.next_id, last, (w.prefix,)))
        w.next_id = last + 1
        return [ev for _, _, ev in events]


class _SQLiteWatch(Watch):
    """Replays the log from its start revision up to ``live_from_id`` on the caller's
    thread, then takes the events the store's poller pushes."""

    def __init__(self, store: SQLiteStore, prefix: str, start: int) -> None:
        self._store = store
        self.prefix = prefix
        self.next_id = start << _SEQ_BITS  # next row to replay
        self.live_from_id = 0  # rows above this arrive through _push
        self._queue: deque[Event] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._error: StoreError | None = None

    def _push(self, events: list[Event]) -> None:
        with self._cond:
            self._queue.extend(events)
            self._cond.notify_all()

    def _fail(self, error: StoreError) -> None:
        with self._cond:
            if self._error is None:
                self._error = error
            self._cond.notify_all()
        self._store._unregister(self)

    def poll(self, timeout: float | None = None) -> list[Event]:
        if self._closed:
            raise WatchClosed("watch closed")
        if self._error is not None:
            raise self._error
        if self.next_id <= self.live_from_id:
            try:
                events = self._store._replay(self, self.live_from_id)
            except Compacted as e:
                self._fail(e)
                raise
            if events:
                return events
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._queue and not self._closed and self._error is None:
                if deadline is None:
                    self._cond.wait()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            if self._closed:
                raise WatchClosed("watch closed")
            if self._error is not None:
                raise self._error
            events = list(self._queue)
            self._queue.clear()
        return events

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._store._unregister(self)
