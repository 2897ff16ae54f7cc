"""The dependency and retry decisions, one reconcile call each: the real reconcilers on real
informer caches (filled with ``apply_local``, no watch), their one step read from the
Context's write buffer. Fast enough to run for every mutant of controllers/dependency.py and
the retry policy of controllers/hook.py (scripts/mutation); the same rules run end to end in
test_dependency*.py and test_hook.py / test_retry_rules.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from apis import App, Job, JobState, Registry, get_condition, open_registry, set_condition, utcnow
from apis import _config as config
from controllers import Informer
from controllers._controller import Context, Request
from controllers.dependency import DependencyReconciler
from controllers.hook import HookReconciler
from controllers.hooks import NoHooks

S = JobState


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = open_registry(f"sqlite:///{tmp_path_factory.mktemp('decisions')}/store.db")
    yield reg
    config.reset()


def job(name: str, state: JobState = S.CREATED, parents: tuple[str, ...] = (), conditions: tuple[str, ...] = (),
        **spec: Any) -> Job:
    j = Job(metadata={"name": name, "resourceVersion": "1"},
            spec={"app": "hello", "workdir": name, "parents": list(parents), **spec})
    j.status.state = state
    for c in conditions:
        set_condition(j.status.conditions, c, "True", c, f"{c} set earlier", utcnow())
    return j


def step(registry: Registry, reconciler: Any, name: str, *jobs: Job) -> tuple[Job | None, Any]:
    """(the job as the reconciler would write it, or None when it writes nothing; the result)."""
    job_cache: Informer[Job] = Informer(registry, Job)
    app_cache: Informer[App] = Informer(registry, App)
    app_cache.apply_local(App(metadata={"name": "hello", "resourceVersion": "1"}, spec={"command": "true"}))
    for j in jobs:
        job_cache.apply_local(j)
    ctx = Context(registry, {"Job": job_cache, "App": app_cache})
    result = reconciler.reconcile(Request(name), ctx)
    assert not ctx.writes.creates and not ctx.writes.deletes
    assert len(ctx.writes.updates) <= 1
    return (ctx.writes.updates[0][1] if ctx.writes.updates else None), result


def states(j: Job) -> list[str]:
    return [h.to_state.value for h in j.status.history]


# --- dependencies ------------------------------------------------------------------------------

DEP = DependencyReconciler(NoHooks())


def test_no_parents_goes_ready_and_on_to_preprocessed(registry):
    new, _ = step(registry, DEP, "solo", job("solo"))
    assert states(new) == ["READY", "STAGED_IN", "PREPROCESSED"]
    assert new.status.history[0].message == "no parents"


def test_created_with_every_parent_finished_passes_through_awaiting(registry):
    new, _ = step(registry, DEP, "kid", job("p", S.JOB_FINISHED), job("kid", parents=("p",)))
    assert states(new) == ["AWAITING_PARENTS", "READY", "STAGED_IN", "PREPROCESSED"]
    assert [h.message for h in new.status.history[:2]] == ["waiting for parents", "all parents finished"]


def test_awaiting_with_every_parent_finished_is_released(registry):
    new, _ = step(registry, DEP, "kid", job("p", S.JOB_FINISHED), job("q", S.JOB_FINISHED),
                  job("kid", S.AWAITING_PARENTS, ("p", "q"), conditions=("ParentFailed", "ParentMissing")))
    assert states(new) == ["READY", "STAGED_IN", "PREPROCESSED"]
    assert get_condition(new.status.conditions, "ParentFailed") is None
    assert get_condition(new.status.conditions, "ParentMissing") is None


def test_a_waiting_job_whose_parents_were_all_edited_away_is_released_as_finished_parents(registry):
    new, _ = step(registry, DEP, "kid", edited(job("kid", S.AWAITING_PARENTS, ())))
    assert states(new) == ["READY", "STAGED_IN", "PREPROCESSED"]
    assert new.status.history[0].message == "all parents finished"


@pytest.mark.parametrize("parent_state", [s for s in S if s is not S.JOB_FINISHED and s is not S.FAILED])
def test_a_parent_not_finished_keeps_the_child_waiting(registry, parent_state):
    new, _ = step(registry, DEP, "kid", job("p", parent_state), job("done", S.JOB_FINISHED),
                  job("kid", parents=("done", "p")))
    assert states(new) == ["AWAITING_PARENTS"]
    assert new.status.history[0].message == "waiting for 1 parent(s)"
    assert [(c.type, c.reason, c.message) for c in new.status.conditions] == [
        ("Waiting", "WaitingForParents", "waiting for its 2 parent job(s) to finish: done, p")]


def test_pending_and_missing_parents_are_counted_and_the_missing_one_named(registry):
    new, _ = step(registry, DEP, "kid", job("p", S.RUNNING), job("kid", parents=("p", "ghost", "alsogone")))
    assert states(new) == ["AWAITING_PARENTS"] and new.status.history[0].message == "waiting for 3 parent(s)"
    cond = get_condition(new.status.conditions, "ParentMissing")
    assert cond is not None and cond.reason == "ParentNotFound" and cond.message == "parent job alsogone does not exist"
    assert get_condition(new.status.conditions, "ParentFailed") is None


def waiting_since_last_look(name: str, parents: tuple[str, ...]) -> Job:
    """A job that waits and was already looked at: its Waiting condition written, its spec
    generation observed."""
    j = job(name, S.AWAITING_PARENTS, parents)
    set_condition(j.status.conditions, "Waiting", "True", "WaitingForParents",
                  f"waiting for its {len(parents)} parent job(s) to finish: " + ", ".join(parents), utcnow())
    j.status.observed_generation = j.metadata.generation
    return j


def test_a_waiting_child_with_nothing_new_is_not_written(registry):
    new, result = step(registry, DEP, "kid", job("p", S.RUNNING), waiting_since_last_look("kid", ("p",)))
    assert new is None and result is None


def test_a_waiting_child_whose_spec_changed_records_the_generation_it_saw(registry):
    kid = waiting_since_last_look("kid", ("p",))
    kid.metadata.generation, kid.status.observed_generation = 2, 1
    new, _ = step(registry, DEP, "kid", job("p", S.RUNNING), kid)
    assert new is not None and new.status.observed_generation == 2


def test_conditions_of_the_past_are_removed_while_still_waiting(registry):
    new, _ = step(registry, DEP, "kid", job("p", S.RUNNING),
                  job("kid", S.AWAITING_PARENTS, ("p",), conditions=("ParentFailed", "ParentMissing")))
    assert new.status.state is S.AWAITING_PARENTS
    assert [c.type for c in new.status.conditions] == ["Waiting"]


def test_failed_parents_under_wait_set_a_condition_naming_the_first_and_counting_the_rest(registry):
    one, _ = step(registry, DEP, "kid", job("b", S.FAILED), job("kid", S.AWAITING_PARENTS, ("b",)))
    cond = get_condition(one.status.conditions, "ParentFailed")
    assert one.status.state is S.AWAITING_PARENTS and cond.status == "True" and cond.reason == "ParentFailed"
    assert cond.message == "parent job b failed; this job waits (onParentFailure: Wait)"
    two, _ = step(registry, DEP, "kid", job("b", S.FAILED), job("a", S.FAILED),
                  job("kid", S.AWAITING_PARENTS, ("b", "a")))
    cond = get_condition(two.status.conditions, "ParentFailed")
    assert cond.message == "parent job a failed; this job waits (onParentFailure: Wait) (and 1 more)"
    three, _ = step(registry, DEP, "kid", job("b", S.FAILED), job("a", S.FAILED), job("c", S.FAILED),
                    job("kid", S.AWAITING_PARENTS, ("c", "b", "a")))
    cond = get_condition(three.status.conditions, "ParentFailed")
    assert cond.message == "parent job a failed; this job waits (onParentFailure: Wait) (and 2 more)"


def test_fail_policy_fails_the_child_naming_the_first_failed_parent(registry):
    new, _ = step(registry, DEP, "kid", job("z", S.FAILED), job("y", S.FAILED), job("x", S.RUNNING),
                  job("kid", S.AWAITING_PARENTS, ("z", "x", "y"), onParentFailure="Fail"))
    assert states(new) == ["FAILED"] and new.status.message == "parent job y failed (onParentFailure: Fail)"
    created, _ = step(registry, DEP, "kid", job("z", S.FAILED), job("kid", parents=("z",), onParentFailure="Fail"))
    assert states(created) == ["FAILED"]


@pytest.mark.parametrize("state", [S.READY, S.PREPROCESSED, S.RUNNING, S.FAILED, S.JOB_FINISHED])
def test_a_job_past_its_parents_is_left_alone(registry, state):
    new, result = step(registry, DEP, "kid", job("p", S.FAILED), job("kid", state, ("p",), onParentFailure="Fail"))
    assert new is None and result is None


def test_a_job_gone_from_the_cache_is_left_alone(registry):
    assert step(registry, DEP, "nobody", job("p")) == (None, None)


# --- retry policy ------------------------------------------------------------------------------

HOOK = HookReconciler(NoHooks())


def failed_run(name: str, state: JobState = S.RUN_ERROR, code: int | None = 1, attempts: int = 1,
               ended_ago: float | None = None, **spec: Any) -> Job:
    j = job(name, state, **spec)
    j.status.return_code = code
    j.status.attempts = attempts
    j.status.end_time = None if ended_ago is None else utcnow() - timedelta(seconds=ended_ago)
    return j


@pytest.mark.parametrize(("limit", "attempts", "to"), [
    (0, 1, S.FAILED), (1, 1, S.RESTART_READY), (1, 2, S.FAILED), (2, 2, S.RESTART_READY), (2, 3, S.FAILED),
])
def test_retry_limit_counts_retries_after_the_first_run(registry, limit, attempts, to):
    new, result = step(registry, HOOK, "j", failed_run("j", attempts=attempts, code=3, retry={"limit": limit}))
    assert result is None and states(new) == [to.value]
    if to is S.RESTART_READY:
        assert new.status.message == f"exited with code 3; retry {attempts} of {limit}"
    else:
        assert new.status.message == f"exited with code 3; gave up after {attempts} attempt(s) (retry.limit {limit})"


def test_an_error_without_a_policy_fails(registry):
    new, _ = step(registry, HOOK, "j", failed_run("j", code=2))
    assert states(new) == ["FAILED"]
    assert new.status.message == "exited with code 2; no retry policy allows another attempt"


def test_a_failed_job_says_why_in_its_failed_condition(registry):
    none, _ = step(registry, HOOK, "j", failed_run("j", code=2))
    cond = get_condition(none.status.conditions, "Failed")
    assert (cond.status, cond.reason, cond.message) == (
        "True", "NoRetry", "the run exited with code 2; no retry policy allows another attempt")
    unlisted, _ = step(registry, HOOK, "j", failed_run("j", code=2, retry={"limit": 5, "onExitCodes": [75]}))
    assert get_condition(unlisted.status.conditions, "Failed").reason == "NoRetry"
    used_up, _ = step(registry, HOOK, "j", failed_run("j", S.RUN_TIMEOUT, code=None, attempts=4))
    cond = get_condition(used_up.status.conditions, "Failed")
    assert (cond.status, cond.reason, cond.message) == (
        "True", "RetriesExhausted", "the run timed out; gave up after 4 attempt(s) (retry.limit 3)")


def test_a_restarted_job_has_no_failed_condition(registry):
    new, _ = step(registry, HOOK, "j", failed_run("j", code=3, retry={"limit": 1}))
    assert states(new) == ["RESTART_READY"] and get_condition(new.status.conditions, "Failed") is None


@pytest.mark.parametrize(("code", "to"), [(75, S.RESTART_READY), (1, S.RESTART_READY), (2, S.FAILED),
                                          (-9, S.FAILED), (None, S.FAILED)])
def test_only_listed_exit_codes_are_retried(registry, code, to):
    new, _ = step(registry, HOOK, "j", failed_run("j", code=code, retry={"limit": 5, "onExitCodes": [75, 1]}))
    assert states(new) == [to.value]
    if to is S.FAILED:
        assert new.status.message.endswith("; no retry policy allows another attempt")


@pytest.mark.parametrize(("attempts", "to"), [(1, S.RESTART_READY), (3, S.RESTART_READY), (4, S.FAILED)])
def test_timeouts_retry_three_times_without_a_policy(registry, attempts, to):
    new, _ = step(registry, HOOK, "j", failed_run("j", S.RUN_TIMEOUT, code=None, attempts=attempts))
    assert states(new) == [to.value]
    if to is S.FAILED:
        assert new.status.message == "timed out; gave up after 4 attempt(s) (retry.limit 3)"
    else:
        assert new.status.message == f"timed out; retry {attempts} of 3"


def test_timeouts_follow_the_jobs_limit_and_ignore_its_exit_codes(registry):
    ok, _ = step(registry, HOOK, "j", failed_run("j", S.RUN_TIMEOUT, code=-15, attempts=1,
                                                 retry={"limit": 1, "onExitCodes": [75]}))
    assert states(ok) == ["RESTART_READY"]
    over, _ = step(registry, HOOK, "j", failed_run("j", S.RUN_TIMEOUT, code=-15, attempts=2,
                                                   retry={"limit": 1, "onExitCodes": [75]}))
    assert states(over) == ["FAILED"]


def test_a_running_backoff_holds_the_restart_for_what_is_left_of_it(registry):
    t0 = time.monotonic()
    new, result = step(registry, HOOK, "j", failed_run("j", ended_ago=10, retry={"limit": 1, "backoffSeconds": 60}))
    took = time.monotonic() - t0  # what a slow machine spent of the backoff meanwhile
    assert new is None
    assert result is not None and 50 - took - 1 < result.requeue_after <= 50


@pytest.mark.parametrize("ended_ago", [None, 61.0, 3600.0])
def test_a_backoff_that_is_over_or_has_no_end_time_restarts_now(registry, ended_ago):
    new, result = step(registry, HOOK, "j", failed_run("j", ended_ago=ended_ago,
                                                       retry={"limit": 1, "backoffSeconds": 60}))
    assert result is None and states(new) == ["RESTART_READY"]


def test_no_backoff_restarts_now(registry):
    new, result = step(registry, HOOK, "j", failed_run("j", ended_ago=0, retry={"limit": 1}))
    assert result is None and states(new) == ["RESTART_READY"]


def test_a_failed_retry_decision_is_not_held_by_the_backoff(registry):
    new, result = step(registry, HOOK, "j", failed_run("j", ended_ago=0, attempts=2,
                                                       retry={"limit": 1, "backoffSeconds": 60}))
    assert result is None and states(new) == ["FAILED"]


def test_without_hooks_the_lifecycle_steps_are_taken_at_once(registry):
    pre, _ = step(registry, HOOK, "j", job("j", S.STAGED_IN))
    assert states(pre) == ["PREPROCESSED"] and pre.status.message == "no preprocess hook"
    post, _ = step(registry, HOOK, "j", failed_run("j", S.RUN_DONE, code=0))
    assert states(post) == ["POSTPROCESSED", "STAGED_OUT", "JOB_FINISHED"]
    assert post.status.history[0].message == "no postprocess hook"


@pytest.mark.parametrize("state", [S.CREATED, S.READY, S.PREPROCESSED, S.RUNNING, S.RESTART_READY, S.FAILED])
def test_states_without_a_hook_step_are_left_alone(registry, state):
    assert step(registry, HOOK, "j", failed_run("j", state)) == (None, None)


# --- dependency cycles (an edit of spec.parents that closes one) ----------------------------------

def edited(j: Job) -> Job:
    """``j`` after an edit of its spec that no reconcile has observed yet."""
    j.metadata.generation, j.status.observed_generation = 2, 1
    return j


def test_an_edit_that_closes_a_cycle_fails_the_job_naming_the_cycle_then_the_rest_of_it(registry):
    dep = DependencyReconciler(NoHooks())
    a = waiting_since_last_look("a", ("c",))
    c = waiting_since_last_look("c", ("b",))
    b = edited(job("b", S.AWAITING_PARENTS, ("a",)))
    new, _ = step(registry, dep, "b", a, b, c)
    msg = ("its parents form a dependency cycle: b → a → c → b; no job of it can ever start "
           "(edit spec.parents and submit the jobs again)")
    assert states(new) == ["FAILED"] and new.status.message == msg
    assert new.status.observed_generation == 2
    cond = get_condition(new.status.conditions, "Failed")
    assert cond is not None and (cond.status, cond.reason, cond.message) == ("True", "DependencyCycle", msg)
    assert get_condition(new.status.conditions, "Waiting") is None
    # The other members are failed each in their own reconcile, with the same message,
    # although their own spec did not change.
    for other in ("a", "c"):
        failed_too, _ = step(registry, dep, other, a, new, c)
        assert states(failed_too) == ["FAILED"] and failed_too.status.message == msg
        cond = get_condition(failed_too.status.conditions, "Failed")
        assert cond is not None and cond.reason == "DependencyCycle"
    # Failed once: a later look at a member finds nothing more to do.
    again, _ = step(registry, dep, "a", a, new, c)
    assert again is None


def test_a_cycle_is_looked_for_only_when_the_spec_changed_since_the_last_look(registry):
    dep = DependencyReconciler(NoHooks())
    a, b = waiting_since_last_look("a", ("b",)), waiting_since_last_look("b", ("a",))
    new, _ = step(registry, dep, "b", a, b)
    assert new is None


def test_a_loop_through_a_job_that_no_longer_waits_is_no_cycle(registry):
    dep = DependencyReconciler(NoHooks())
    running_a = job("a", S.RUNNING, ("b",))
    new, _ = step(registry, dep, "b", running_a, edited(job("b", S.AWAITING_PARENTS, ("a",))))
    assert new is not None and new.status.state is S.AWAITING_PARENTS
    assert get_condition(new.status.conditions, "Failed") is None


def test_a_job_that_is_its_own_parent_is_a_cycle(registry):
    dep = DependencyReconciler(NoHooks())
    new, _ = step(registry, dep, "me", edited(job("me", S.AWAITING_PARENTS, ("me",))))
    assert states(new) == ["FAILED"] and "dependency cycle: me → me;" in new.status.message


def test_the_waiting_condition_names_at_most_five_parents_and_counts_the_rest(registry):
    names = tuple(f"p{i}" for i in range(12))
    new, _ = step(registry, DEP, "kid", *(job(n, S.RUNNING) for n in names), job("kid", parents=names))
    cond = get_condition(new.status.conditions, "Waiting")
    assert cond.message == "waiting for its 12 parent job(s) to finish: p0, p1, p2, p3, p4 and 7 more"
    five = names[:5]
    new, _ = step(registry, DEP, "kid", *(job(n, S.RUNNING) for n in five), job("kid", parents=five))
    cond = get_condition(new.status.conditions, "Waiting")
    assert cond.message == "waiting for its 5 parent job(s) to finish: p0, p1, p2, p3, p4"
