"""SQLite's schema 2: index entries in ``idx`` (no log or kv rows), their events in ``idx_log``;
a schema-1 file is migrated when it is opened; a newer schema is refused in one line."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from store import Compacted, Put, Unavailable, open_store
from store._sqlite import SCHEMA_VERSION, SQLiteStore

from ._util import collect

# The schema-1 layout as the store wrote it before (every key in log and kv).
_V1 = """
CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 0), current_revision INTEGER NOT NULL,
    compact_revision INTEGER NOT NULL, schema_version INTEGER NOT NULL);
CREATE TABLE log (id INTEGER PRIMARY KEY, name TEXT NOT NULL, deleted INTEGER NOT NULL,
    create_revision INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER NOT NULL, prev_id INTEGER, value BLOB);
CREATE TABLE kv (name TEXT PRIMARY KEY, log_id INTEGER NOT NULL, create_revision INTEGER NOT NULL,
    version INTEGER NOT NULL, lease INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX kv_by_lease ON kv (lease) WHERE lease != 0;
CREATE TABLE lease (id INTEGER PRIMARY KEY AUTOINCREMENT, ttl REAL NOT NULL, expiry REAL NOT NULL);
CREATE INDEX lease_by_expiry ON lease (expiry);
"""


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
def s(path: Path) -> Iterator[SQLiteStore]:
    st = open_store(f"sqlite://{path}")
    assert isinstance(st, SQLiteStore)
    yield st
    st.close()


def _rows(path: Path, sql: str) -> list[tuple]:  # type: ignore[type-arg]
    with sqlite3.connect(path) as c:
        return c.execute(sql).fetchall()


def test_index_entries_take_no_log_or_kv_rows(s: SQLiteStore, path: Path) -> None:
    rev = s.txn([], [Put("/registry/jobs/default/j1", b"{}"), Put("/index/jobs/state/default/A/j1", b""),
                     Put("/index/jobs/@schema", b"2")]).revision
    assert _rows(path, "SELECT name FROM log ORDER BY name") == [("/index/jobs/@schema",), ("/registry/jobs/default/j1",)]
    assert _rows(path, "SELECT name FROM kv ORDER BY name") == [("/index/jobs/@schema",), ("/registry/jobs/default/j1",)]
    assert _rows(path, "SELECT name, rev FROM idx") == [("/index/jobs/state/default/A/j1", rev)]
    assert _rows(path, "SELECT rev, changes FROM idx_log") == [(rev, "/index/jobs/state/default/A/j1")]
    assert _rows(path, "SELECT schema_version FROM meta") == [(SCHEMA_VERSION,)]
    s.compact(rev)  # entries keep no history below the compacted revision
    assert _rows(path, "SELECT count(*) FROM idx_log") == [(0,)]
    assert s.count("/index/jobs/state/") == 1


def _write_v1(path: Path) -> None:
    """A schema-1 store at revision 4: an object, two index entries (one re-put), one entry
    deleted (its tombstone), and a valued key under /index/."""
    def row(rev: int, seq: int) -> int:
        return rev << 24 | seq

    with sqlite3.connect(path) as c:
        c.executescript(_V1)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("INSERT INTO meta VALUES (0, 4, 0, 1)")
        log = [
            (row(2, 0), "/registry/jobs/default/j1", 0, 2, 1, 0, None, b"{}"),
            (row(2, 1), "/index/jobs/state/default/A/j1", 0, 2, 1, 0, None, b""),
            (row(2, 2), "/index/jobs/label/default/k%3Dv/j1", 0, 2, 1, 0, None, b""),
            (row(2, 3), "/index/jobs/@schema", 0, 2, 1, 0, None, b"2"),
            (row(3, 0), "/index/jobs/state/default/A/j1", 0, 2, 2, 0, row(2, 1), b""),
            (row(4, 0), "/index/jobs/label/default/k%3Dv/j1", 1, 0, 0, 0, row(2, 2), None),
        ]
        c.executemany("INSERT INTO log VALUES (?,?,?,?,?,?,?,?)", log)
        c.executemany("INSERT INTO kv VALUES (?,?,?,?,?)", [
            ("/registry/jobs/default/j1", row(2, 0), 2, 1, 0),
            ("/index/jobs/state/default/A/j1", row(3, 0), 2, 2, 0),
            ("/index/jobs/@schema", row(2, 3), 2, 1, 0),
        ])


def test_a_schema_1_store_is_migrated_when_opened(path: Path) -> None:
    _write_v1(path)
    s = open_store(f"sqlite://{path}")
    try:
        assert _rows(path, "SELECT schema_version, current_revision, compact_revision FROM meta") == [
            (SCHEMA_VERSION, 4, 4)]
        # The entry moved to idx with its revisions; the valued key and the object stayed.
        kv = s.get("/index/jobs/state/default/A/j1")
        assert kv is not None and (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (b"", 2, 3, 2)
        assert [k.key for k in s.range("/index/jobs/").kvs] == ["/index/jobs/@schema", "/index/jobs/state/default/A/j1"]
        assert s.get("/index/jobs/@schema").value == b"2"  # type: ignore[union-attr]
        assert s.get("/registry/jobs/default/j1").value == b"{}"  # type: ignore[union-attr]
        assert _rows(path, "SELECT name FROM log WHERE name LIKE '/index/jobs/state/%' OR name LIKE '%k\\%3Dv%'") == []
        # History before the migration is gone: a watch from there relists.
        with pytest.raises(Compacted):
            w = s.watch("/index/jobs/", start_revision=2)
            try:
                w.poll(1)
            finally:
                w.close()
        # It goes on as a schema-2 store: versions continue, watches see the entries.
        with s.watch("/index/jobs/state/") as w:
            rev = s.put("/index/jobs/state/default/A/j1", b"")
            (e,) = collect(w, 1)
        assert (e.type, e.kv.key, e.revision, e.kv.create_revision, e.kv.version) == (
            "PUT", "/index/jobs/state/default/A/j1", rev, 2, 3)
    finally:
        s.close()
    s2 = open_store(f"sqlite://{path}")  # opened again: nothing left to migrate
    try:
        assert s2.count("/index/jobs/state/") == 1
    finally:
        s2.close()


def test_a_store_of_a_newer_schema_is_refused_in_one_line(path: Path) -> None:
    open_store(f"sqlite://{path}").close()
    with sqlite3.connect(path) as c:
        c.execute("UPDATE meta SET schema_version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(Unavailable) as err:
        open_store(f"sqlite://{path}")
    msg = str(err.value)
    assert f"schema {SCHEMA_VERSION + 1}" in msg and "upgrade balsamctl" in msg and "\n" not in msg
