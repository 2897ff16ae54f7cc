"""The retry decisions of the hook reconciler, one rule each: ``retry.limit`` counts retries
after the first run, ``onExitCodes`` picks which exits are retried (timeouts always are), a job
without a policy is not retried after an error but is after a timeout (3 times by default),
and a backoff that has already passed does not hold the restart."""

from __future__ import annotations

from datetime import timedelta

import pytest

from apis import JobState, utcnow

from .conftest import force, make_job
from .test_dependency import wait_for


def _ran(registry, name: str, **spec) -> None:
    registry.create(make_job(name, **spec))
    wait_for(registry, name, JobState.PREPROCESSED)


def test_limit_zero_never_retries(registry, app, lifecycle):
    _ran(registry, "once", retry={"limit": 0})
    force(registry, "once", JobState.RUN_ERROR, return_code=1, attempts=1)
    job = wait_for(registry, "once", JobState.FAILED)
    assert job.status.message == "exited with code 1; gave up after 1 attempt(s) (retry.limit 0)"


def test_the_last_allowed_retry_then_give_up(registry, app, lifecycle):
    _ran(registry, "two", retry={"limit": 2})
    force(registry, "two", JobState.RUN_ERROR, return_code=4, attempts=2)
    job = wait_for(registry, "two", JobState.RESTART_READY)
    assert job.status.message == "exited with code 4; retry 2 of 2"
    force(registry, "two", JobState.RUN_ERROR, return_code=4, attempts=3)
    job = wait_for(registry, "two", JobState.FAILED)
    assert job.status.message == "exited with code 4; gave up after 3 attempt(s) (retry.limit 2)"


def test_no_policy_means_an_error_is_not_retried(registry, app, lifecycle):
    _ran(registry, "plain")
    force(registry, "plain", JobState.RUN_ERROR, return_code=9, attempts=1)
    job = wait_for(registry, "plain", JobState.FAILED)
    assert job.status.message == "exited with code 9; no retry policy allows another attempt"


@pytest.mark.parametrize(("code", "retried"), [(75, True), (76, False), (0, False)])
def test_only_the_listed_exit_codes_are_retried(registry, app, lifecycle, code, retried):
    _ran(registry, "picky", retry={"limit": 3, "onExitCodes": [75, 1]})
    force(registry, "picky", JobState.RUN_ERROR, return_code=code, attempts=1)
    if retried:
        assert wait_for(registry, "picky", JobState.RESTART_READY).status.message == f"exited with code {code}; retry 1 of 3"
    else:
        job = wait_for(registry, "picky", JobState.FAILED)
        assert job.status.message == f"exited with code {code}; no retry policy allows another attempt"


def test_timeouts_retry_three_times_by_default(registry, app, lifecycle):
    _ran(registry, "slow")
    force(registry, "slow", JobState.RUN_TIMEOUT, attempts=3)
    assert wait_for(registry, "slow", JobState.RESTART_READY).status.message == "timed out; retry 3 of 3"
    force(registry, "slow", JobState.RUN_TIMEOUT, attempts=4)
    job = wait_for(registry, "slow", JobState.FAILED)
    assert job.status.message == "timed out; gave up after 4 attempt(s) (retry.limit 3)"


def test_a_timeout_is_retried_whatever_the_exit_codes_listed(registry, app, lifecycle):
    _ran(registry, "slowpicky", retry={"limit": 1, "onExitCodes": [75]})
    force(registry, "slowpicky", JobState.RUN_TIMEOUT, return_code=-15, attempts=1)
    assert wait_for(registry, "slowpicky", JobState.RESTART_READY).status.message == "timed out; retry 1 of 1"
    force(registry, "slowpicky", JobState.RUN_TIMEOUT, return_code=-15, attempts=2)
    wait_for(registry, "slowpicky", JobState.FAILED)


def test_a_backoff_already_past_or_without_an_end_time_restarts_at_once(registry, app, lifecycle):
    _ran(registry, "past", retry={"limit": 1, "backoffSeconds": 600})
    force(registry, "past", JobState.RUN_ERROR, return_code=1, attempts=1, end_time=utcnow() - timedelta(hours=1))
    wait_for(registry, "past", JobState.RESTART_READY)
    _ran(registry, "noend", retry={"limit": 1, "backoffSeconds": 600})
    force(registry, "noend", JobState.RUN_ERROR, return_code=1, attempts=1, end_time=None)
    wait_for(registry, "noend", JobState.RESTART_READY)
