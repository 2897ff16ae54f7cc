"""Keys under ``/index/`` with empty values (the registry's index entries) keep the whole store
contract on every backend. SQLite keeps them in a table of their own with one event row per
txn (store/_sqlite.py, schema 2); etcd is the reference these tests hold it to."""

from __future__ import annotations

import pytest

from store import Compacted, Compare, Delete, Get, KeyValue, Put, Store

from ._util import collect


@pytest.fixture
def ix(ns: str) -> str:
    """This test's prefix under the index prefix."""
    return "/index" + ns


def _meta(kv: KeyValue | None) -> tuple[str, bytes, int, int, int] | None:
    return None if kv is None else (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version)


def test_index_entries_read_back_with_etcds_revisions_and_versions(store: Store, ix: str) -> None:
    r1 = store.txn([], [Put(ix + "state/A/j1", b""), Put(ix + "state/A/j2", b""), Put(ix + "@schema", b"3")]).revision
    r2 = store.put(ix + "state/A/j1", b"")  # put again: version 2, same create revision
    assert _meta(store.get(ix + "state/A/j1")) == (ix + "state/A/j1", b"", r1, r2, 2)
    assert _meta(store.get(ix + "@schema")) == (ix + "@schema", b"3", r1, r1, 1)
    assert store.get(ix + "state/A/nope") is None
    got = store.get_many([ix + "state/A/j2", ix + "nope", ix + "@schema"])
    assert [_meta(kv) for kv in got] == [(ix + "state/A/j2", b"", r1, r1, 1), None, (ix + "@schema", b"3", r1, r1, 1)]
    # A range over entries and valued keys together, in key order, paged.
    res = store.range(ix)
    assert [kv.key for kv in res.kvs] == [ix + "@schema", ix + "state/A/j1", ix + "state/A/j2"]
    assert [kv.value for kv in res.kvs] == [b"3", b"", b""]
    page = store.range(ix, limit=2)
    assert [kv.key for kv in page.kvs] == [ix + "@schema", ix + "state/A/j1"] and page.more
    rest = store.range(ix, limit=2, start_after=page.kvs[-1].key, keys_only=True)
    assert [kv.key for kv in rest.kvs] == [ix + "state/A/j2"] and not rest.more
    assert store.count(ix) == 3 and store.count(ix + "state/") == 2
    # A compare on an entry's revision holds as on any key.
    assert store.txn([Compare.mod(ix + "state/A/j1", "==", r2)], [Put(ix + "x/j1", b"")]).succeeded
    assert not store.txn([Compare.mod(ix + "state/A/j1", "==", r1)], [Put(ix + "x/j9", b"")]).succeeded


def test_intersect_finds_names_under_every_entry_prefix(store: Store, ix: str) -> None:
    store.txn([], [Put(f"{ix}a/1/{n}", b"") for n in ("j1", "j2", "j3")]
              + [Put(f"{ix}b/2/{n}", b"") for n in ("j2", "j3", "j4")])
    assert store.intersect([f"{ix}a/1/", f"{ix}b/2/"]) == ["j2", "j3"]
    store.delete(f"{ix}b/2/j3")
    assert store.intersect([f"{ix}a/1/", f"{ix}b/2/"]) == ["j2"]


def test_a_txn_gets_what_it_wrote_and_deletes_entries(store: Store, ix: str) -> None:
    r0 = store.put(ix + "e", b"")
    res = store.txn([], [Put(ix + "f", b""), Get(ix + "f"), Delete(ix + "e"), Get(ix + "e"), Get(ix + "nope")])
    assert res.succeeded
    assert _meta(res.responses[1]) == (ix + "f", b"", res.revision, res.revision, 1)  # type: ignore[arg-type]
    assert res.responses[2] is True and res.responses[3] is None and res.responses[4] is None
    assert store.get(ix + "e") is None and store.count(ix) == 1
    assert store.delete(ix + "e") is None  # gone already
    assert r0 < res.revision


def test_an_entry_may_take_a_value_and_lose_it_again(store: Store, ix: str) -> None:
    r1 = store.put(ix + "k", b"")
    r2 = store.put(ix + "k", b"v")
    assert _meta(store.get(ix + "k")) == (ix + "k", b"v", r1, r2, 2)
    r3 = store.put(ix + "k", b"")
    assert _meta(store.get(ix + "k")) == (ix + "k", b"", r1, r3, 3)
    assert [kv.key for kv in store.range(ix).kvs] == [ix + "k"]  # one key, never two
    with store.watch(ix, start_revision=r1) as w:
        events = collect(w, 3)
    assert [(e.type, e.kv.value, e.kv.version, e.revision) for e in events] == [
        ("PUT", b"", 1, r1), ("PUT", b"v", 2, r2), ("PUT", b"", 3, r3)]


