"""The dependency decisions, one rule each: when a child waits, is released or fails, and the
conditions that say why it waits (a failed parent under ``onParentFailure: Wait``, a parent
that no longer exists)."""

from __future__ import annotations

from apis import Job, JobState, get_condition
from tests._deadline import DEADLINE
from tests._support import poll_until

from .conftest import force, make_job
from .test_dependency import wait_for


def _condition(registry, name: str, ctype: str, timeout: float = DEADLINE):
    return poll_until(lambda: get_condition(registry.get(Job, name).status.conditions, ctype), timeout,
                      f"{name}: condition {ctype}")


def _seen_then_idle(lifecycle, name: str, state: JobState) -> None:
    """The manager's informer holds ``name`` in ``state`` (so its handlers ran) and every
    queue is idle after that: the reconcilers have looked."""
    poll_until(lambda: lifecycle.informers["Job"].state_of(name) is state, DEADLINE,
               f"the manager to see {name} {state.value}")
    assert lifecycle.wait_idle(DEADLINE)


def test_a_job_without_parents_is_ready_because_it_has_none(registry, app, lifecycle):
    registry.create(make_job("solo"))
    job = wait_for(registry, "solo", JobState.PREPROCESSED)
    assert job.status.history[0].message == "no parents"
    assert "AWAITING_PARENTS" not in [h.to_state.value for h in job.status.history]


def test_a_child_waits_for_every_parent_and_counts_them(registry, app, lifecycle):
    registry.create_many([make_job("p1"), make_job("p2"), make_job("kid", ("p1", "p2"))])
    kid = wait_for(registry, "kid", JobState.AWAITING_PARENTS)
    assert kid.status.history[0].message == "waiting for 2 parent(s)"
    force(registry, "p1", JobState.JOB_FINISHED)
    _seen_then_idle(lifecycle, "p1", JobState.JOB_FINISHED)
    assert registry.get(Job, "kid").status.state is JobState.AWAITING_PARENTS
    force(registry, "p2", JobState.JOB_FINISHED)
    kid = wait_for(registry, "kid", JobState.PREPROCESSED)
    released = [h for h in kid.status.history if h.to_state is JobState.READY]
    assert [h.message for h in released] == ["all parents finished"]


def test_only_a_finished_parent_releases_its_child(registry, app, lifecycle):
    registry.create_many([make_job("p"), make_job("kid", ("p",))])
    wait_for(registry, "kid", JobState.AWAITING_PARENTS)
    for state in (JobState.RUNNING, JobState.RESTART_READY):  # states no lifecycle reconciler moves on
        force(registry, "p", state)
        _seen_then_idle(lifecycle, "p", state)
        assert registry.get(Job, "kid").status.state is JobState.AWAITING_PARENTS, state
    force(registry, "p", JobState.JOB_FINISHED)
    wait_for(registry, "kid", JobState.PREPROCESSED)


def test_failed_parents_under_wait_are_named_with_how_many_more(registry, app, lifecycle):
    registry.create_many([make_job("pa"), make_job("pb"), make_job("pc"), make_job("kid", ("pc", "pb", "pa"))])
    wait_for(registry, "kid", JobState.AWAITING_PARENTS)
    force(registry, "pb", JobState.FAILED)
    cond = _condition(registry, "kid", "ParentFailed")
    assert "pb" in cond.message and "more" not in cond.message
    force(registry, "pa", JobState.FAILED)
    cond = poll_until(lambda: (c := get_condition(registry.get(Job, "kid").status.conditions, "ParentFailed"))
                      and "more" in c.message and c, DEADLINE, "the condition to count both failed parents")
    assert "pa" in cond.message and "1 more" in cond.message  # the first by name, then a count
    assert registry.get(Job, "kid").status.state is JobState.AWAITING_PARENTS


def test_fail_policy_fails_the_child_naming_the_first_failed_parent(registry, app, lifecycle):
    registry.create_many([make_job("pz"), make_job("py"),
                          make_job("kid", ("pz", "py"), onParentFailure="Fail")])
    wait_for(registry, "kid", JobState.AWAITING_PARENTS)
    force(registry, "pz", JobState.FAILED)
    kid = wait_for(registry, "kid", JobState.FAILED)
    assert kid.status.message == "parent job pz failed (onParentFailure: Fail)"


def test_a_parent_that_vanished_is_named_and_the_child_waits(registry, app, lifecycle):
    registry.create_many([make_job("gone"), make_job("kid", ("gone",))])
    wait_for(registry, "kid", JobState.AWAITING_PARENTS)
    registry.delete(Job, "gone")
    cond = _condition(registry, "kid", "ParentMissing")
    assert "gone" in cond.message
    assert registry.get(Job, "kid").status.state is JobState.AWAITING_PARENTS
