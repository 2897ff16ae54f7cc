"""range (prefix, limit, start_after, keys_only) and count."""

from __future__ import annotations

import pytest

from store import Put, Store


def _load(store: Store, keys: list[str], value: bytes = b"v", batch: int = 1000) -> int:
    rev = 0
    for i in range(0, len(keys), batch):
        rev = store.txn([], [Put(k, value) for k in keys[i : i + batch]]).revision
    return rev


def test_range_returns_prefix_in_key_order_and_nothing_else(store: Store, ns: str) -> None:
    _load(store, [ns + "b/2", ns + "b/1", ns + "b/10", ns + "a/1", ns + "b", ns + "c/1", ns + "b/\u00e9"])
    res = store.range(ns + "b/")
    assert [kv.key for kv in res.kvs] == [ns + "b/1", ns + "b/10", ns + "b/2", ns + "b/\u00e9"]
    assert res.more is False and res.continue_key is None
    assert res.revision == store.current_revision()
    assert all(kv.value == b"v" for kv in res.kvs)


def test_empty_prefix_range_and_count(store: Store, ns: str) -> None:
    assert store.range(ns + "nothing/").kvs == []
    assert store.count(ns + "nothing/") == 0


def test_keys_only_leaves_values_empty_but_keeps_revisions(store: Store, ns: str) -> None:
    rev = _load(store, [ns + "x", ns + "y"], value=b"payload")
    res = store.range(ns, keys_only=True)
    assert [(kv.key, kv.value, kv.mod_revision, kv.version) for kv in res.kvs] == [
        (ns + "x", b"", rev, 1),
        (ns + "y", b"", rev, 1),
    ]


def test_limit_and_start_after_page_through(store: Store, ns: str) -> None:
    keys = [f"{ns}k{i:02d}" for i in range(25)]
    _load(store, keys)
    res = store.range(ns, limit=10)
    assert [kv.key for kv in res.kvs] == keys[:10] and res.more and res.continue_key == keys[9]
    res = store.range(ns, limit=10, start_after=res.continue_key)
    assert [kv.key for kv in res.kvs] == keys[10:20] and res.more
    res = store.range(ns, limit=10, start_after=res.continue_key)
    assert [kv.key for kv in res.kvs] == keys[20:] and not res.more and res.continue_key is None
    # exactly one page worth: no "more"
    assert not store.range(ns, limit=25).more
    # start_after need not be an existing key
    assert [kv.key for kv in store.range(ns, start_after=f"{ns}k19x").kvs] == keys[20:]


def test_count_counts_only_the_prefix(store: Store, ns: str) -> None:
    _load(store, [f"{ns}a/{i}" for i in range(120)] + [f"{ns}b/{i}" for i in range(7)] + [ns + "a"])
    assert store.count(ns + "a/") == 120
    assert store.count(ns + "b/") == 7
    assert store.count(ns) == 128
    store.delete(ns + "a/5")
    assert store.count(ns + "a/") == 119


@pytest.mark.slow
def test_pagination_over_100k_keys_sees_each_key_once_in_order(store: Store, ns: str, backend: str) -> None:
    n = 100_000
    keys = [f"{ns}jobs/default/job-{i:06d}" for i in range(n)]
    # etcd's default --max-txn-ops is 128: a member started with its defaults takes 100 a txn.
    _load(store, keys, value=b'{"spec":{}}', batch=100 if backend == "etcd-defaults" else 1000)
    _load(store, [f"{ns}other/{i}" for i in range(100)])
    assert store.count(ns + "jobs/") == n
    assert store.count(ns + "jobs/default/job-01") == 10_000
    seen: list[str] = []
    after = None
    while True:
        page = store.range(ns + "jobs/", limit=1000, start_after=after, keys_only=True)
        seen.extend(kv.key for kv in page.kvs)
        after = page.continue_key
        if not page.more:
            break
    assert seen == keys
    full = store.range(ns + "jobs/")
    assert len(full.kvs) == n and full.kvs[-1].value == b'{"spec":{}}'


def test_intersect_keeps_the_suffixes_under_every_prefix_in_key_order(store: Store, ns: str) -> None:
    a, b, c = ns + "idx/state/RUNNING/", ns + "idx/label/run%3D5/", ns + "idx/label/exp%3Dfoo/"
    _load(store, [a + n for n in ("j3", "j1", "j2", "j\u00e9", "j9")] + [b + n for n in ("j2", "j1", "j\u00e9", "j7")]
          + [c + n for n in ("j1", "j\u00e9", "j2", "j8")] + [ns + "idx/state/RUNNINGX/j4", ns + "idx/state/RUNNING"])
    assert store.intersect([a, b, c]) == ["j1", "j2", "j\u00e9"]
    assert store.intersect([c, a]) == ["j1", "j2", "j\u00e9"]
    assert store.intersect([a]) == ["j1", "j2", "j3", "j9", "j\u00e9"]
    assert store.intersect([a, a, b]) == ["j1", "j2", "j\u00e9"]
    assert store.intersect([a, ns + "idx/none/"]) == []
    assert store.intersect([]) == []
    store.delete(b + "j2")
    assert store.intersect([a, b, c]) == ["j1", "j\u00e9"]


def test_intersect_of_a_few_candidates_with_a_big_prefix(store: Store, ns: str) -> None:
    # few candidates against many keys: etcd looks each candidate up instead of reading the range
    big, small = ns + "idx/label/exp%3Dfoo/", ns + "idx/state/RUNNING/"
    _load(store, [big + f"j{i:03d}" for i in range(60)] + [big + "j\u00e9", big + "j001x"]
          + [small + n for n in ("j007", "j\u00e9", "j500", "j001")] + [ns + "idx/label/exp%3Dfoo"])
    assert store.intersect([big, small]) == ["j001", "j007", "j\u00e9"]
    store.delete(big + "j007")
    assert store.intersect([small, big]) == ["j001", "j\u00e9"]
    assert store.intersect([small, big, ns + "idx/label/run%3D5/"]) == []