def test_watch_of_an_entry_prefix_sees_puts_and_deletes_in_order(store: Store, ix: str) -> None:
    node = ix + "boundnode/n1/"
    with store.watch(node) as live:
        r1 = store.txn([], [Put(ix + "@obj/j1", b"{}"), Put(node + "j1", b""), Put(ix + "boundnode/n2/j2", b"")]).revision
        r2 = store.put(node + "j1", b"")
        r3 = store.txn([], [Delete(node + "j1"), Put(node + "j3", b"")]).revision
        events = collect(live, 4)
        assert live.poll(0.2) == []
    assert [(e.type, e.kv.key, e.revision) for e in events] == [
        ("PUT", node + "j1", r1), ("PUT", node + "j1", r2), ("DELETE", node + "j1", r3), ("PUT", node + "j3", r3)]
    assert (events[0].kv.create_revision, events[0].kv.version) == (r1, 1)
    assert (events[1].kv.create_revision, events[1].kv.version) == (r1, 2)
    prev = events[2].prev
    assert prev is not None and (prev.key, prev.create_revision, prev.mod_revision, prev.version) == (
        node + "j1", r1, r2, 2)
    # Replayed from the past: the same events; and a valued key's event and entries' events
    # of one txn together.
    with store.watch(node, start_revision=r1) as w:
        assert [(e.type, e.kv.key, e.revision) for e in collect(w, 4)] == [
            (e.type, e.kv.key, e.revision) for e in events]
    with store.watch(ix, start_revision=r1) as w:
        first = [(e.type, e.kv.key, e.revision) for e in collect(w, 6) if e.revision == r1]
    assert sorted(first) == [("PUT", ix + "@obj/j1", r1), ("PUT", ix + "boundnode/n1/j1", r1),
                             ("PUT", ix + "boundnode/n2/j2", r1)]


def test_revoking_a_lease_deletes_its_entries_with_events(store: Store, ix: str) -> None:
    lease = store.lease_grant(60)
    store.txn([], [Put(ix + "node/a", b"", lease), Put(ix + "node/b", b"", lease), Put(ix + "other", b"")])
    assert store.get(ix + "node/a").lease == lease  # type: ignore[union-attr]
    with store.watch(ix + "node/") as w:
        store.lease_revoke(lease)
        events = collect(w, 2)
    assert sorted((e.type, e.kv.key) for e in events) == [("DELETE", ix + "node/a"), ("DELETE", ix + "node/b")]
    assert [kv.key for kv in store.range(ix).kvs] == [ix + "other"]


def test_a_watch_of_entries_from_a_compacted_revision_is_refused(store: Store, ix: str) -> None:
    r1 = store.put(ix + "a", b"")
    r2 = store.put(ix + "b", b"")
    store.put(ix + "c", b"")
    store.compact(r2)
    with pytest.raises(Compacted):
        w = store.watch(ix, start_revision=r1)
        try:
            w.poll(1)
        finally:
            w.close()
    with store.watch(ix, start_revision=r2 + 1) as w:
        assert [(e.kv.key) for e in collect(w, 1)] == [ix + "c"]
    assert store.count(ix) == 3


def test_entries_put_again_by_a_txn_without_gets_keep_their_create_revision(store: Store, ix: str) -> None:
    r1 = store.txn([], [Put(ix + "a", b""), Put(ix + "b", b""), Put(ix + "ü/ß", b"")]).revision
    lease = store.lease_grant(60)
    with store.watch(ix) as w:
        r2 = store.txn([], [Put(ix + "a", b"", lease), Put(ix + "c", b""), Put(ix + "ü/ß", b"")]).revision
        events = collect(w, 3)
    assert sorted((e.kv.key, e.revision, e.kv.create_revision, e.kv.version, e.kv.lease) for e in events) == [
        (ix + "a", r2, r1, 2, lease), (ix + "c", r2, r2, 1, 0), (ix + "ü/ß", r2, r1, 2, 0)]
    a = store.get(ix + "a")
    assert a is not None and (a.create_revision, a.mod_revision, a.version, a.lease) == (r1, r2, 2, lease)
    assert [kv.key for kv in store.range(ix).kvs] == [ix + "a", ix + "b", ix + "c", ix + "ü/ß"]


def test_entries_written_out_of_order_with_characters_json_escapes(store: Store, ix: str) -> None:
    """A txn's entries are sorted by the store and handed to SQLite as one JSON array: names
    given in any order, and names holding quotes, backslashes, control characters or
    non-ASCII text, all read back as written, in key order."""
    odd = ["z", 'q"uote', "back\\slash", "tab\there", "nul\x00", "é\u2028", "a"]
    rev = store.txn([], [Put(ix + "odd/" + n, b"") for n in odd]).revision
    res = store.range(ix + "odd/")
    assert [kv.key for kv in res.kvs] == sorted(ix + "odd/" + n for n in odd)
    assert {(kv.create_revision, kv.mod_revision, kv.version) for kv in res.kvs} == {(rev, rev, 1)}
    plain = [f"{i:03d}" for i in range(50, 0, -1)]
    store.txn([], [Put(ix + "plain/" + n, b"") for n in plain])
    assert [kv.key for kv in store.range(ix + "plain/", keys_only=True).kvs] == sorted(ix + "plain/" + n for n in plain)
