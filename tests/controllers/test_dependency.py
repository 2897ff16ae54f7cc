from __future__ import annotations

import time

from apis import Job, JobState, Registry, get_condition
from tests._deadline import DEADLINE
from tests._support import poll_until

from .conftest import force, make_job


def wait_for(registry: Registry, name: str, state: JobState, timeout: float = DEADLINE) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        job = registry.get(Job, name)
        if job.status.state is state:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} is {job.status.state}, expected {state}: {job.status.message}")
        time.sleep(0.01)


def test_plain_job_reaches_preprocessed_in_one_write_with_every_state_in_history(registry, app, lifecycle):
    created = registry.create(make_job("solo"))
    job = wait_for(registry, "solo", JobState.PREPROCESSED)
    assert [h.to_state.value for h in job.status.history] == ["READY", "STAGED_IN", "PREPROCESSED"]
    assert [h.from_state.value for h in job.status.history] == ["CREATED", "READY", "STAGED_IN"]
    # one write after the create: the no-op steps collapsed
    assert int(job.metadata.resource_version) == int(created.metadata.resource_version) + 1


def test_diamond_dag_releases_children_only_when_every_parent_finished(registry, app, lifecycle):
    registry.create_many([make_job("a"), make_job("b", ("a",)), make_job("c", ("a",)), make_job("d", ("b", "c"))])
    wait_for(registry, "a", JobState.PREPROCESSED)
    for n in "bcd":
        wait_for(registry, n, JobState.AWAITING_PARENTS)
    force(registry, "a", JobState.JOB_FINISHED)
    wait_for(registry, "b", JobState.PREPROCESSED)
    wait_for(registry, "c", JobState.PREPROCESSED)
    force(registry, "b", JobState.JOB_FINISHED)
    # the manager saw b finish (its handlers ran), then went idle: d has been looked at
    poll_until(lambda: lifecycle.informers["Job"].state_of("b") is JobState.JOB_FINISHED, DEADLINE, "b seen")
    assert lifecycle.wait_idle(DEADLINE)
    assert registry.get(Job, "d").status.state is JobState.AWAITING_PARENTS
    force(registry, "c", JobState.JOB_FINISHED)
    d = wait_for(registry, "d", JobState.PREPROCESSED)
    assert [h.to_state.value for h in d.status.history][:2] == ["AWAITING_PARENTS", "READY"]


def test_failed_parent_with_wait_keeps_child_waiting_with_a_condition_naming_it(registry, app, lifecycle):
    registry.create_many([make_job("p"), make_job("kid", ("p",))])
    wait_for(registry, "kid", JobState.AWAITING_PARENTS)
    force(registry, "p", JobState.FAILED)
    deadline = time.monotonic() + DEADLINE
    while True:
        kid = registry.get(Job, "kid")
        cond = get_condition(kid.status.conditions, "ParentFailed")
        if cond is not None or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert cond is not None and "p" in cond.message
    assert kid.status.state is JobState.AWAITING_PARENTS


def test_failed_parent_with_fail_fails_the_child_and_its_children_in_turn(registry, app, lifecycle):
    registry.create_many([
        make_job("p"),
        make_job("kid", ("p",), onParentFailure="Fail"),
        make_job("grandkid", ("kid",), onParentFailure="Fail"),
    ])
    wait_for(registry, "grandkid", JobState.AWAITING_PARENTS)
    force(registry, "p", JobState.FAILED)
    kid = wait_for(registry, "kid", JobState.FAILED)
    assert "p" in kid.status.message
    grandkid = wait_for(registry, "grandkid", JobState.FAILED)
    assert "kid" in grandkid.status.message


def test_child_created_after_its_parent_finished_is_released_at_once(registry, app, lifecycle):
    registry.create(make_job("early"))
    wait_for(registry, "early", JobState.PREPROCESSED)
    force(registry, "early", JobState.JOB_FINISHED)
    registry.create(make_job("late", ("early",)))
    wait_for(registry, "late", JobState.PREPROCESSED)
