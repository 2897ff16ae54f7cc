"""Leases: keys attached to a lease vanish (with a DELETE event) on expiry or revoke."""

from __future__ import annotations

import time

import pytest

from store import LeaseNotFound, Store

from ._util import collect, wait_until

# etcd grants whole seconds and expires a little late: TTLs of 1-2 s, waits of up to 6 s.


def test_expired_lease_deletes_its_keys_with_delete_events(store: Store, ns: str) -> None:
    lease = store.lease_grant(1)
    store.put(ns + "eph/1", b"a", lease=lease)
    store.put(ns + "eph/2", b"b", lease=lease)
    store.put(ns + "keep", b"c")
    kv = store.get(ns + "eph/1")
    assert kv is not None and kv.lease == lease
    with store.watch(ns) as w:
        events = collect(w, 2, timeout=6)
    assert sorted((e.type, e.kv.key) for e in events) == [("DELETE", ns + "eph/1"), ("DELETE", ns + "eph/2")]
    assert {e.prev.value for e in events if e.prev} == {b"a", b"b"}
    assert store.get(ns + "eph/1") is None and store.get(ns + "eph/2") is None
    assert store.get(ns + "keep") is not None


def test_revoke_deletes_keys_at_once(store: Store, ns: str) -> None:
    lease = store.lease_grant(30)
    store.put(ns + "a", b"1", lease=lease)
    store.put(ns + "b", b"1", lease=lease)
    with store.watch(ns) as w:
        store.lease_revoke(lease)
        assert store.get(ns + "a") is None and store.get(ns + "b") is None
        events = collect(w, 2)
    assert sorted((e.type, e.kv.key) for e in events) == [("DELETE", ns + "a"), ("DELETE", ns + "b")]
    with pytest.raises(LeaseNotFound):
        store.lease_keepalive(lease)


def test_keepalive_keeps_keys_alive_past_the_ttl(store: Store, ns: str) -> None:
    lease = store.lease_grant(2)
    store.put(ns + "hb", b"alive", lease=lease)
    deadline = time.monotonic() + 4.5
    while time.monotonic() < deadline:
        assert store.lease_keepalive(lease) >= 1
        time.sleep(0.4)
        assert store.get(ns + "hb") is not None
    store.lease_revoke(lease)
    assert store.get(ns + "hb") is None


def test_keepalive_after_expiry_raises_lease_not_found(store: Store, ns: str) -> None:
    lease = store.lease_grant(1)
    store.put(ns + "k", b"v", lease=lease)
    assert wait_until(lambda: store.get(ns + "k") is None, timeout=6)
    with pytest.raises(LeaseNotFound):
        store.lease_keepalive(lease)


def test_rewriting_a_key_without_the_lease_detaches_it(store: Store, ns: str) -> None:
    lease = store.lease_grant(30)
    store.put(ns + "a", b"1", lease=lease)
    store.put(ns + "a", b"2")
    store.lease_revoke(lease)
    kv = store.get(ns + "a")
    assert kv is not None and kv.value == b"2" and kv.lease == 0
