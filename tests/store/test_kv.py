"""get / put / delete, the KeyValue fields, and compare-and-swap on mod revision."""

from __future__ import annotations

import pytest

from store import Conflict, KeyValue, Put, Store


def test_missing_key_reads_as_none(store: Store, ns: str) -> None:
    assert store.get(ns + "nope") is None


def test_put_creates_key_with_revisions_and_version_one(store: Store, ns: str) -> None:
    before = store.current_revision()
    rev = store.put(ns + "a", b"v1")
    assert rev == before + 1
    assert store.current_revision() == rev
    assert store.get(ns + "a") == KeyValue(ns + "a", b"v1", create_revision=rev, mod_revision=rev, version=1)


def test_update_keeps_create_revision_and_bumps_version(store: Store, ns: str) -> None:
    r1 = store.put(ns + "a", b"v1")
    r2 = store.put(ns + "a", b"v2")
    assert r2 == r1 + 1
    kv = store.get(ns + "a")
    assert kv is not None
    assert (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (b"v2", r1, r2, 2)


def test_values_are_bytes_kept_exactly(store: Store, ns: str) -> None:
    blob = bytes(range(256)) * 40 + b"\x00"
    store.put(ns + "bin", blob)
    store.put(ns + "empty", b"")
    assert store.get(ns + "bin").value == blob  # type: ignore[union-attr]
    assert store.get(ns + "empty").value == b""  # type: ignore[union-attr]


def test_delete_removes_key_and_recreate_starts_a_new_life(store: Store, ns: str) -> None:
    store.put(ns + "a", b"v1")
    store.put(ns + "a", b"v2")
    rev = store.delete(ns + "a")
    assert rev == store.current_revision()
    assert store.get(ns + "a") is None
    r3 = store.put(ns + "a", b"v3")
    kv = store.get(ns + "a")
    assert kv is not None
    assert (kv.create_revision, kv.mod_revision, kv.version) == (r3, r3, 1)


def test_delete_of_missing_key_returns_none_and_writes_nothing(store: Store, ns: str) -> None:
    store.put(ns + "other", b"x")
    before = store.current_revision()
    assert store.delete(ns + "nope") is None
    assert store.current_revision() == before


def test_put_with_current_revision_succeeds(store: Store, ns: str) -> None:
    r1 = store.put(ns + "a", b"v1")
    r2 = store.put(ns + "a", b"v2", expect_revision=r1)
    assert store.get(ns + "a").mod_revision == r2  # type: ignore[union-attr]


def test_put_with_stale_revision_conflicts_and_reports_current(store: Store, ns: str) -> None:
    r1 = store.put(ns + "a", b"v1")
    r2 = store.put(ns + "a", b"v2")
    before = store.current_revision()
    with pytest.raises(Conflict) as err:
        store.put(ns + "a", b"stale", expect_revision=r1)
    assert err.value.key == ns + "a"
    assert err.value.expected == r1
    assert err.value.current is not None
    assert (err.value.current.value, err.value.current.mod_revision) == (b"v2", r2)
    assert store.get(ns + "a").value == b"v2"  # type: ignore[union-attr]
    assert store.current_revision() == before


def test_expect_revision_zero_creates_only_once(store: Store, ns: str) -> None:
    rev = store.put(ns + "a", b"first", expect_revision=0)
    with pytest.raises(Conflict) as err:
        store.put(ns + "a", b"second", expect_revision=0)
    assert err.value.current is not None and err.value.current.mod_revision == rev
    assert store.get(ns + "a").value == b"first"  # type: ignore[union-attr]


def test_put_expecting_a_revision_of_a_missing_key_conflicts(store: Store, ns: str) -> None:
    r = store.put(ns + "other", b"x")
    with pytest.raises(Conflict) as err:
        store.put(ns + "a", b"v", expect_revision=r)
    assert err.value.current is None
    assert store.get(ns + "a") is None


def test_delete_with_stale_revision_conflicts_and_keeps_key(store: Store, ns: str) -> None:
    r1 = store.put(ns + "a", b"v1")
    store.put(ns + "a", b"v2")
    with pytest.raises(Conflict) as err:
        store.delete(ns + "a", expect_revision=r1)
    assert err.value.current is not None and err.value.current.value == b"v2"
    assert store.get(ns + "a") is not None


def test_delete_with_current_revision_deletes(store: Store, ns: str) -> None:
    store.put(ns + "a", b"v1")
    r2 = store.put(ns + "a", b"v2")
    rev = store.delete(ns + "a", expect_revision=r2)
    assert rev == r2 + 1
    assert store.get(ns + "a") is None


def test_delete_expecting_a_revision_of_a_missing_key_conflicts(store: Store, ns: str) -> None:
    r = store.put(ns + "other", b"x")
    with pytest.raises(Conflict) as err:
        store.delete(ns + "a", expect_revision=r)
    assert err.value.current is None


def test_get_many_answers_in_the_order_asked(store: Store, ns: str) -> None:
    written = {}  # key -> revision; in txns of 100 puts, which etcd's default limits allow
    for start in range(0, 300, 100):
        keys = [f"{ns}k{i:03d}" for i in range(start, start + 100)]
        r = store.txn([], [Put(k, str(int(k[-3:])).encode()) for k in keys]).revision
        written.update(dict.fromkeys(keys, r))
    keys = [f"{ns}k{i:03d}" for i in range(299, -1, -3)] + [ns + "missing", f"{ns}k005", f"{ns}k005"]
    got = store.get_many(keys)
    assert len(got) == len(keys)
    for key, kv in zip(keys, got, strict=True):
        if key == ns + "missing":
            assert kv is None
        else:
            assert kv is not None and kv.key == key and kv.mod_revision == written[key]
            assert kv.value == str(int(key[-3:])).encode()


def test_get_many_of_nothing_is_empty(store: Store) -> None:
    assert store.get_many([]) == []
