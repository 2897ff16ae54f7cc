"""The SQLite store's own refusal of a txn that writes a key twice (etcd answers that from its
server, in its words): the message names the key."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from store import Compacted, Compare, Conflict, Delete, Get, Put, StoreError, Unavailable, open_store
from store._sqlite import InvalidRequest


@pytest.fixture
def store(tmp_path: Path):
    s = open_store(f"sqlite://{tmp_path}/store.db")
    yield s
    s.close()


def test_the_key_written_twice_is_named(store) -> None:
    before = store.current_revision()
    with pytest.raises(InvalidRequest) as err:
        store.txn([], [Put("/a", b"1"), Put("/b", b"1"), Get("/a"), Delete("/b")])
    assert str(err.value) == "a txn may write a key only once, '/b' is written twice"
    assert store.current_revision() == before


def test_reading_a_key_it_writes_is_allowed(store) -> None:
    res = store.txn([], [Put("/a", b"1"), Get("/a"), Get("/a")])
    assert res.succeeded and res.responses[1].value == b"1" and res.responses[2].value == b"1"



@pytest.mark.parametrize(("op", "value", "holds"), [
    ("<", 0, False), ("<", 1, True), ("<", -1, False),  # compared with the key's mod revision + value
    (">", 0, False), (">", -1, True), (">", 1, False),
    ("==", 0, True), ("==", 1, False), ("!=", 0, False), ("!=", 1, True),
])
def test_compare_operators_at_their_edges(store, op: str, value: int, holds: bool) -> None:
    rev = store.put("/k", b"v")
    assert store.txn([Compare.mod("/k", op, rev + value)], []).succeeded is holds  # type: ignore[arg-type]


def test_create_and_version_compares_read_their_own_counters(store) -> None:
    store.put("/first", b"0")
    store.put("/second", b"0")
    created = store.put("/k", b"1")
    store.put("/other", b"x")
    store.put("/k", b"2")  # mod moves on; create stays, version is 2
    assert store.txn([Compare("/k", "create", "==", created)], []).succeeded
    assert not store.txn([Compare("/k", "create", "==", created + 2)], []).succeeded
    assert store.txn([Compare("/k", "version", "==", 2)], []).succeeded
    assert created != 2 and not store.txn([Compare("/k", "version", "==", created)], []).succeeded


def test_a_conflict_reports_the_revision_that_was_expected(store) -> None:
    rev = store.put("/k", b"1")
    with pytest.raises(Conflict) as absent:
        store.put("/k", b"2", expect_revision=0)
    assert absent.value.expected == 0 and absent.value.current.mod_revision == rev
    with pytest.raises(Conflict) as stale:
        store.put("/k", b"2", expect_revision=rev + 5)
    assert stale.value.expected == rev + 5
    with pytest.raises(Conflict) as gone:
        store.delete("/k", expect_revision=0)
    assert gone.value.expected == 0
    with pytest.raises(Conflict) as stale_delete:
        store.delete("/k", expect_revision=rev + 5)
    assert stale_delete.value.expected == rev + 5


def test_a_closed_store_says_so(tmp_path: Path) -> None:
    s = open_store(f"sqlite://{tmp_path}/closed.db")
    s.close()
    for call in (s.current_revision, lambda: s.put("/k", b"1"), lambda: s.delete("/k"),
                 lambda: s.txn([], [Put("/k", b"1")])):
        with pytest.raises(StoreError, match="is closed"):
            call()


def test_a_compaction_is_recorded_apart_from_the_current_revision(store) -> None:
    store.put("/a", b"1")
    mid = store.put("/a", b"2")
    store.put("/a", b"3")
    store.compact(mid)  # below the current revision: must not be taken as done already
    with pytest.raises(Compacted):
        store.watch("/", start_revision=mid)
    with store.watch("/", start_revision=mid + 1):
        pass


def test_a_failing_sqlite_surfaces_as_the_stores_unavailable(tmp_path: Path) -> None:
    """An SQLite error under an open store (here its tables dropped by another connection) is
    the store's Unavailable, which callers ride through — never a raw sqlite3 error."""
    s = open_store(f"sqlite://{tmp_path}/broken.db")
    try:
        s.put("/k", b"1")
        raw = sqlite3.connect(tmp_path / "broken.db")
        raw.executescript("DROP TABLE kv; DROP TABLE log; DROP TABLE meta;")
        raw.close()
        for call in (s.current_revision, lambda: s.put("/k", b"2"), lambda: s.delete("/k"),
                     lambda: s.txn([], [Put("/k", b"3")])):
            with pytest.raises(Unavailable):
                call()
    finally:
        s.close()
