"""watch: replay from a past revision, stream from now, prefixes, deletes, compaction."""

from __future__ import annotations

import threading
import time

import pytest

from store import Compacted, Delete, Put, Store, StoreError, WatchClosed
from tests._deadline import DEADLINE

from ._util import collect


def test_watch_replays_every_event_in_order_from_a_past_revision(store: Store, ns: str) -> None:
    r1 = store.put(ns + "a", b"1")
    r2 = store.put(ns + "b", b"1")
    r3 = store.put(ns + "a", b"2")
    r4 = store.delete(ns + "b")
    r5 = store.txn([], [Put(ns + "c", b"1"), Put(ns + "d", b"1")]).revision
    with store.watch(ns, start_revision=r2) as w:
        events = collect(w, 5)
        assert [(e.type, e.kv.key, e.revision) for e in events] == [
            ("PUT", ns + "b", r2),
            ("PUT", ns + "a", r3),
            ("DELETE", ns + "b", r4),
            ("PUT", ns + "c", r5),
            ("PUT", ns + "d", r5),
        ]
        a2 = events[1].kv
        assert (a2.value, a2.create_revision, a2.version) == (b"2", r1, 2)
        r6 = store.put(ns + "e", b"live")
        (live,) = collect(w, 1)
        assert (live.type, live.kv.key, live.revision) == ("PUT", ns + "e", r6)
        assert w.poll(0.2) == []


def test_watch_from_now_sees_only_later_writes(store: Store, ns: str) -> None:
    store.put(ns + "before", b"x")
    with store.watch(ns) as w:
        assert w.poll(0.2) == []
        rev = store.put(ns + "after", b"y")
        (e,) = collect(w, 1)
        assert (e.type, e.kv.key, e.kv.value, e.revision) == ("PUT", ns + "after", b"y", rev)


def test_watch_sees_only_its_prefix(store: Store, ns: str) -> None:
    with store.watch(ns + "a/") as w:
        store.put(ns + "b/1", b"x")
        store.put(ns + "a", b"x")  # not under "a/"
        store.put(ns + "ab/1", b"x")
        rev = store.put(ns + "a/1", b"x")
        store.put(ns + "b/2", b"x")
        events = collect(w, 1)
        assert [(e.kv.key, e.revision) for e in events] == [(ns + "a/1", rev)]
        assert w.poll(0.3) == []


def test_delete_event_carries_the_previous_value(store: Store, ns: str) -> None:
    r1 = store.put(ns + "k", b"v1")
    r2 = store.put(ns + "k", b"v2")
    with store.watch(ns) as w:
        rd = store.delete(ns + "k")
        (e,) = collect(w, 1)
    assert e.type == "DELETE" and e.kv.key == ns + "k" and e.revision == rd and e.kv.value == b""
    assert e.prev is not None
    assert (e.prev.value, e.prev.create_revision, e.prev.mod_revision, e.prev.version) == (b"v2", r1, r2, 2)


def test_a_watch_without_previous_values_still_sees_every_delete(store: Store, ns: str, backend: str) -> None:
    store.put(ns + "k", b"v1")
    store.put(ns + "j", b"v1")
    with store.watch(ns, prev_values=False) as w:
        rk = store.delete(ns + "k")
        rj = store.txn([], [Delete(ns + "j"), Put(ns + "k", b"again")]).revision
        events = collect(w, 3)
    assert [(e.type, e.kv.key, e.revision) for e in events] == [
        ("DELETE", ns + "k", rk), ("DELETE", ns + "j", rj), ("PUT", ns + "k", rj)]
    if backend != "sqlite":  # etcd reads no previous value then (SQLite has them at hand)
        assert [e.prev for e in events] == [None, None, None]


def test_txn_events_share_the_txn_revision_and_keep_op_order(store: Store, ns: str) -> None:
    store.put(ns + "gone", b"x")
    with store.watch(ns) as w:
        res = store.txn([], [Put(ns + "z", b"1"), Delete(ns + "gone"), Put(ns + "a", b"2")])
        events = collect(w, 3)
    assert [(e.type, e.kv.key) for e in events] == [
        ("PUT", ns + "z"),
        ("DELETE", ns + "gone"),
        ("PUT", ns + "a"),
    ]
    assert {e.revision for e in events} == {res.revision}


def test_watch_keeps_up_with_a_burst_of_writes(store: Store, ns: str) -> None:
    with store.watch(ns) as w:
        revs = [store.put(f"{ns}k{i % 7}", str(i).encode()) for i in range(300)]
        events = collect(w, 300)
    assert [e.revision for e in events] == revs
    assert [e.kv.value for e in events] == [str(i).encode() for i in range(300)]


def test_watch_after_compaction_raises_compacted_with_the_revision(store: Store, ns: str) -> None:
    r1 = store.put(ns + "a", b"1")
    store.put(ns + "a", b"2")
    r3 = store.put(ns + "b", b"1")
    store.compact(r3)
    with pytest.raises(Compacted) as err:
        w = store.watch(ns, start_revision=r1)
        try:
            w.poll(5)
        finally:
            w.close()
    assert err.value.compact_revision == r3
    with pytest.raises(Compacted):  # the compacted revision itself is gone too (the contract: "at or below")
        with store.watch(ns, start_revision=r3) as w:
            w.poll(5)
    # what the caller does next: relist, then watch from the list's revision
    listed = store.range(ns)
    assert [kv.value for kv in listed.kvs] == [b"2", b"1"]
    with store.watch(ns, start_revision=listed.revision + 1) as w:
        r4 = store.put(ns + "c", b"1")
        assert [e.revision for e in collect(w, 1)] == [r4]


def test_compaction_keeps_the_latest_values(store: Store, ns: str) -> None:
    store.put(ns + "a", b"1")
    store.put(ns + "a", b"2")
    store.put(ns + "b", b"1")
    store.delete(ns + "b")
    rev = store.put(ns + "c", b"1")
    store.compact(rev)
    assert store.get(ns + "a").value == b"2"  # type: ignore[union-attr]
    assert store.get(ns + "b") is None
    assert [kv.key for kv in store.range(ns).kvs] == [ns + "a", ns + "c"]
    assert store.put(ns + "a", b"3") == rev + 1


def test_compaction_to_the_future_is_refused_and_to_the_past_is_a_no_op(store: Store, ns: str) -> None:
    r1 = store.put(ns + "a", b"1")
    r2 = store.put(ns + "a", b"2")
    with pytest.raises(StoreError):
        store.compact(r2 + 1000)
    store.compact(r2)
    store.compact(r1)  # already compacted beyond it: nothing to do
    assert store.get(ns + "a").value == b"2"  # type: ignore[union-attr]
    assert store.current_revision() == r2


def test_close_ends_a_blocked_iteration(store: Store, ns: str) -> None:
    w = store.watch(ns)
    got: list[object] = []
    t = threading.Thread(target=lambda: got.extend(iter(w)))
    t.start()
    store.put(ns + "x", b"1")
    deadline = time.monotonic() + DEADLINE
    while not got and time.monotonic() < deadline:
        t.join(0.05)
    w.close()
    t.join(DEADLINE)
    assert not t.is_alive()
    assert len(got) == 1
    with pytest.raises(WatchClosed):
        w.poll(0)


def test_independent_watches_each_get_every_event(store: Store, ns: str) -> None:
    with store.watch(ns) as w1, store.watch(ns + "x") as w2:
        r1 = store.put(ns + "x1", b"1")
        r2 = store.put(ns + "y1", b"1")
        assert [e.revision for e in collect(w1, 2)] == [r1, r2]
        assert [e.revision for e in collect(w2, 1)] == [r1]
