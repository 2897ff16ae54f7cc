"""Placement releases plain jobs (issue 19): a job whose every step up to PREPROCESSED is a
no-op is moved from CREATED / AWAITING_PARENTS by the write that binds it (or says why it
waits), with each collapsed step in its history; the dependency reconciler leaves it alone.
Jobs with pending or failed parents, a stage-in transfer or a preprocess hook keep their path."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from apis import App, BatchJob, Job, JobState, Node, NodeSpec, ObjectMeta, Registry, Site, get_condition
from controllers import ControllerManager
from controllers._controller import Context, Request
from controllers._informer import Informer
from controllers._jobcache import JobInformer
from controllers._manager import job_indexers
from controllers.dependency import DependencyReconciler
from controllers.hook import HookReconciler
from controllers.hookpool import ProcessHookRunner
from controllers.hooks import HookRunner, NoHooks
from controllers.placement.reconciler import KEY, PlacementReconciler
from tests._deadline import DEADLINE
from tests._support import poll_until, running_manager

from .conftest import force
from .conftest import make_job as _make_job
from .test_placement import add_node

PLAIN = [("CREATED", "READY", "no parents"), ("READY", "STAGED_IN", "no stage-in transfers"),
         ("STAGED_IN", "PREPROCESSED", "no preprocess hook")]
RELEASED = [("READY", "STAGED_IN", "no stage-in transfers"), ("STAGED_IN", "PREPROCESSED", "no preprocess hook")]


def make_job(name: str, parents: tuple[str, ...] = (), **spec: Any) -> Job:
    """A one-CPU job that shares its node (up to 64 on one)."""
    return _make_job(name, parents, resources={"nodePackingCount": 64}, **spec)


def pair(hooks: HookRunner) -> list[Any]:
    """The manager's default pair: dependency leaves plain jobs to placement."""
    return [DependencyReconciler(hooks, placement_binds_ready=True), HookReconciler(hooks), PlacementReconciler(hooks)]


