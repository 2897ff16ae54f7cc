"""Several sites on one store, through Balsam's Python API: Site.objects, site.id/path,
Job(site_name=...) placed in that Site's namespace, unknown sites refused at creation,
Job.objects.filter(site_id=...)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import store as st
from apis import App, Invalid, Job, ObjectMeta, Site, SiteSpec
from apis._client import DoesNotExist, MultipleObjectsReturned
from apis._registry import Registry


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[Registry]:
    s = st.open_store(f"sqlite:///{tmp_path / 'store.db'}")
    r = Registry(s)
    for name in ("polaris", "aurora"):  # one namespace per site, as on a shared store
        r.create(Site(metadata=ObjectMeta(name=name, namespace=name), spec=SiteSpec(path=f"/home/me/{name}-dir")))
        r.create(App(metadata={"name": "hello", "namespace": name}, spec={"command": "/bin/true"}))
    yield r
    s.close()


def test_site_objects_get_by_name_and_path(reg: Registry) -> None:
    sites = Site.objects.using(reg)
    site = sites.get(name="polaris", path="polaris-dir")
    assert site.id == "polaris" and site.metadata.namespace == "polaris"
    assert site.path == Path("/home/me/polaris-dir") and site.path / "data" == Path("/home/me/polaris-dir/data")
    assert sites.get(id="aurora").path.name == "aurora-dir"
    assert sorted(s.id for s in sites.all()) == ["aurora", "polaris"]
    with pytest.raises(DoesNotExist):
        sites.get(name="polaris", path="aurora-dir")
    reg.create(Site(metadata=ObjectMeta(name="polaris", namespace="default"), spec=SiteSpec(path="/elsewhere")))
    with pytest.raises(MultipleObjectsReturned):
        sites.get(name="polaris")
    assert sites.get(name="polaris", namespace="polaris").path.name == "polaris-dir"


def test_a_job_goes_to_the_namespace_of_the_site_it_names(reg: Registry) -> None:
    jobs = Job.objects.using(reg)
    created = jobs.bulk_create([Job(app_id="hello", workdir=f"p/{i}", site_name="polaris") for i in range(3)]
                               + [Job(app_id="hello", workdir="a/0", site_name="aurora")])
    assert [j.metadata.namespace for j in created] == ["polaris"] * 3 + ["aurora"]
    polaris = Site.objects.using(reg).get(name="polaris")
    assert sorted(j.workdir.name for j in jobs.filter(site_id=polaris.id)) == ["0", "1", "2"]
    assert [j.workdir.name for j in jobs.filter(site_id="aurora")] == ["0"]
    assert reg.count(Job, "default") == 0


def test_a_job_naming_an_unknown_site_is_refused_and_nothing_is_written(reg: Registry) -> None:
    jobs = Job.objects.using(reg)
    with pytest.raises(Invalid, match='spec.site: Not found: "nowhere"'):
        jobs.bulk_create([Job(app_id="hello", workdir="x/0", site_name="polaris"),
                          Job(app_id="hello", workdir="x/1", site_name="nowhere")])
    assert all(reg.count(Job, ns) == 0 for ns in ("default", "polaris", "aurora"))
    # A site of another namespace is not this namespace's: named explicitly, still refused.
    with pytest.raises(Invalid, match="spec.site"):
        reg.create(Job(app_id="hello", workdir="x/2", site_name="aurora", namespace="polaris"))
