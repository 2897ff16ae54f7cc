"""Transactions: compares decide the branch, the branch is all or nothing, one revision."""

from __future__ import annotations

import pytest

from store import Compare, Delete, Get, KeyValue, Put, Store, StoreError, TooLarge


def test_failed_compare_writes_nothing_and_runs_failure_branch(store: Store, ns: str) -> None:
    r1 = store.put(ns + "a", b"v1")
    store.put(ns + "a", b"v2")
    before = store.current_revision()
    res = store.txn(
        [Compare.mod(ns + "a", "==", r1)],
        [Put(ns + "a", b"lost"), Put(ns + "b", b"lost"), Delete(ns + "c")],
        [Get(ns + "a"), Get(ns + "b")],
    )
    assert not res.succeeded
    assert res.revision == before == store.current_revision()
    a, b = res.responses
    assert isinstance(a, KeyValue) and a.value == b"v2"
    assert b is None
    assert store.get(ns + "b") is None
    assert store.get(ns + "a").value == b"v2"  # type: ignore[union-attr]


def test_txn_writing_one_key_twice_is_refused_whole(store: Store, ns: str) -> None:
    store.put(ns + "a", b"v1")
    before = store.current_revision()
    for ops in (
        [Put(ns + "b", b"1"), Put(ns + "a", b"2"), Delete(ns + "a")],
        [Put(ns + "b", b"1"), Put(ns + "b", b"2")],
    ):
        with pytest.raises(StoreError):
            store.txn([], ops)
        with pytest.raises(StoreError):  # as etcd: the branch that would not run is checked too
            store.txn([Compare.absent(ns + "a")], [], ops)
    assert store.current_revision() == before
    assert store.get(ns + "b") is None


def test_one_failing_compare_among_many_fails_the_txn(store: Store, ns: str) -> None:
    ra = store.put(ns + "a", b"1")
    store.put(ns + "b", b"1")
    res = store.txn(
        [Compare.mod(ns + "a", "==", ra), Compare.absent(ns + "b")],
        [Put(ns + "c", b"x")],
    )
    assert not res.succeeded and res.responses == []
    assert store.get(ns + "c") is None


def test_successful_txn_writes_every_op_at_one_revision(store: Store, ns: str) -> None:
    store.put(ns + "old1", b"x")
    r0 = store.put(ns + "old2", b"x")
    res = store.txn(
        [Compare.absent(ns + "new1"), Compare.mod(ns + "old1", ">", 0)],
        [
            Put(ns + "new1", b"1"),
            Put(ns + "new2", b"2"),
            Delete(ns + "old1"),
            Delete(ns + "nope"),
            Put(ns + "old2", b"y"),
        ],
    )
    assert res.succeeded
    assert res.revision == r0 + 1 == store.current_revision()
    assert res.responses == [None, None, True, False, None]
    for key in ("new1", "new2", "old2"):
        kv = store.get(ns + key)
        assert kv is not None and kv.mod_revision == res.revision
    assert store.get(ns + "old1") is None
    assert store.get(ns + "old2").version == 2  # type: ignore[union-attr]


def test_txn_that_writes_nothing_leaves_the_revision(store: Store, ns: str) -> None:
    r = store.put(ns + "a", b"v")
    res = store.txn([], [Get(ns + "a"), Get(ns + "b"), Delete(ns + "b")])
    assert res.succeeded and res.revision == r == store.current_revision()
    assert isinstance(res.responses[0], KeyValue) and res.responses[0].value == b"v"
    assert res.responses[1:] == [None, False]


def test_get_inside_a_txn_sees_the_writes_before_it(store: Store, ns: str) -> None:
    store.put(ns + "a", b"old")
    store.put(ns + "d", b"doomed")
    res = store.txn(
        [],
        [
            Get(ns + "a"),
            Put(ns + "a", b"new"),
            Get(ns + "a"),
            Delete(ns + "d"),
            Get(ns + "d"),
            Put(ns + "n", b"n"),
            Get(ns + "n"),
        ],
    )
    before, _, after, _, gone, _, created = res.responses
    assert isinstance(before, KeyValue) and before.value == b"old"
    assert isinstance(after, KeyValue) and (after.value, after.mod_revision, after.version) == (
        b"new",
        res.revision,
        2,
    )
    assert gone is None
    assert isinstance(created, KeyValue) and created.create_revision == res.revision


@pytest.mark.parametrize(
    ("target", "op", "value", "holds"),
    [
        ("version", "==", 2, True),
        ("version", ">", 2, False),
        ("version", "<", 3, True),
        ("create", "==", 0, False),
        ("create", "!=", 0, True),
        ("value", "==", b"v2", True),
        ("value", "!=", b"v2", False),
        ("value", ">", b"v1", True),
        ("mod", "<", 1, False),
    ],
)
def test_compare_targets_and_operators(
    store: Store, ns: str, target: str, op: str, value: int | bytes, holds: bool
) -> None:
    store.put(ns + "a", b"v1")
    store.put(ns + "a", b"v2")
    res = store.txn([Compare(ns + "a", target, op, value)], [Put(ns + "hit", b"")], [Put(ns + "miss", b"")])  # type: ignore[arg-type]
    assert res.succeeded is holds
    assert (store.get(ns + "hit") is not None) is holds


def test_compares_on_a_missing_key(store: Store, ns: str) -> None:
    m = ns + "missing"
    assert store.txn(
        [Compare.absent(m), Compare(m, "version", "==", 0), Compare.mod(m, "==", 0)], []
    ).succeeded
    # As etcd: a value compare on a key that does not exist always fails.
    assert not store.txn([Compare(m, "value", "==", b"")], []).succeeded
    assert not store.txn([Compare(m, "value", "!=", b"x")], []).succeeded


def test_create_only_txn_guards_many_keys_at_once(store: Store, ns: str, backend: str) -> None:
    keys = [f"{ns}job-{i:04d}" for i in range(500)]
    if backend == "etcd-defaults":
        # 1000 ops are over etcd's default --max-txn-ops (128): refused whole, nothing written.
        with pytest.raises(TooLarge):
            store.txn([Compare.absent(k) for k in keys], [Put(k, b"1") for k in keys])
        assert store.count(ns) == 0
        keys = keys[:60]
    first = store.txn([Compare.absent(k) for k in keys], [Put(k, b"1") for k in keys])
    assert first.succeeded
    again = store.txn([Compare.absent(k) for k in keys], [Put(k, b"2") for k in keys])
    assert not again.succeeded
    assert store.count(ns) == len(keys)
    assert {kv.value for kv in store.range(ns).kvs} == {b"1"}
    assert {kv.mod_revision for kv in store.range(ns).kvs} == {first.revision}
