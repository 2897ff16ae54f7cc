"""bulk_create against an etcd started with its default limits (128 ops per txn, 1.5 MiB per
request), as a site's etcd run by someone else is: the write is split to fit, each object with
its index keys in one txn (docs/design.md, "Sites on a shared etcd")."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

import store as st
from apis import App, Job
from apis._registry import Registry, index_keys, object_key
from tests._support import registry_on

pytestmark = pytest.mark.etcd


@pytest.fixture
def reg(etcd_defaults_url: str) -> Iterator[tuple[Registry, str]]:
    ns = f"bulk-{uuid.uuid4().hex[:8]}"
    with registry_on(etcd_defaults_url) as r:
        r.create(App(metadata={"name": "hello", "namespace": ns}, spec={"command": "/bin/true"}))
        yield r, ns


def test_bulk_create_of_3000_jobs_fits_a_default_configured_etcd(reg: tuple[Registry, str]) -> None:
    r, ns = reg
    jobs = [Job(app_id="hello", workdir=f"w/{i}", namespace=ns, tags={"batch": "b1", "i": str(i)})
            for i in range(3000)]
    with pytest.raises(st.TooLarge):  # what bulk_create meets: one txn of them all is refused
        r.create_many(jobs[:200])
    created = Job.objects.using(r).bulk_create(jobs)
    assert len(created) == 3000 and len({j.id for j in created}) == 3000
    assert r.count(Job, ns) == 3000
    assert r.index_count(Job, "state", "CREATED", ns) == 3000
    # Each object was written with its index keys in one txn: one revision for all of them.
    for job in created[::97]:
        keys = [object_key(Job, ns, job.id), *sorted(index_keys(job))]
        revs = {kv.mod_revision for kv in r.store.get_many(keys) if kv is not None}
        assert len(revs) == 1 and str(revs.pop()) == job.metadata.resource_version


def test_an_object_alone_over_the_limit_is_refused_whole(reg: tuple[Registry, str]) -> None:
    r, ns = reg
    big = Job(app_id="hello", workdir="w/big", namespace=ns, data={"blob": "x" * (2 << 20)})
    with pytest.raises(st.TooLarge):
        Job.objects.using(r).bulk_create([big])
    assert r.count(Job, ns) == 0