class Writes:
    """Every write of a job's status made through the registry, by job: (kind of write, state
    written, bound?) — to tell who moved a job, and how many times."""

    def __init__(self, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
        self.by_job: dict[str, list[tuple[str, str, bool]]] = {}
        patches, write = registry.write_status_patches, registry.write

        def write_status_patches(ps: Any, **kw: Any) -> Any:
            rev = patches(ps, **kw)
            for old, fields in ps:
                state = fields.get("state", old.status.state)
                bound = (fields.get("placement") or old.status.placement) is not None
                self.by_job.setdefault(old.name, []).append(("patch", JobState(state).value, bound))
            return rev

        def write_(creates: Any = (), updates: Any = (), *a: Any, **kw: Any) -> Any:
            out = write(creates, updates, *a, **kw)
            for _, new in updates:
                if isinstance(new, Job):
                    self.by_job.setdefault(new.name, []).append(
                        ("update", new.status.state.value, new.status.placement is not None))
            return out

        monkeypatch.setattr(registry, "write_status_patches", write_status_patches)
        monkeypatch.setattr(registry, "write", write_)


@pytest.fixture
def writes(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> Writes:
    return Writes(registry, monkeypatch)


@pytest.fixture
def releasing(registry: Registry, writes: Writes) -> Iterator[ControllerManager]:
    with running_manager(registry, pair(NoHooks())) as (mgr, _):
        yield mgr


def steps(job: Job) -> list[tuple[str, str, str]]:
    return [(h.from_state.value, h.to_state.value, h.message) for h in job.status.history]


def bound_job(registry: Registry, name: str) -> Job:
    return poll_until(lambda: (j := registry.get(Job, name)).status.placement is not None and j, DEADLINE,
                      f"{name} bound")


def test_plain_job_is_released_and_bound_in_one_write_with_every_step_in_history(
        registry, app, writes, releasing):
    add_node(registry, "n0", cpus=4, gpus=0)
    registry.create(make_job("plain"))
    job = bound_job(registry, "plain")
    assert job.status.state is JobState.PREPROCESSED
    assert steps(job) == PLAIN
    assert len({h.time for h in job.status.history}) == 1  # one write, one time
    assert [h.by for h in job.status.history] == ["placement"] * 3  # describe's FROM
    assert job.status.placement.nodes == ["n0"]
    assert job.status.observed_generation == job.metadata.generation
    assert releasing.wait_idle(DEADLINE)
    # The create, then one write: placement's binding, which carried the collapsed steps.
    assert writes.by_job["plain"] == [("patch", "PREPROCESSED", True)]


def test_plain_job_that_must_wait_is_released_in_the_write_of_its_waiting_condition(
        registry, app, writes, releasing):
    add_node(registry, "n0", cpus=1, gpus=0)
    registry.create_many([make_job("first"), make_job("second")])
    poll_until(lambda: all(registry.get(Job, n).status.state is JobState.PREPROCESSED for n in ("first", "second")),
               DEADLINE, "both released")
    assert releasing.wait_idle(DEADLINE)
    jobs = {n: registry.get(Job, n) for n in ("first", "second")}
    waiting = [j for j in jobs.values() if j.status.placement is None]
    assert len(waiting) == 1
    w = waiting[0]
    assert steps(w) == PLAIN
    cond = get_condition(w.status.conditions, "Waiting")
    assert cond is not None and cond.reason == "WaitingForCapacity"
    assert writes.by_job[w.name] == [("patch", "PREPROCESSED", False)]  # one write: steps + condition


def test_job_on_an_allocation_without_nodes_is_released_for_the_elastic_queue_to_see(registry, app, releasing):
    registry.create(make_job("early"))
    job = poll_until(lambda: (j := registry.get(Job, "early")).status.state is JobState.PREPROCESSED and j,
                     DEADLINE, "released with no node")
    assert steps(job) == PLAIN
    assert get_condition(job.status.conditions, "Waiting").reason == "NoNodes"


def test_child_is_released_by_its_binding_when_the_last_parent_finishes(registry, app, writes, releasing):
    add_node(registry, "n0", cpus=4, gpus=0)
    registry.create_many([make_job("p1"), make_job("p2"), make_job("kid", parents=("p1", "p2"))])
    bound_job(registry, "p1")
    bound_job(registry, "p2")
    poll_until(lambda: registry.get(Job, "kid").status.state is JobState.AWAITING_PARENTS, DEADLINE, "kid waits")
    force(registry, "p1", JobState.JOB_FINISHED)
    assert releasing.wait_idle(DEADLINE)
    kid = registry.get(Job, "kid")
    assert kid.status.state is JobState.AWAITING_PARENTS and kid.status.placement is None
    assert get_condition(kid.status.conditions, "Waiting").reason == "WaitingForParents"
    force(registry, "p2", JobState.JOB_FINISHED)
    kid = bound_job(registry, "kid")
    assert steps(kid) == [("CREATED", "AWAITING_PARENTS", "waiting for 2 parent(s)"),
                          ("AWAITING_PARENTS", "READY", "all parents finished"), *RELEASED]
    assert get_condition(kid.status.conditions, "Waiting") is None
    assert [h.by for h in kid.status.history] == ["dependency", "placement", "placement", "placement"]
    assert releasing.wait_idle(DEADLINE)
    # dependency wrote AWAITING_PARENTS (with its condition); placement wrote READY … and the binding
    assert [w[1] for w in writes.by_job["kid"]][-1:] == ["PREPROCESSED"]
    assert [w for w in writes.by_job["kid"] if w[1] not in ("AWAITING_PARENTS",)] == [("patch", "PREPROCESSED", True)]


def test_child_created_after_its_parent_finished_still_starts(registry, app, releasing):
    add_node(registry, "n0", cpus=4, gpus=0)
    registry.create(make_job("old"))
    bound_job(registry, "old")
    force(registry, "old", JobState.JOB_FINISHED)
    assert releasing.wait_idle(DEADLINE)  # the finished parent has left the manager's cache
    registry.create(make_job("late", parents=("old",)))
    late = bound_job(registry, "late")
    assert steps(late) == [("CREATED", "AWAITING_PARENTS", "waiting for parents"),
                           ("AWAITING_PARENTS", "READY", "all parents finished"), *RELEASED]


@pytest.mark.parametrize("policy", ["Wait", "Fail"])
def test_child_of_a_failed_parent_does_what_it_did_before(registry, app, releasing, policy):
    add_node(registry, "n0", cpus=4, gpus=0)
    registry.create_many([make_job("mom"), make_job("kid", parents=("mom",), onParentFailure=policy)])
    bound_job(registry, "mom")
    force(registry, "mom", JobState.FAILED)
    if policy == "Fail":
        kid = poll_until(lambda: (j := registry.get(Job, "kid")).status.state is JobState.FAILED and j,
                         DEADLINE, "kid failed")
        assert "parent job mom failed" in kid.status.message
    else:
        kid = poll_until(lambda: get_condition((j := registry.get(Job, "kid")).status.conditions, "ParentFailed")
                         and j, DEADLINE, "kid told its parent failed")
        assert releasing.wait_idle(DEADLINE)
        kid = registry.get(Job, "kid")
        assert kid.status.state is JobState.AWAITING_PARENTS and kid.status.placement is None
        # the parent retried and finished: the child is released by its binding, conditions gone
        force(registry, "mom", JobState.JOB_FINISHED)
        kid = bound_job(registry, "kid")
        assert kid.status.state is JobState.PREPROCESSED
        assert [c.type for c in kid.status.conditions] == []


def test_job_with_a_stage_in_transfer_is_moved_by_the_dependency_reconciler_not_placement(
        registry, writes, releasing, tmp_path):
    registry.create(Site(metadata={"name": "here"}, spec={  # type: ignore[arg-type]
        "path": str(tmp_path), "transferLocations": {"remote": "file://"}}))
    registry.create(App(metadata={"name": "hello"}, spec={
        "command": "echo hi", "transfers": {"inp": {"direction": "in", "localPath": "in.dat"}}}))
    add_node(registry, "n0", cpus=4, gpus=0)
    registry.create(make_job("staged", site="here", transfers={"inp": "remote:/data/in.dat"}))
    poll_until(lambda: registry.get(Job, "staged").status.state is JobState.READY, DEADLINE, "READY")
    assert releasing.wait_idle(DEADLINE)
    job = registry.get(Job, "staged")
    # no transfer controller runs here: it waits in READY for its stage-in, unbound
    assert job.status.state is JobState.READY and job.status.placement is None
    assert writes.by_job["staged"] == [("update", "READY", False)]


def test_job_whose_app_has_a_preprocess_hook_goes_through_the_hook_step(registry, writes, tmp_path):
    hooks = ProcessHookRunner(store_url=f"sqlite:///{tmp_path}/store.db", site_path=tmp_path)
    recs = [DependencyReconciler(hooks, placement_binds_ready=True), PlacementReconciler(hooks)]  # no hook reconciler
    try:
        with running_manager(registry, recs) as (mgr, _):
            registry.create(App(metadata={"name": "hello"}, spec={
                "python": {"module": "nowhere", "class": "Nope", "hooks": ["preprocess"]}}))
            add_node(registry, "n0", cpus=4, gpus=0)
            poll_until(lambda: (apps := mgr.informers.get("App")) is not None and apps.get("hello") is not None,
                       DEADLINE, "App cached")
            registry.create(make_job("hooked"))
            poll_until(lambda: registry.get(Job, "hooked").status.state is JobState.STAGED_IN, DEADLINE, "STAGED_IN")
            assert mgr.wait_idle(DEADLINE)
    finally:
        hooks.close()
    job = registry.get(Job, "hooked")
    # the dependency reconciler took it to STAGED_IN; PREPROCESSED is the hook reconciler's
    assert job.status.state is JobState.STAGED_IN and job.status.placement is None
    assert writes.by_job["hooked"] == [("update", "STAGED_IN", False)]


def test_many_children_released_at_once_are_each_written_once(registry, app, writes, releasing):
    """Dependency and placement both see every child when the parent finishes: exactly one of
    them writes each child, once, and no slot is given twice."""
    add_node(registry, "n0", cpus=8, gpus=0)
    kids = [f"k{i:02d}" for i in range(40)]
    registry.create_many([make_job("root"), *[make_job(k, parents=("root",)) for k in kids]])
    bound_job(registry, "root")
    poll_until(lambda: all(registry.get(Job, k).status.state is JobState.AWAITING_PARENTS for k in kids),
               DEADLINE, "kids waiting")
    force(registry, "root", JobState.JOB_FINISHED)
    poll_until(lambda: all(registry.get(Job, k).status.state is JobState.PREPROCESSED for k in kids),
               DEADLINE, "kids released")
    assert releasing.wait_idle(DEADLINE)
    jobs = [registry.get(Job, k) for k in kids]
    placed = [j for j in jobs if j.status.placement is not None]
    assert len(placed) == 8
    assert len({tuple(j.status.placement.cpus) for j in placed}) == 8  # disjoint slots
    for j in jobs:
        assert [s[1] for s in steps(j)].count("READY") == 1
        released = [w for w in writes.by_job[j.name] if w[1] != "AWAITING_PARENTS"]
        assert released == [("patch", "PREPROCESSED", j.status.placement is not None)]


def _caches(registry: Registry) -> dict[str, Informer[Any]]:
    return {"Job": JobInformer(registry, "default", job_indexers()), "App": Informer(registry, App, "default")}


def test_dependency_reconcile_writes_nothing_for_a_job_placement_releases(registry, app) -> None:
    caches = _caches(registry)
    caches["App"].apply_local(app)
    job = registry.create(make_job("plain"))
    caches["Job"].apply_local(job)
    mine = DependencyReconciler(NoHooks(), placement_binds_ready=True)
    ctx = Context(registry, caches)
    mine.reconcile(Request("plain"), ctx)
    assert ctx.writes.updates == []
    # without placement releasing (or without its App cached) it is the dependency step's, as before
    for rec, with_app in ((DependencyReconciler(NoHooks()), True), (mine, False)):
        if not with_app:
            caches["App"] = Informer(registry, App, "default")
        ctx = Context(registry, caches)
        rec.reconcile(Request("plain"), ctx)
        expected = [JobState.PREPROCESSED] if with_app else [JobState.STAGED_IN]
        assert [new.status.state for _, new in ctx.writes.updates] == expected


class _Recorder:
    """A registry that keeps the scheduler's status patches (their events never come back)."""

    def __init__(self) -> None:
        self.rv = 100
        self.patches: list[tuple[Any, dict[str, Any]]] = []

    def write_status_patches(self, patches: Any, **_: Any) -> int:
        self.rv += 1
        self.patches.extend(patches)
        return self.rv


def test_a_job_left_out_while_its_app_was_not_cached_is_released_when_the_app_arrives() -> None:
    """Placement looked before the App's event (the job is then the dependency reconciler's,
    which may look after it and leave the job to placement): the App's arrival marks it again."""
    reg = _Recorder()
    informers: dict[str, Any] = {"Job": Informer(reg, Job, "default", job_indexers()),  # type: ignore[arg-type]
                                 "App": Informer(reg, App, "default"),  # type: ignore[arg-type]
                                 "Node": Informer(reg, Node, "default"),  # type: ignore[arg-type]
                                 "BatchJob": Informer(reg, BatchJob, "default")}  # type: ignore[arg-type]
    sched = PlacementReconciler(NoHooks())
    sched.register(informers, lambda req: None)
    informers["Node"].apply_local(Node(metadata=ObjectMeta(name="n0", namespace="default", resource_version="1"),
                                       spec=NodeSpec(hostname="n0", cpus=1, gpus=0)))
    informers["Job"].apply_local(Job(metadata=ObjectMeta(name="a", namespace="default", resource_version="10"),
                                     spec={"app": "hello", "workdir": "a"}))  # type: ignore[arg-type]

    def run_pass() -> list[tuple[str, str, bool]]:
        reg.patches = []
        sched.reconcile(Request(KEY, "default"), Context(reg, informers))  # type: ignore[arg-type]
        return [(job.name, JobState(f.get("state", job.status.state)).value, "placement" in f) for job, f in reg.patches]

    assert run_pass() == []  # no App cached: not placement's to release
    informers["App"].apply_local(App(metadata=ObjectMeta(name="hello", namespace="default", resource_version="11"),
                                     spec={"command": "echo hi"}))  # type: ignore[arg-type]
    assert run_pass() == [("a", "PREPROCESSED", True)]
