"""The placement reconciler on a real store: bindings, lost nodes, Unschedulable."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from apis import Job, JobState, Node, Registry, get_condition
from controllers import ControllerManager
from controllers.dependency import DependencyReconciler
from controllers.hooks import NoHooks
from controllers.placement.reconciler import PlacementReconciler
from tests._deadline import DEADLINE
from tests._support import poll_until, running_manager

from .conftest import force, make_job


@pytest.fixture(params=["dependency-releases", "placement-releases"])
def placing(request, registry: Registry) -> Iterator[ControllerManager]:
    """Dependency and placement; with ``placement-releases`` (the manager's default pair), plain
    jobs are released by placement in their binding write instead of by the dependency step."""
    hooks = NoHooks()
    if request.param == "placement-releases":
        recs = [DependencyReconciler(hooks, placement_binds_ready=True), PlacementReconciler(hooks)]
    else:
        recs = [DependencyReconciler(hooks), PlacementReconciler()]
    with running_manager(registry, recs) as (mgr, _):
        yield mgr


def add_node(registry: Registry, name: str, cpus: int = 64, gpus: int = 8, lease: int = 0) -> Node:
    node = Node(metadata={"name": name}, spec={"hostname": name, "cpus": cpus, "gpus": gpus})
    created, _ = registry.write(creates=[node], lease=lease)
    return created[0]


def settle(mgr: ControllerManager, registry: Registry, names: list[str], min_bound: int = 0) -> list[Job]:
    """The jobs once they all left CREATED, ``min_bound`` of them are bound, and the queues
    are idle (idle alone can be seen before the informer delivered the creates)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        jobs = [registry.get(Job, n) for n in names]
        ready = all(j.status.state is not JobState.CREATED for j in jobs) and len(bound(jobs)) >= min_bound
        if ready and mgr.wait_idle(DEADLINE):
            return [registry.get(Job, n) for n in names]
        assert time.monotonic() < deadline, [j.status.state for j in jobs]
        time.sleep(0.02)


def bound(jobs: list[Job]) -> list[Job]:
    return [j for j in jobs if j.status.placement is not None]


@pytest.mark.parametrize(
    ("npc", "gpus_per_rank", "expected"),
    [(8, 1, 16), (4, 1, 8), (8, 8, 2)],
    ids=["all-16-run", "occupancy-limits-to-8", "gpus-limit-to-2"],
)
def test_seed_examples_bind_the_documented_number_of_jobs(registry, app, placing, npc, gpus_per_rank, expected):
    add_node(registry, "n0")
    add_node(registry, "n1")
    names = [f"j{i}" for i in range(16)]
    registry.create_many([make_job(n, resources={"nodePackingCount": npc, "gpusPerRank": gpus_per_rank})
                          for n in names])
    jobs = settle(placing, registry, names, min_bound=expected)
    placed = bound(jobs)
    assert len(placed) == expected
    for node in ("n0", "n1"):
        on = [j for j in placed if j.status.placement.nodes == [node]]
        gpu_sets = [set(j.status.placement.gpus) for j in on]
        assert sum(len(s) for s in gpu_sets) == len(set().union(*gpu_sets)) if gpu_sets else True


def test_unschedulable_job_says_why_and_does_not_block_the_jobs_behind_it(registry, app, placing):
    add_node(registry, "small", cpus=8, gpus=4)
    registry.create(make_job("huge", priority=10, resources={"ranksPerNode": 8, "gpusPerRank": 1}))
    # placement has looked at huge (and found no room) before tiny queues behind it
    poll_until(lambda: get_condition(registry.get(Job, "huge").status.conditions, "Unschedulable"), DEADLINE,
               "huge marked Unschedulable")
    registry.create(make_job("tiny"))
    huge, tiny = settle(placing, registry, ["huge", "tiny"])
    cond = get_condition(huge.status.conditions, "Unschedulable")
    assert cond is not None and "needs 8 GPUs per node; largest node has 4" in cond.message
    assert huge.status.placement is None
    assert tiny.status.placement is not None


def test_jobs_of_a_lost_node_are_moved_on_and_rebound_elsewhere(registry, app, placing):
    # Revoked by the test, never left to expire: a 1 s TTL let a loaded machine lose the Node
    # before "running" was placed on it.
    lease = registry.store.lease_grant(DEADLINE)
    add_node(registry, "doomed", cpus=1, gpus=0, lease=lease)
    registry.create_many([make_job("running"), make_job("waiting")])
    deadline = time.monotonic() + DEADLINE
    while registry.get(Job, "running").status.placement is None and time.monotonic() < deadline:
        time.sleep(0.01)
    force(registry, "running", JobState.RUNNING)
    registry.store.lease_revoke(lease)  # the agent died: its Node vanishes
    deadline = time.monotonic() + DEADLINE
    while registry.get(Job, "running").status.state is not JobState.RUN_TIMEOUT and time.monotonic() < deadline:
        time.sleep(0.01)
    job = registry.get(Job, "running")
    assert job.status.state is JobState.RUN_TIMEOUT and "doomed" in job.status.message
    add_node(registry, "fresh", cpus=1, gpus=0)
    deadline = time.monotonic() + DEADLINE
    while registry.get(Job, "waiting").status.placement is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert registry.get(Job, "waiting").status.placement.nodes == ["fresh"]


def test_multi_node_job_never_lands_on_a_partly_busy_node(registry, app, placing):
    add_node(registry, "a", cpus=4, gpus=0)
    add_node(registry, "b", cpus=4, gpus=0)
    registry.create(make_job("small", resources={"nodePackingCount": 4}))
    settle(placing, registry, ["small"])
    registry.create(make_job("wide", resources={"numNodes": 2}))
    small, wide = settle(placing, registry, ["small", "wide"])
    assert small.status.placement is not None
    assert wide.status.placement is None  # one node is partly busy: wait
    force(registry, "small", JobState.JOB_FINISHED)
    deadline = time.monotonic() + DEADLINE
    while registry.get(Job, "wide").status.placement is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(registry.get(Job, "wide").status.placement.nodes) == ["a", "b"]


def test_higher_priority_jobs_are_placed_first(registry, app, placing):
    registry.create_many([make_job(f"low{i}") for i in range(3)] + [make_job("urgent", priority=5)])
    settle(placing, registry, ["urgent"])
    add_node(registry, "only", cpus=1, gpus=0)
    deadline = time.monotonic() + DEADLINE
    while registry.get(Job, "urgent").status.placement is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert registry.get(Job, "urgent").status.placement is not None
    assert all(registry.get(Job, f"low{i}").status.placement is None for i in range(3))
