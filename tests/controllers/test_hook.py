from __future__ import annotations

from apis import JobState, transition, utcnow
from controllers._controller import Context, Request, Result
from controllers._steps import collapse_from_ready
from controllers.hook import HookReconciler
from controllers.hooks import NoHooks

from .conftest import force, make_job
from .test_dependency import wait_for


def test_successful_run_collapses_to_job_finished_with_every_state_in_history(registry, app, lifecycle):
    registry.create(make_job("ok"))
    wait_for(registry, "ok", JobState.PREPROCESSED)
    force(registry, "ok", JobState.RUN_DONE, return_code=0)
    job = wait_for(registry, "ok", JobState.JOB_FINISHED)
    assert [h.to_state.value for h in job.status.history][-3:] == ["POSTPROCESSED", "STAGED_OUT", "JOB_FINISHED"]


def test_run_error_without_retry_policy_fails_with_the_exit_code(registry, app, lifecycle):
    registry.create(make_job("bad"))
    wait_for(registry, "bad", JobState.PREPROCESSED)
    force(registry, "bad", JobState.RUN_ERROR, return_code=3, attempts=1)
    job = wait_for(registry, "bad", JobState.FAILED)
    assert "3" in job.status.message


def test_run_error_retries_while_attempts_within_the_limit_then_fails(registry, app, lifecycle):
    registry.create(make_job("flaky", retry={"limit": 2}))
    wait_for(registry, "flaky", JobState.PREPROCESSED)
    for attempt in (1, 2):
        force(registry, "flaky", JobState.RUN_ERROR, return_code=1, attempts=attempt)
        wait_for(registry, "flaky", JobState.RESTART_READY)
    force(registry, "flaky", JobState.RUN_ERROR, return_code=1, attempts=3)
    job = wait_for(registry, "flaky", JobState.FAILED)
    assert "3 attempt" in job.status.message


def test_retry_only_on_listed_exit_codes(registry, app, lifecycle):
    registry.create(make_job("picky", retry={"limit": 5, "onExitCodes": [75]}))
    wait_for(registry, "picky", JobState.PREPROCESSED)
    force(registry, "picky", JobState.RUN_ERROR, return_code=75, attempts=1)
    wait_for(registry, "picky", JobState.RESTART_READY)
    force(registry, "picky", JobState.RUN_ERROR, return_code=2, attempts=2)
    wait_for(registry, "picky", JobState.FAILED)


def test_timeouts_retry_by_default_but_not_forever(registry, app, lifecycle):
    registry.create(make_job("slow"))
    wait_for(registry, "slow", JobState.PREPROCESSED)
    force(registry, "slow", JobState.RUN_TIMEOUT, attempts=1)
    wait_for(registry, "slow", JobState.RESTART_READY)
    force(registry, "slow", JobState.RUN_TIMEOUT, attempts=4)
    job = wait_for(registry, "slow", JobState.FAILED)
    assert "timed out" in job.status.message


def test_retry_backoff_delays_the_restart(registry, app, lifecycle):
    from apis import utcnow

    registry.create(make_job("patient", retry={"limit": 1, "backoffSeconds": 0.5}))
    wait_for(registry, "patient", JobState.PREPROCESSED)
    ended = utcnow()
    force(registry, "patient", JobState.RUN_ERROR, return_code=1, attempts=1, end_time=ended)
    job = wait_for(registry, "patient", JobState.RESTART_READY)
    # The rule, read from what the system recorded (a slow machine cannot make it pass or fail):
    # the move to RESTART_READY is not made before the run's end plus the backoff.
    restarted = [e.time for e in job.status.history if e.to_state is JobState.RESTART_READY][-1]
    assert (restarted - ended).total_seconds() >= 0.5


class _Cache(dict):  # type: ignore[type-arg]
    """An informer's read side: ``get(name)``."""


def _ready_job(name: str):
    job = make_job(name)
    transition(job, JobState.READY, "no parents", now=utcnow())
    return job


def test_a_job_whose_app_is_not_in_the_cache_yet_stops_before_its_preprocess_step():
    # The App's event can trail its job's: "no App" must not read as "no hook", or a Python
    # App's preprocess is skipped and the job runs without it (seen as a flaky hook test).
    job = _ready_job("early")
    collapse_from_ready(job, None, NoHooks(), utcnow())
    assert job.status.state is JobState.STAGED_IN
    assert [h.to_state.value for h in job.status.history][-1] == "STAGED_IN"


def test_the_hook_reconciler_waits_for_a_jobs_app_instead_of_taking_the_default_step(registry):
    from controllers.hooks import NoHooks

    job = _ready_job("staged")
    transition(job, JobState.STAGED_IN, "no stage-in transfers", now=utcnow())
    ctx = Context(registry, {"Job": _Cache(staged=job), "App": _Cache()})
    result = HookReconciler(NoHooks()).reconcile(Request("staged", job.namespace), ctx)
    assert isinstance(result, Result) and result.requeue_after is not None
    assert not ctx.writes  # nothing decided without the App
