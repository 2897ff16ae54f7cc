"""The placement scheduler's assume cache and batched binder across write conflicts."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from apis import BatchJob, Conflict, Job, JobState, Node, NodeSpec, ObjectMeta, Placement, Registry
from apis._meta import get_condition, set_condition
from controllers import ControllerManager
from controllers._controller import Context, Request
from controllers._informer import Informer
from controllers._manager import job_indexers
from controllers.dependency import DependencyReconciler
from controllers.hooks import NoHooks
from controllers.placement.packing import JobShape, NodeOccupancy, Packer, PlacementRequest
from controllers.placement.reconciler import KEY, PlacementScheduler, patched
from controllers.placement.scheduler import FIRST_CHUNK, AssumeCache, SchedulingQueue, bind
from tests._deadline import DEADLINE
from tests._support import poll_until, running_manager

from .conftest import force, make_job
from .test_placement import add_node


@pytest.fixture(params=["dependency-releases", "placement-releases"])
def scheduler(request) -> PlacementScheduler:
    """The scheduler; with ``placement-releases`` it also releases plain jobs from CREATED in
    the write that binds them (the manager's default), so every conflict below meets that write."""
    return PlacementScheduler(NoHooks()) if request.param == "placement-releases" else PlacementScheduler()


@pytest.fixture
def placing(registry: Registry, scheduler: PlacementScheduler) -> Iterator[ControllerManager]:
    dep = DependencyReconciler(NoHooks(), placement_binds_ready=scheduler.hooks is not None)
    with running_manager(registry, [dep, scheduler]) as (mgr, _):
        yield mgr


def conflict_on_first_bindings(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Make the first write that binds jobs conflict: just before it lands, every job in it
    is edited by someone else (an annotation, which placement does not look at), so its
    compare-and-swap fails and only the assume cache knows the binding did not land."""
    real = registry.write_status_patches
    moved: list[list[str]] = []

    def write(patches: Any, **kw: Any) -> Any:
        binds = [old for old, fields in patches if fields.get("placement") is not None]
        if binds and not moved:
            moved.append([o.name for o in binds])
            for old in binds:
                registry.mutate(Job, old.name, lambda j: j.metadata.annotations.update({"touched": "yes"}))
        return real(patches, **kw)

    monkeypatch.setattr(registry, "write_status_patches", write)
    return moved


def holding(registry: Registry) -> list[Job]:
    return [j for j in registry.list(Job)[0]
            if j.status.placement is not None and j.status.state in (JobState.PREPROCESSED, JobState.RUNNING)]


def test_a_binding_that_conflicts_is_forgotten_and_never_double_binds_the_slot(
        registry, app, placing, scheduler, monkeypatch):
    moved = conflict_on_first_bindings(registry, monkeypatch)
    add_node(registry, "n0", cpus=1, gpus=0)  # room for exactly one 1-CPU job
    registry.create_many([make_job(n) for n in ("a", "b", "c")])
    poll_until(lambda: len(holding(registry)) == 1, DEADLINE, "one job bound after the conflict")
    assert moved and moved[0], "the conflict was injected"
    assert placing.wait_idle(DEADLINE)
    first = holding(registry)
    assert len(first) == 1
    assert scheduler.assume.assumed == {} or set(scheduler.assume.assumed) <= {first[0].name}
    assert sorted(scheduler.packer.bound_jobs()) == [first[0].name]
    # the slot is freed when the job ends, and only then does the next one bind
    force(registry, first[0].name, JobState.JOB_FINISHED)
    poll_until(lambda: (h := holding(registry)) and h[0].name != first[0].name, DEADLINE, "the next job bound")
    assert placing.wait_idle(DEADLINE)
    assert len(holding(registry)) == 1
    assert sorted(scheduler.packer.bound_jobs()) == [holding(registry)[0].name]


def test_bindings_of_one_pass_are_written_in_one_transaction(registry, app, placing, scheduler, monkeypatch):
    real = registry.write_status_patches
    binding_writes: list[int] = []

    def write(patches: Any, **kw: Any) -> Any:
        n = sum(1 for _, fields in patches if fields.get("placement") is not None)
        if n:
            binding_writes.append(n)
        return real(patches, **kw)

    monkeypatch.setattr(registry, "write_status_patches", write)
    names = [f"j{i}" for i in range(40)]
    registry.create_many([make_job(n, resources={"nodePackingCount": 64}) for n in names])
    poll_until(lambda: all(registry.get(Job, n).status.state is JobState.PREPROCESSED for n in names), DEADLINE,
               "every job preprocessed")
    assert placing.wait_idle(DEADLINE)
    add_node(registry, "big", cpus=64, gpus=0)  # one node event: one pass binds all 40
    poll_until(lambda: len(holding(registry)) == 40, DEADLINE, "all 40 bound")
    assert binding_writes and max(binding_writes) == 40
    # The jobs are bound in the store the moment the transaction commits; the scheduler counts
    # them when write_status_patches returns, a moment later in its own thread.
    poll_until(lambda: scheduler.bindings_written == 40, DEADLINE, "the scheduler to count its 40 bindings")


def _cached(name: str, rv: int, nodes: list[str] | None) -> Job:
    j = Job(metadata=ObjectMeta(name=name, namespace="default", resource_version=str(rv)),
            spec={"app": "a", "workdir": name})  # type: ignore[arg-type]
    j.status.state = JobState.PREPROCESSED
    if nodes is not None:
        j.status.placement = Placement(nodes=nodes, cpus=[0], gpus=[], occupancy=1.0)
    return j


def test_a_cached_version_older_than_the_binding_keeps_its_room_assumed() -> None:
    """The pass does not write its bindings through: until the binding's own event arrives,
    an unrelated event of the job (an older revision) must not release the engine's room."""
    packer = Packer([NodeOccupancy("n0", 1, 0)])
    assume = AssumeCache(packer, SchedulingQueue())
    assume.assume("a", ("n0",))
    assume.landed("a", 10)
    assert assume.confirm(_cached("a", 7, None), "a") is True  # overtaken by an older event
    assert "a" in assume
    assert assume.confirm(_cached("a", 10, ["n0"]), "a") is True  # the binding itself: stop assuming
    assert "a" not in assume
    assume.assume("b", ("n0",))
    assume.landed("b", 12)
    assert assume.confirm(_cached("b", 13, None), "b") is False  # moved on since: sync from the cache
    assert "b" not in assume


class _Recorder:
    """A registry that keeps the scheduler's status patches: its watch events are held back
    until the test applies them (the window this test is about)."""

    def __init__(self) -> None:
        self.rv = 100
        self.patches: list[tuple[list[Any], int]] = []

    def write_status_patches(self, patches: Any, **_: Any) -> int:
        self.rv += 1
        self.patches.append((list(patches), self.rv))
        return self.rv


def _scheduler_with_one_slot(reg: _Recorder) -> tuple[PlacementScheduler, dict[str, Any]]:
    """A scheduler on local informers over ``reg`` with one node of one CPU."""
    informers: dict[str, Any] = {"Job": Informer(reg, Job, "default", job_indexers()),  # type: ignore[arg-type]
                                 "Node": Informer(reg, Node, "default"),  # type: ignore[arg-type]
                                 "BatchJob": Informer(reg, BatchJob, "default")}  # type: ignore[arg-type]
    sched = PlacementScheduler()
    sched.register(informers, lambda req: None)
    informers["Node"].apply_local(Node(metadata=ObjectMeta(name="n0", namespace="default", resource_version="1"),
                                       spec=NodeSpec(hostname="n0", cpus=1, gpus=0)))
    return sched, informers


def test_a_waiting_condition_is_not_written_again_before_its_event_returns() -> None:
    reg = _Recorder()
    sched, informers = _scheduler_with_one_slot(reg)
    for i, name in enumerate(("a", "b", "c")):
        informers["Job"].apply_local(_cached(name, 10 + i, None))

    def run_pass() -> list[tuple[str, bool]]:
        reg.patches = []
        sched.reconcile(Request(KEY, "default"), Context(reg, informers))  # type: ignore[arg-type]
        return [(job.name, "placement" in fields) for batch, _ in reg.patches for job, fields in batch]

    first = run_pass()
    assert sorted(first) == [("a", True), ("b", False), ("c", False)]  # a bound, b and c told why they wait
    held = reg.patches
    sched.queue.mark("b", "c")  # as an event of theirs would: a pass decides them again (no room)
    assert [p for p in run_pass() if not p[1]] == []  # the Waiting events are not back: nothing again
    for batch, rv in held:  # now they come back
        for job, fields in batch:
            new = patched(job, fields)
            new.__dict__["metadata"] = job.metadata.model_copy(update={"resource_version": str(rv)})
            informers["Job"].apply_local(new)
    sched.queue.mark("b", "c")
    assert [p for p in run_pass() if not p[1]] == []  # the cache shows the same words: nothing again


class _ConflictOn(_Recorder):
    """Refuses every write that holds a patch of ``job`` (it moved meanwhile): a batch with it
    conflicts, and so does ``job`` alone."""

    def __init__(self, job: str) -> None:
        super().__init__()
        self.job = job

    def write_status_patches(self, patches: Any, **kw: Any) -> int:
        if any(j.name == self.job for j, _ in patches):
            raise Conflict("jobs.balsam.io", self.job)
        return super().write_status_patches(patches, **kw)


def test_a_waiting_condition_that_conflicts_is_forgotten_and_the_others_land() -> None:
    reg = _ConflictOn("c")
    sched, informers = _scheduler_with_one_slot(reg)
    for i, name in enumerate("abcdef"):
        informers["Job"].apply_local(_cached(name, 10 + i, None))
    sched.reconcile(Request(KEY, "default"), Context(reg, informers))  # type: ignore[arg-type]
    written = sorted(j.name for batch, _ in reg.patches for j, fields in batch if "placement" not in fields)
    assert written == ["b", "d", "e", "f"]
    assert sched.queue.take_marked() == {"c"}  # looked at again next pass
    assert "c" not in sched._waiting_sent  # nothing remembered as written for it


def _unschedulable_steps(sched: PlacementScheduler, reg: _Recorder, informers: dict[str, Any]) -> list[str]:
    """One pass; the jobs it writes an Unschedulable condition for (the steps are not written:
    the test decides what the cache shows next)."""
    ctx = Context(reg, informers)  # type: ignore[arg-type]
    sched.reconcile(Request(KEY, "default"), ctx)
    return [new.name for _, new in ctx.writes.updates
            if get_condition(new.status.conditions, "Unschedulable") is not None]


def _never_fits(rv: int, message: str | None = None) -> Job:
    j = _cached("wide", rv, None)
    j.spec.resources.ranks_per_node = 2  # the only node has one CPU
    if message is not None:
        set_condition(j.status.conditions, "Unschedulable", "True", "NeverFits", message)
    return j


def test_an_unschedulable_step_that_did_not_land_is_written_again_after_a_newer_version_arrives() -> None:
    """The step was decided on a version the store had already moved past (its write
    conflicts); the newer version's event changes nothing placement reads. The next pass
    must still write the condition: a job that never fits without it strands `up --until-done`."""
    reg = _Recorder()
    sched, informers = _scheduler_with_one_slot(reg)
    informers["Job"].apply_local(_never_fits(10))
    assert _unschedulable_steps(sched, reg, informers) == ["wide"]
    informers["Job"].apply_local(_never_fits(11))  # another writer's version, no condition
    assert _unschedulable_steps(sched, reg, informers) == ["wide"]


def test_an_unschedulable_condition_dropped_by_another_writer_is_written_again() -> None:
    reg = _Recorder()
    sched, informers = _scheduler_with_one_slot(reg)
    informers["Job"].apply_local(_never_fits(10))
    assert _unschedulable_steps(sched, reg, informers) == ["wide"]
    message = "needs 2 CPUs per node; largest node has 1"
    informers["Job"].apply_local(_never_fits(11, message))  # the step landed
    assert _unschedulable_steps(sched, reg, informers) == []  # nothing to write again
    informers["Job"].apply_local(_never_fits(12))  # someone removed it
    assert _unschedulable_steps(sched, reg, informers) == ["wide"]


def test_the_queue_offers_each_waiting_job_once_in_priority_order_as_jobs_come_go_and_change() -> None:
    """Few additions are merged by binary insertion, many by one sort; a job re-queued or
    re-keyed (its priority changed) is offered once, at its new place, never twice."""
    rng = random.Random(7)
    q = SchedulingQueue()
    template = PlacementRequest("", JobShape())
    keys: dict[str, tuple[Any, ...]] = {}

    def put(name: str) -> None:
        keys[name] = (-rng.randint(0, 3), rng.random(), name)
        q.put(name, keys[name], template)

    for i in range(500):  # many at once: the sort path
        put(f"j{i}")
    for step in range(60):
        offered = list(q.pairs_in_order())
        names = [n for n, _ in offered]
        assert len(names) == len(set(names)), "a job offered twice"
        assert names == sorted(keys, key=keys.__getitem__), f"step {step}: not in priority order"
        assert all(r is template for _, r in offered)
        for n in rng.sample(names, min(len(names), rng.randint(0, 12))):  # bound or gone
            q.remove(n)
            del keys[n]
        for n in rng.sample(sorted(keys), min(len(keys), 3)):  # re-keyed (priority edited)
            put(n)
        for i in range(rng.randint(0, 5)):  # a trickle of new ones: the insertion path
            put(f"s{step}-{i}")
        if step % 20 == 19:
            for i in range(200):  # a burst: the sort path again
                put(f"b{step}-{i}")
        q.compact()
    assert list(q.in_order()) == sorted(keys, key=keys.__getitem__)


def test_a_batch_shares_one_revision_cell_and_after_a_conflict_each_landed_binding_has_its_own() -> None:
    packer = Packer([NodeOccupancy("n0", 4, 0)])
    queue = SchedulingQueue()
    assume = AssumeCache(packer, queue)
    shape = JobShape(node_packing_count=4)
    decisions = packer.place_pairs((n, PlacementRequest("", shape)) for n in ("a", "b", "c"))
    assert all(d.bound for d in decisions)
    cell: list[int] = [0]
    for d in decisions:
        assume.assume(d.job, d.nodes, cell)
    binds: list[Any] = [(_cached(d.job, 10 + i, None), {"placement": None}) for i, d in enumerate(decisions)]

    ok = _Recorder()
    assert bind(ok, binds, assume, cell=cell) == 3  # type: ignore[arg-type]
    assert cell == [ok.rv]  # one store told all three
    assert {assume.assumed[n][1][0] for n in "abc"} == {ok.rv}

    cell2: list[int] = [0]
    for n in "abc":
        assume.assume(n, ("n0",), cell2)
    reg = _ConflictOn("b")
    assert bind(reg, binds, assume, cell=cell2) == 2  # type: ignore[arg-type]
    assert cell2 == [0]  # the batch did not land as one
    assert "b" not in assume  # forgotten: its room back to the engine, the job queued again
    assert packer.binding("b") is None and sorted(packer.bound_jobs()) == ["a", "c"]
    assert queue.take_marked() == {"b"}
    revs = {n: assume.assumed[n][1] for n in "ac"}
    assert revs["a"] is not revs["c"] and revs["a"][0] > 0 and revs["c"][0] > revs["a"][0]


def test_a_trickle_pass_decides_a_first_chunk_not_the_whole_backlog() -> None:
    """One slot, 300 jobs waiting: the full first pass tells each why it waits without offering
    the engine the jobs of a group it found no room for; a pass after the bound job ends offers
    the engine FIRST_CHUNK jobs, not the backlog."""
    reg = _Recorder()
    sched, informers = _scheduler_with_one_slot(reg)
    for i in range(300):
        informers["Job"].apply_local(_cached(f"j{i:03d}", 10 + i, None))
    offered: list[int] = []
    real = sched.packer.place_pairs

    def place_pairs(pairs: Any) -> Any:
        out = real(pairs)
        offered.append(len(out))
        return out

    sched.packer.place_pairs = place_pairs  # type: ignore[method-assign]

    waited: list[str] = []

    def run_pass() -> list[Job]:
        reg.patches = []
        offered.clear()
        sched.reconcile(Request(KEY, "default"), Context(reg, informers))  # type: ignore[arg-type]
        waited[:] = [job.name for batch, _ in reg.patches for job, fields in batch if "placement" not in fields]
        return _deliver(reg, informers)

    bound = run_pass()
    assert [j.name for j in bound] == ["j000"]
    assert sorted(waited) == [f"j{i:03d}" for i in range(1, 300)]  # the first pass: everyone says why
    assert sum(offered) <= FIRST_CHUNK  # the first chunk found the one slot; the rest were not offered
    for k in range(1, 4):
        done = bound[0].status_copy()
        done.status.state = JobState.JOB_FINISHED
        done.metadata.resource_version = str(reg.rv + 1)
        reg.rv += 1
        informers["Job"].apply_local(done)
        sched.queue.mark(done.name)
        bound = run_pass()
        assert [j.name for j in bound] == [f"j{k:03d}"]
        assert sum(offered) <= FIRST_CHUNK


def test_jobs_of_a_group_without_room_are_not_offered_again_and_still_say_why_in_priority_words() -> None:
    """One slot, 3 jobs of priority 1 then 200 of priority 0 of the same shape: the engine is
    asked about the first few only; every waiting job gets its own Waiting condition, the
    priority-0 ones HeldByPriority (a job of higher priority waits for the same room), and a
    full pass that binds one more writes only that binding (the others' words stand)."""
    reg = _Recorder()
    sched, informers = _scheduler_with_one_slot(reg)
    for i in range(3):
        informers["Job"].apply_local(_with_priority(_cached(f"p{i}", 10 + i, None), 1, 10 + i))
    for i in range(200):
        informers["Job"].apply_local(_cached(f"q{i:03d}", 20 + i, None))
    offered: list[str] = []
    real = sched.packer.place_pairs

    def place_pairs(pairs: Any) -> Any:
        pairs = list(pairs)
        offered.extend(name for name, _ in pairs)
        return real(pairs)

    sched.packer.place_pairs = place_pairs  # type: ignore[method-assign]
    sched.reconcile(Request(KEY, "default"), Context(reg, informers))  # type: ignore[arg-type]
    said = {job.name: get_condition(fields["conditions"], "Waiting")
            for batch, _ in reg.patches for job, fields in batch if "placement" not in fields}
    assert [j.name for j in _deliver(reg, informers)] == ["p0"]
    assert len(offered) < 3 + FIRST_CHUNK + 1  # not the 203 queued
    assert set(said) == {"p1", "p2", *(f"q{i:03d}" for i in range(200))}
    assert {said[n].reason for n in ("p1", "p2")} == {"WaitingForCapacity"}  # type: ignore[union-attr]
    assert {c.reason for n, c in said.items() if n.startswith("q")} == {"HeldByPriority"}  # type: ignore[union-attr]
    assert all(c is not None and c.status == "True" for c in said.values())
    offered.clear()
    informers["Node"].apply_local(Node(metadata=ObjectMeta(name="n1", namespace="default", resource_version="2"),
                                       spec=NodeSpec(hostname="n1", cpus=1, gpus=0)))  # a full pass
    sched.reconcile(Request(KEY, "default"), Context(reg, informers))  # type: ignore[arg-type]
    written = [(job.name, "placement" in fields) for batch, _ in reg.patches for job, fields in batch]
    assert written == [("p1", True)]
    assert len(offered) < 3 + FIRST_CHUNK + 1


def _deliver(reg: _Recorder, informers: dict[str, Any]) -> list[Job]:
    """The scheduler's recorded writes as their watch events: applied to the cache; returns
    the bindings."""
    out = []
    for batch, rv in reg.patches:
        for job, fields in batch:
            new = patched(job, fields)
            new.__dict__["metadata"] = job.metadata.model_copy(update={"resource_version": str(rv)})
            informers["Job"].apply_local(new)
            if "placement" in fields:
                out.append(new)
    reg.patches = []
    return out


def _one_pass(sched: PlacementScheduler, reg: _Recorder, informers: dict[str, Any]) -> list[Job]:
    sched.reconcile(Request(KEY, "default"), Context(reg, informers))  # type: ignore[arg-type]
    return _deliver(reg, informers)


def _finish(reg: _Recorder, informers: dict[str, Any], job: Job) -> None:
    done = job.status_copy()
    done.status.state = JobState.JOB_FINISHED
    reg.rv += 1
    done.metadata = job.metadata.model_copy(update={"resource_version": str(reg.rv)})
    informers["Job"].apply_local(done)


def test_a_binding_whose_write_fails_gives_its_slot_back_and_binds_once_when_it_lands() -> None:
    """The pass assumes its binding in the engine at once; a write that does not land returns
    the slot and queues the job again. The slot is never held for two jobs, and the job's own
    events (its binding seen: CONFIRMED; its end: GONE) are what the next passes go by."""
    reg = _ConflictOn("a")
    sched, informers = _scheduler_with_one_slot(reg)
    for i, name in enumerate("abc"):
        informers["Job"].apply_local(_cached(name, 10 + i, None))
    assert _one_pass(sched, reg, informers) == []  # a was decided, its write refused
    assert sched.packer.binding("a") is None and list(sched.packer.bound_jobs()) == []
    assert sched.assume.assumed == {} and "a" in sched.queue.take_marked()
    sched.queue.mark("a")
    reg.job = ""  # the store takes writes again
    bound = _one_pass(sched, reg, informers)
    assert [j.name for j in bound] == ["a"]  # the oldest, once: b and c still wait
    assert list(sched.packer.bound_jobs()) == ["a"] and sched.packer.node("n0").running_jobs == ["a"]
    assert _one_pass(sched, reg, informers) == []  # its event confirmed the binding: no second one
    assert sched.assume.assumed == {}
    _finish(reg, informers, bound[0])  # GONE: the slot comes back by name, no cache read
    assert [j.name for j in _one_pass(sched, reg, informers)] == ["b"]
    assert sched.packer.node("n0").running_jobs == ["b"]


def _with_priority(job: Job, priority: int, rv: int) -> Job:
    """``job`` with ``priority``, another writer's version at ``rv``."""
    new = job.model_copy(deep=True)
    new.spec.priority = priority
    new.metadata.resource_version = str(rv)
    return new


def test_a_job_whose_priority_changes_is_reordered_by_its_event() -> None:
    reg = _Recorder()
    sched, informers = _scheduler_with_one_slot(reg)
    for i, name in enumerate("abcd"):  # one age: by name
        informers["Job"].apply_local(_cached(name, 10 + i, None))
    bound = _one_pass(sched, reg, informers)
    assert [j.name for j in bound] == ["a"]
    reg.rv += 1
    informers["Job"].apply_local(_with_priority(informers["Job"].get("d"), 5, reg.rv))  # d jumps the queue
    assert _one_pass(sched, reg, informers) == []  # no room meanwhile
    assert list(sched.queue.in_order()) == ["d", "b", "c"]
    _finish(reg, informers, bound[0])
    bound = _one_pass(sched, reg, informers)
    assert [j.name for j in bound] == ["d"]
    reg.rv += 1
    informers["Job"].apply_local(_with_priority(informers["Job"].get("b"), -1, reg.rv))  # and b falls back
    _finish(reg, informers, bound[0])
    assert [j.name for j in _one_pass(sched, reg, informers)] == ["c"]
    assert list(sched.queue.in_order()) == ["b"]


def test_a_new_term_rebuilds_the_queue_from_the_cache_and_a_selector_change_rebuilds_the_requests() -> None:
    """The queue is fed by events; a scheduler registered again (a new leader term, fresh
    informers that listed) gets every job replayed and rebuilds its queue and bindings from
    them alone; a batch job's selector change rebuilds every request from the cache."""
    reg = _Recorder()
    sched, informers = _scheduler_with_one_slot(reg)
    for i, name in enumerate("abcd"):
        informers["Job"].apply_local(_with_priority(_cached(name, 10 + i, None), 1 if name == "c" else 0, 10 + i))
    bound = _one_pass(sched, reg, informers)
    assert [j.name for j in bound] == ["c"]
    again = PlacementScheduler()
    again.register(informers, lambda req: None)  # the replay of the cache is its only input
    assert _one_pass(again, reg, informers) == []  # c holds the slot: its binding was rebuilt
    assert list(again.packer.bound_jobs()) == ["c"]
    assert list(again.queue.in_order()) == ["a", "b", "d"]
    informers["BatchJob"].apply_local(BatchJob(metadata=ObjectMeta(name="bj", namespace="default",
                                                                   resource_version="70"),
                                               spec={"selector": {"team": "x"}}))  # type: ignore[arg-type]
    _finish(reg, informers, bound[0])
    assert [j.name for j in _one_pass(again, reg, informers)] == ["a"]  # n0 belongs to no batch job
    assert {r.batch_jobs for _, r in again.queue.pairs_in_order()} == {frozenset({None})}


def test_a_job_that_starts_where_it_was_bound_needs_no_pass_and_its_end_frees_the_slot() -> None:
    reg = _Recorder()
    informers: dict[str, Any] = {"Job": Informer(reg, Job, "default", job_indexers()),  # type: ignore[arg-type]
                                 "Node": Informer(reg, Node, "default"),  # type: ignore[arg-type]
                                 "BatchJob": Informer(reg, BatchJob, "default")}  # type: ignore[arg-type]
    sched = PlacementScheduler()
    requests: list[Request] = []
    sched.register(informers, requests.append)
    informers["Node"].apply_local(Node(metadata=ObjectMeta(name="n0", namespace="default", resource_version="1"),
                                       spec=NodeSpec(hostname="n0", cpus=1, gpus=0)))
    for i, name in enumerate("ab"):
        informers["Job"].apply_local(_cached(name, 10 + i, None))
    bound = _one_pass(sched, reg, informers)
    assert [j.name for j in bound] == ["a"]
    assert _one_pass(sched, reg, informers) == [] and sched.assume.assumed == {}  # confirmed
    requests.clear()
    running = bound[0].status_copy()
    running.status.state = JobState.RUNNING
    reg.rv += 1
    running.metadata = bound[0].metadata.model_copy(update={"resource_version": str(reg.rv)})
    informers["Job"].apply_local(running)
    assert requests == []  # nothing for placement to do
    assert sched.packer.node("n0").running_jobs == ["a"]
    moved = running.status_copy()  # someone else's binding of it elsewhere on n0: a pass looks
    moved.status.placement = Placement(nodes=["n0"], cpus=[0], gpus=[], occupancy=0.5)
    reg.rv += 1
    moved.metadata = running.metadata.model_copy(update={"resource_version": str(reg.rv)})
    informers["Job"].apply_local(moved)
    assert requests and "a" in sched.queue.take_marked()
    _finish(reg, informers, moved)
    assert [j.name for j in _one_pass(sched, reg, informers)] == ["b"]
    assert sched.packer.node("n0").running_jobs == ["b"]
