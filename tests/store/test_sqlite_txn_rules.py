"""The SQLite store's own refusal of a txn that writes a key twice (etcd answers that from its
server, in its words): the message names the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from store import Compare, Delete, Get, Put, open_store
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
