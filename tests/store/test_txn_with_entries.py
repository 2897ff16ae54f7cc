"""``Store.txn_with_entries``: a txn whose index entries come as key strings (the registry's
bulk create) writes exactly what ``txn`` with one empty-valued ``Put`` per key writes, on
every backend (SQLite inserts them without op objects; etcd expands them)."""

from __future__ import annotations

import pytest

from store import Compare, KeyValue, LeaseNotFound, Put, Store, StoreError

from ._util import collect


@pytest.fixture
def ix(ns: str) -> str:
    return "/index" + ns


def _meta(kv: KeyValue | None) -> tuple[bytes, int, int, int, int] | None:
    return None if kv is None else (kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)


def test_entries_and_ops_land_in_one_revision_with_responses_for_the_ops_only(store: Store, ns: str, ix: str) -> None:
    obj = ns + "jobs/j1"
    keys = [ix + "state/A/j1", ix + "app/hello/j1", ix + "workdir/w%2F1/j1"]
    with store.watch(ix) as w:
        res = store.txn_with_entries([Compare.absent(obj)], [Put(obj, b"{}")], keys)
        events = collect(w, 3)
    assert res.succeeded and res.responses == [None]
    rev = res.revision
    assert _meta(store.get(obj)) == (b"{}", rev, rev, 1, 0)
    for k in keys:
        assert _meta(store.get(k)) == (b"", rev, rev, 1, 0)
    assert sorted((e.type, e.kv.key, e.revision) for e in events) == sorted(("PUT", k, rev) for k in keys)
    assert store.count(ix) == 3


def test_failed_compares_write_nothing(store: Store, ns: str, ix: str) -> None:
    store.put(ns + "jobs/j1", b"{}")
    before = store.current_revision()
    res = store.txn_with_entries([Compare.absent(ns + "jobs/j1")], [Put(ns + "jobs/j1", b"x")], [ix + "state/A/j1"])
    assert not res.succeeded and res.responses == []
    assert store.current_revision() == before and store.get(ix + "state/A/j1") is None


def test_entries_put_again_keep_their_create_revision_and_take_the_lease(store: Store, ix: str) -> None:
    r1 = store.txn([], [Put(ix + "a", b""), Put(ix + "b", b"")]).revision
    lease = store.lease_grant(60)
    r2 = store.txn_with_entries([], [], [ix + "c", ix + "a"], lease).revision
    assert _meta(store.get(ix + "a")) == (b"", r1, r2, 2, lease)
    assert _meta(store.get(ix + "c")) == (b"", r2, r2, 1, lease)
    assert _meta(store.get(ix + "b")) == (b"", r1, r1, 1, 0)
    store.lease_revoke(lease)
    assert [kv.key for kv in store.range(ix).kvs] == [ix + "b"]


def test_keys_that_are_not_plain_entries_are_written_as_puts(store: Store, ns: str, ix: str) -> None:
    """Outside the index prefix, holding a NUL, or a valued key under it: the same result as
    ``txn`` with Puts of empty values."""
    rs = store.put(ix + "@schema", b"3")
    odd = [ix + "@schema", ns + "plain", ix + "nul\x00x", ix + "ok"]
    rev = store.txn_with_entries([], [Put(ns + "obj", b"v")], odd).revision
    assert _meta(store.get(ix + "@schema")) == (b"", rs, rev, 2, 0)
    for k in odd[1:]:
        assert _meta(store.get(k)) == (b"", rev, rev, 1, 0)
    assert [kv.key for kv in store.range(ix).kvs] == sorted([ix + "@schema", ix + "nul\x00x", ix + "ok"])


def test_a_key_written_twice_is_refused_and_nothing_written(store: Store, ns: str, ix: str) -> None:
    before = store.current_revision()
    with pytest.raises(StoreError):
        store.txn_with_entries([], [Put(ns + "obj", b"v")], [ix + "a", ix + "a"])
    with pytest.raises(StoreError):
        store.txn_with_entries([], [Put(ix + "a", b"")], [ix + "a"])
    assert store.current_revision() == before
    store.put(ns + "there", b"x")
    with pytest.raises(StoreError):  # refused as a request, whatever its compares would say
        store.txn_with_entries([Compare.absent(ns + "there")], [], [ix + "b", ix + "b"])
    assert store.get(ns + "obj") is None and store.get(ix + "a") is None


def test_entries_under_a_missing_lease_are_refused(store: Store, ns: str, ix: str) -> None:
    lease = store.lease_grant(60)
    store.lease_revoke(lease)
    with pytest.raises(LeaseNotFound):
        store.txn_with_entries([], [Put(ns + "obj", b"v")], [ix + "a"], lease)
    assert store.get(ns + "obj") is None and store.get(ix + "a") is None
