"""Every waiting job says why, in a condition the controllers write only when it changes:
parents (with the reader's states), capacity, priority, never fits, a failed or deleted
parent, a dependency cycle made by an edit, retries used up; and observedGeneration."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from apis import Event, Job, JobState, Registry, get_condition
from controllers import ControllerManager
from controllers.dependency import DependencyReconciler
from controllers.hook import HookReconciler
from controllers.hooks import NoHooks
from controllers.placement.reconciler import PlacementReconciler
from tests._deadline import DEADLINE
from tests._support import poll_until, running_manager

from .conftest import force, make_job
from .test_placement import add_node

TIMEOUT = DEADLINE


@pytest.fixture
def everything(registry: Registry) -> Iterator[ControllerManager]:
    hooks = NoHooks()
    with running_manager(registry, [DependencyReconciler(hooks), HookReconciler(hooks), PlacementReconciler()]) \
            as (mgr, _):
        yield mgr


def condition_of(registry: Registry, name: str, ctype: str, reason: str | None = None):
    def look():
        c = get_condition(registry.get(Job, name).status.conditions, ctype)
        return c if c is not None and (reason is None or c.reason == reason) else None

    return poll_until(look, TIMEOUT, f"{ctype}/{reason} on {name}")


def state_of(registry: Registry, name: str, state: JobState) -> Job:
    return poll_until(lambda: (j := registry.get(Job, name)).status.state is state and j, TIMEOUT,
                      f"{name} {state.value}")


def test_waiting_for_parents_names_them_and_clears_when_they_finish(registry, app, everything):
    registry.create_many([make_job("p1"), make_job("p2"), make_job("child", ("p1", "p2"))])
    c = condition_of(registry, "child", "Waiting", "WaitingForParents")
    assert c.status == "True" and "p1, p2" in c.message and c.last_transition_time is not None
    for p in ("p1", "p2"):
        state_of(registry, p, JobState.PREPROCESSED)
        force(registry, p, JobState.JOB_FINISHED)
    job = state_of(registry, "child", JobState.PREPROCESSED)
    c = get_condition(job.status.conditions, "Waiting")  # no node here: placement's own reason follows
    assert c is None or c.reason != "WaitingForParents"


def test_a_job_bigger_than_any_node_never_fits(registry, app, everything):
    add_node(registry, "n1", cpus=4, gpus=0)
    registry.create(make_job("huge", resources={"ranksPerNode": 64}))
    c = condition_of(registry, "huge", "Unschedulable", "NeverFits")
    assert c.message == "needs 64 CPUs per node; largest node has 4"
    assert get_condition(registry.get(Job, "huge").status.conditions, "Waiting") is None


def test_waiting_for_capacity_says_what_it_needs_and_clears_once_bound(registry, app, everything):
    add_node(registry, "n1", cpus=4, gpus=0)
    registry.create(make_job("first", resources={"threadsPerRank": 4}))
    poll_until(lambda: registry.get(Job, "first").status.placement, TIMEOUT, "first bound")
    registry.create(make_job("second", resources={"threadsPerRank": 4}))
    c = condition_of(registry, "second", "Waiting", "WaitingForCapacity")
    assert c.message.startswith("needs 4 idle CPUs on one node")
    force(registry, "first", JobState.FAILED)  # its room is free again
    poll_until(lambda: registry.get(Job, "second").status.placement, TIMEOUT, "second bound")
    assert get_condition(registry.get(Job, "second").status.conditions, "Waiting") is None


def test_a_lower_priority_job_is_held_by_priority(registry, app, everything):
    add_node(registry, "n1", cpus=4, gpus=0)
    registry.create(make_job("running", resources={"threadsPerRank": 4}))
    poll_until(lambda: registry.get(Job, "running").status.placement, TIMEOUT, "running bound")
    registry.create_many([make_job("urgent", resources={"threadsPerRank": 4}, priority=10),
                          make_job("later", resources={"threadsPerRank": 4})])
    condition_of(registry, "urgent", "Waiting", "WaitingForCapacity")
    c = condition_of(registry, "later", "Waiting", "HeldByPriority")
    assert "higher priority" in c.message and "needs 4 idle CPUs" in c.message


def test_a_failed_parent_and_a_deleted_parent_are_named(registry, app, everything):
    registry.create_many([make_job("p"), make_job("q"), make_job("child", ("p", "q"))])
    state_of(registry, "p", JobState.PREPROCESSED)
    force(registry, "p", JobState.FAILED)
    c = condition_of(registry, "child", "ParentFailed", "ParentFailed")
    assert "parent job p failed" in c.message and "onParentFailure: Wait" in c.message
    registry.delete(Job, "q")
    c = condition_of(registry, "child", "ParentMissing", "ParentNotFound")
    assert c.message == "parent job q does not exist"
    ev = poll_until(lambda: [e for e in registry.list(Event)[0] if e.reason == "ParentFailed"], TIMEOUT,
                    "a ParentFailed event")
    assert ev[0].involved_object.name == "child" and ev[0].type == "Warning"
    assert ev[0].reporting_controller == "dependency"


def test_an_edit_that_closes_a_cycle_fails_every_job_of_it(registry, app, everything):
    registry.create(make_job("root"))
    state_of(registry, "root", JobState.PREPROCESSED)  # a parent that stays unfinished
    registry.create(make_job("a", ("root",)))
    registry.create(make_job("b", ("a",)))
    condition_of(registry, "b", "Waiting", "WaitingForParents")

    def close(j: Job) -> None:
        j.spec.parents = ["root", "b"]

    registry.mutate(Job, "a", close)
    for name in ("a", "b"):
        job = state_of(registry, name, JobState.FAILED)
        c = get_condition(job.status.conditions, "Failed")
        assert c is not None and c.reason == "DependencyCycle"
        assert "a → b → a" in c.message or "b → a → b" in c.message
    a = registry.get(Job, "a")
    assert a.status.observed_generation == a.metadata.generation == 2
    assert a.status.history[-1].by == "dependency"


def test_retries_used_up_say_so_with_the_last_exit_code(registry, app, everything):
    registry.create(make_job("flaky", retry={"limit": 1}))
    state_of(registry, "flaky", JobState.PREPROCESSED)
    force(registry, "flaky", JobState.RUN_ERROR, return_code=7, attempts=2)
    job = state_of(registry, "flaky", JobState.FAILED)
    c = get_condition(job.status.conditions, "Failed")
    assert c is not None and c.reason == "RetriesExhausted"
    assert "exited with code 7" in c.message and "2 attempt(s)" in c.message
    assert job.status.history[-1].by == "hook"


def test_observed_generation_follows_a_spec_edit_of_a_waiting_job(registry, app, everything):
    registry.create(make_job("p"))
    state_of(registry, "p", JobState.PREPROCESSED)
    registry.create(make_job("w", ("p",)))
    condition_of(registry, "w", "Waiting", "WaitingForParents")
    assert registry.get(Job, "w").status.observed_generation == 1

    def bump(j: Job) -> None:
        j.spec.priority = 3

    registry.mutate(Job, "w", bump)
    poll_until(lambda: registry.get(Job, "w").status.observed_generation == 2, TIMEOUT, "observedGeneration 2")


def test_a_waiting_condition_is_not_rewritten_while_nothing_changes(registry, app, everything):
    """Conditions cost a write only when they change: a pass that finds the same reason
    writes nothing (the job's resourceVersion stays) — checked after a later pass is seen."""
    add_node(registry, "n1", cpus=4, gpus=0)
    registry.create(make_job("hold", resources={"threadsPerRank": 4}))
    poll_until(lambda: registry.get(Job, "hold").status.placement, TIMEOUT, "hold bound")
    registry.create(make_job("wait", resources={"threadsPerRank": 4}))
    condition_of(registry, "wait", "Waiting", "WaitingForCapacity")
    rv = registry.get(Job, "wait").metadata.resource_version
    # Another node too small for it: a full placement pass runs (the positive signal: the
    # newcomer small job below is bound by that pass or the next).
    add_node(registry, "n2", cpus=1, gpus=0)
    registry.create(make_job("small"))
    poll_until(lambda: registry.get(Job, "small").status.placement, TIMEOUT, "small bound")
    assert everything.wait_idle(DEADLINE)
    assert registry.get(Job, "wait").metadata.resource_version == rv
