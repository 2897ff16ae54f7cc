"""A job that can NEVER run is refused when written (``Job(...).save()``, ``create``,
``bulk_create``), store unchanged: a Site other than its App's, more nodes or wall time than
any queue of its site allows, more CPUs/GPUs per node than the site's declared node; and
parents that do not exist. What some site could still run is accepted."""

from __future__ import annotations

import pytest

import apis
from apis import App, AppSpec, Invalid, Job, NotFound, ObjectMeta, Site, SiteSpec
from tests.apis.conftest import Backend


@pytest.fixture
def sited(backend: Backend) -> Backend:
    ns, reg = backend.namespace, backend.registry
    reg.create(Site(metadata=ObjectMeta(name="big", namespace=ns), spec=SiteSpec.model_validate({
        "path": "/big", "queues": {"debug": {"maxNodes": 2, "maxWallTimeMin": 60},
                                    "prod": {"maxNodes": 128, "maxWallTimeMin": 720}},
        "nodeDefaults": {"cpus": 64, "gpus": 4}})))
    reg.create(Site(metadata=ObjectMeta(name="small", namespace=ns), spec=SiteSpec.model_validate({
        "path": "/small", "queues": {"q": {"maxNodes": 4, "maxWallTimeMin": 30}},
        "nodeDefaults": {"cpus": 8}})))
    backend.app("echo", "echo {{ x }}")
    reg.create(App(metadata=ObjectMeta(name="bound", namespace=ns),
                   spec=AppSpec.model_validate({"command": "echo {{ x }}", "site": "small",
                                                "parameters": {"x": {"required": True}}})))
    return backend


def _mgr(b: Backend) -> apis.Manager[Job]:
    return Job.objects.using(b.registry, namespace=b.namespace)


REFUSED = [
    ("other-site-than-app", dict(app_id="bound", site_name="big"),
     r'spec\.site: Invalid value: "big": App "bound" runs only at Site "small"'),
    ("too-many-nodes", dict(app_id="echo", num_nodes=129), r"numNodes: Invalid value: 129: more nodes than any queue"),
    ("too-many-nodes-for-named-site", dict(app_id="echo", site_name="small", num_nodes=5),
     r'largest maxNodes: 4'),
    ("too-many-nodes-for-apps-site", dict(app_id="bound", num_nodes=5), r'Site "small"'),
    ("wall-time-over-every-queue", dict(app_id="echo", wall_time_min=721), r"wallTimeMin: Invalid value: 721"),
    ("too-many-cpus", dict(app_id="echo", ranks_per_node=65), r"needs 65 CPUs per node"),
    ("too-many-gpus", dict(app_id="echo", site_name="big", ranks_per_node=2, gpus_per_rank=3),
     r"needs 6 GPUs per node; a node of Site \"big\" has 4"),
]


@pytest.mark.parametrize("kw, expect", [pytest.param(k, e, id=i) for i, k, e in REFUSED])
def test_a_job_no_site_could_run_is_refused_and_nothing_is_written(sited: Backend, kw: dict[str, object],
                                                                   expect: str) -> None:
    reg, ns = sited.registry, sited.namespace
    rev = reg.store.current_revision()
    with pytest.raises(Invalid, match=expect):
        _mgr(sited).create(workdir="w", parameters={"x": "1"}, **kw)
    with apis.using(reg, namespace=ns), pytest.raises(Invalid, match=expect):
        Job(workdir="w", parameters={"x": "1"}, **kw).save()
    good = [Job(app_id="echo", workdir=f"ok{i}", parameters={"x": "1"}) for i in range(3)]
    with pytest.raises(Invalid, match=expect):
        _mgr(sited).bulk_create([*good, Job(workdir="bad", parameters={"x": "1"}, **kw)])
    assert reg.store.current_revision() == rev
    assert reg.count(Job, ns) == 0


ACCEPTED = [
    ("fits-the-largest-queue", dict(app_id="echo", num_nodes=128, wall_time_min=720)),
    ("one-site-can-though-another-cannot", dict(app_id="echo", num_nodes=100, ranks_per_node=64)),
    ("app-bound-and-same-site", dict(app_id="bound", site_name="small", num_nodes=4)),
    ("gpus-within-the-node", dict(app_id="echo", ranks_per_node=4, gpus_per_rank=1)),
    ("no-wall-time-given", dict(app_id="echo", wall_time_min=0)),
    # "small" leaves nodeDefaults.gpus at its default: its agents report their GPUs, none known before
    ("gpus-where-none-are-declared", dict(app_id="echo", site_name="small", gpus_per_rank=8)),
]


@pytest.mark.parametrize("kw", [pytest.param(k, id=i) for i, k in ACCEPTED])
def test_a_job_some_site_could_run_is_accepted(sited: Backend, kw: dict[str, object]) -> None:
    job = _mgr(sited).create(workdir="w", parameters={"x": "1"}, **kw)
    assert sited.registry.get(Job, job.name, sited.namespace).spec.resources.num_nodes == job.num_nodes


def test_with_no_site_or_default_node_shape_nothing_is_refused(backend: Backend) -> None:
    backend.app("echo", "echo {{ x }}")
    mgr = _mgr(backend)
    mgr.create(app_id="echo", workdir="a", parameters={"x": "1"}, num_nodes=10_000, wall_time_min=10**6)
    backend.registry.create(Site(metadata=ObjectMeta(name="laptop", namespace=backend.namespace),
                                 spec=SiteSpec(path="/l")))  # what ``balsamctl init`` writes: no queues
    mgr.create(app_id="echo", workdir="b", parameters={"x": "1"}, ranks_per_node=256, gpus_per_rank=2)
    assert mgr.count() == 2


def test_an_edit_that_makes_a_job_unrunnable_is_refused(sited: Backend) -> None:
    job = _mgr(sited).create(app_id="echo", workdir="w", parameters={"x": "1"}, num_nodes=2)
    job.num_nodes = 1000
    with pytest.raises(Invalid, match="more nodes than any queue"):
        job.save()
    assert sited.registry.get(Job, job.name, sited.namespace).spec.resources.num_nodes == 2


def test_a_parent_that_does_not_exist_is_refused(sited: Backend) -> None:
    rev = sited.registry.store.current_revision()
    with pytest.raises((NotFound, Invalid), match="ghost"):
        _mgr(sited).create(app_id="echo", workdir="w", parameters={"x": "1"}, parent_ids=["ghost"])
    assert sited.registry.store.current_revision() == rev
