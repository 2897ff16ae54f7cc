"""``filter(workdir=...)`` and ``filter(site_name=...)`` (``--field-selector spec.workdir=/spec.site=``)
are answered from the workdir and site indexes, and stay correct on a store written before
those indexes existed: it is re-indexed on first use, or scanned where the client may not write."""

from __future__ import annotations

import pytest

import store as st
from apis import Job, ObjectMeta, Registry, Site, SiteSpec
from apis._registry import index_prefix, index_schema_key
from tests.apis.conftest import Backend


@pytest.fixture
def seeded(backend: Backend) -> Backend:
    ns = backend.namespace
    backend.app("echo", "echo {{ x }}")
    backend.registry.create(Site(metadata=ObjectMeta(name="theta", namespace=ns), spec=SiteSpec(path="/p")))
    mgr = Job.objects.using(backend.registry, namespace=ns)
    mgr.bulk_create([Job(app_id="echo", workdir=f"runs/{i % 3}", parameters={"x": str(i)},
                         site_name="theta" if i % 2 else None) for i in range(12)])
    return backend


def _names(qs: object) -> set[str]:
    return {j.name for j in qs}  # type: ignore[attr-defined]


def _expected(backend: Backend, pred: object) -> set[str]:
    jobs, _ = backend.registry.list(Job, backend.namespace)
    return {j.metadata.name for j in jobs if pred(j)}  # type: ignore[operator]


def test_workdir_and_site_filters_read_their_index_entries(seeded: Backend) -> None:
    reg, ns = seeded.registry, seeded.namespace
    assert reg.store.count(index_prefix(Job, "workdir", ns, "runs/1")) == 4
    assert reg.store.count(index_prefix(Job, "site", ns)) == 6  # only the jobs that name a site
    mgr = Job.objects.using(reg, namespace=ns)
    qs = mgr.filter(workdir="runs/1", site_name="theta")
    assert qs._index == [("workdir", ["runs/1"]), ("site", ["theta"])]  # narrowed by the indexes
    assert _names(qs) == _expected(seeded, lambda j: j.spec.workdir == "runs/1" and j.spec.site == "theta")
    assert mgr.filter(workdir="runs/2").count() == 4
    assert mgr.filter(site_name="theta").count() == 6
    assert _names(mgr.filter(site_name=None)) == _expected(seeded, lambda j: j.spec.site is None)


def test_a_changed_workdir_or_site_moves_its_index_entry(seeded: Backend) -> None:
    reg, ns = seeded.registry, seeded.namespace
    mgr = Job.objects.using(reg, namespace=ns)
    job = mgr.filter(workdir="runs/0", site_name="theta").first()
    assert job is not None
    new = job.model_copy(deep=True)
    new.spec.site = None
    reg.update(job, new)
    assert job.name not in _names(mgr.filter(site_name="theta"))
    assert mgr.filter(site_name="theta").count() == 5


def _strip_new_indexes(reg: Registry) -> None:
    """Make the store look written before the workdir/site indexes: no entries, no schema."""
    for index in ("workdir", "site"):
        for kv in reg.store.range(f"/index/jobs/{index}/", keys_only=True).kvs:
            reg.store.delete(kv.key)
    reg.store.delete(index_schema_key(Job))


def test_a_store_written_before_the_indexes_is_reindexed_on_first_use(seeded: Backend) -> None:
    _strip_new_indexes(seeded.registry)
    fresh = Registry(st.open_store(seeded.url))
    try:
        assert fresh.index_schema(Job) == 1
        mgr = Job.objects.using(fresh, namespace=seeded.namespace)
        want = _expected(seeded, lambda j: j.spec.workdir == "runs/2")
        assert _names(mgr.filter(workdir="runs/2")) == want
        assert mgr.filter(workdir="runs/2").count() == len(want) == 4
        assert mgr.filter(site_name="theta").count() == 6
        assert fresh.index_schema(Job) == max(Job.INDEXES_SINCE)
        assert fresh.store.count(index_prefix(Job, "workdir", seeded.namespace)) == 12
    finally:
        fresh.store.close()


class _ReadOnly(st.Store):
    """A store whose writes are refused, as for a read-only etcd role."""

    def __init__(self, inner: st.Store) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def get(self, key: str) -> st.KeyValue | None:
        return self.inner.get(key)

    def range(self, *a: object, **kw: object) -> st.RangeResult:
        return self.inner.range(*a, **kw)  # type: ignore[arg-type]

    def current_revision(self) -> int:
        return self.inner.current_revision()

    def txn(self, *a: object, **kw: object) -> st.TxnResult:
        raise st.Forbidden("read-only")

    def put(self, *a: object, **kw: object) -> int:
        raise st.Forbidden("read-only")

    def watch(self, *a: object, **kw: object) -> st.Watch:
        return self.inner.watch(*a, **kw)  # type: ignore[arg-type]

    def lease_grant(self, ttl: float) -> int:
        raise st.Forbidden("read-only")

    def lease_revoke(self, lease_id: int) -> None:
        raise st.Forbidden("read-only")

    def delete(self, *a: object, **kw: object) -> int | None:
        raise st.Forbidden("read-only")

    def lease_keepalive(self, lease_id: int) -> float:
        raise st.Forbidden("read-only")

    def compact(self, revision: int) -> None:
        raise st.Forbidden("read-only")

    def get_many(self, keys: object) -> list[st.KeyValue | None]:
        return self.inner.get_many(keys)  # type: ignore[arg-type]

    def count(self, prefix: str) -> int:
        return self.inner.count(prefix)

    def intersect(self, prefixes: object) -> list[str]:
        return self.inner.intersect(prefixes)  # type: ignore[arg-type]

    def close(self) -> None:
        self.inner.close()


def test_a_client_that_cannot_reindex_an_old_store_scans_instead(seeded: Backend) -> None:
    _strip_new_indexes(seeded.registry)
    ro = Registry(_ReadOnly(seeded.registry.store))
    mgr = Job.objects.using(ro, namespace=seeded.namespace)
    qs = mgr.filter(workdir="runs/1")
    assert qs._index == []  # not narrowed by an index the store does not have yet
    assert _names(qs) == _expected(seeded, lambda j: j.spec.workdir == "runs/1")
    assert mgr.filter(site_name="theta").count() == 6
    assert seeded.registry.index_schema(Job) == 1
