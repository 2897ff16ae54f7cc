"""Leases: keys attached to a lease vanish (with a DELETE event) on expiry or revoke."""

from __future__ import annotations

import contextlib
import time

import pytest

from store import LeaseNotFound, Store
from tests._deadline import DEADLINE

from ._util import collect, wait_until

# etcd grants whole seconds and expires a little late: TTLs of 1-3 s, waits of DEADLINE.


def test_expired_lease_deletes_its_keys_with_delete_events(store: Store, ns: str) -> None:
    lease = store.lease_grant(3)  # room for the puts below on a loaded machine
    first = store.put(ns + "eph/1", b"a", lease=lease)
    store.put(ns + "eph/2", b"b", lease=lease)
    store.put(ns + "keep", b"c")
    # The watch starts at the first put, so a test thread that opens it late (after the
    # expiry) still sees every event.
    with store.watch(ns, start_revision=first) as w:
        events = collect(w, 5)
    puts = [e for e in events if e.type == "PUT"]
    assert [(e.kv.key, e.kv.lease) for e in puts] == [(ns + "eph/1", lease), (ns + "eph/2", lease), (ns + "keep", 0)]
    events = [e for e in events if e.type == "DELETE"]
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


TTL, SLACK = 2, 0.3


def _kept_alive_for_twice_the_ttl(store: Store, key: str) -> bool:
    """Keep a lease alive for twice its TTL, reading its key after each keepalive. False when
    this thread was held up for about a TTL between two keepalives (the lease may have run out
    then: nothing to tell); a key or lease lost while the keepalives were on time fails."""
    start = last = time.monotonic()  # the latest grant or keepalive was sent no earlier than ``last``
    lease = store.lease_grant(TTL)
    try:
        try:
            store.put(key, b"alive", lease=lease)
        except LeaseNotFound:
            assert time.monotonic() - last >= TTL - SLACK
            return False
        while (now := time.monotonic()) - start < 2 * TTL + 0.5:
            if now - last >= TTL - SLACK:
                return False
            try:
                assert store.lease_keepalive(lease) >= 1
            except LeaseNotFound:
                assert time.monotonic() - last >= TTL - SLACK, "the lease ran out while kept alive"
                return False
            last = now
            kv = store.get(key)
            if time.monotonic() - last < TTL - SLACK:  # read within the TTL of the keepalive
                assert kv is not None, "the key vanished while its lease was kept alive"
            time.sleep(0.4)
        return True
    finally:
        with contextlib.suppress(LeaseNotFound):
            store.lease_revoke(lease)


def test_keepalive_keeps_keys_alive_past_the_ttl(store: Store, ns: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not _kept_alive_for_twice_the_ttl(store, ns + "hb"):  # a starved round proves nothing: again
        assert time.monotonic() < deadline, "no round ran without the test thread being held up"
    assert store.get(ns + "hb") is None  # revoked


def test_keepalive_after_expiry_raises_lease_not_found(store: Store, ns: str) -> None:
    lease = store.lease_grant(1)
    store.put(ns + "k", b"v", lease=lease)
    assert wait_until(lambda: store.get(ns + "k") is None, timeout=DEADLINE)
    with pytest.raises(LeaseNotFound):
        store.lease_keepalive(lease)


def test_rewriting_a_key_without_the_lease_detaches_it(store: Store, ns: str) -> None:
    lease = store.lease_grant(30)
    store.put(ns + "a", b"1", lease=lease)
    store.put(ns + "a", b"2")
    store.lease_revoke(lease)
    kv = store.get(ns + "a")
    assert kv is not None and kv.value == b"2" and kv.lease == 0
