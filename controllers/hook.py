"""HookReconciler: the lifecycle steps around a run.

STAGED_IN → PREPROCESSED (``preprocess``); RUN_DONE → POSTPROCESSED (``postprocess``), then
STAGED_OUT → JOB_FINISHED in the same write when nothing is staged out; RUN_ERROR →
RESTART_READY or FAILED (``handle_error``, else ``spec.retry``); RUN_TIMEOUT → RESTART_READY
or FAILED (``handle_timeout``, else the retry limit, default 3: Balsam retried timeouts
forever).

``retry.limit`` counts retries after the first run: ``limit: 2`` runs a job at most 3 times.
``retry.backoffSeconds`` delays the RESTART_READY step (the queue wakes us; we never sleep).

A hook that raised because the store was away (``HookOutcome.transient``) is run again after
``TRANSIENT_RETRY`` seconds; the job stays where it is (nothing is FAILED because the store
was briefly unreachable).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from apis import TERMINAL, App, Job, JobState, RetryPolicy, set_condition, transition, utcnow
from apis._balsam import apply_fields
from apis._states import is_allowed

from ._controller import Context, Request, Result
from ._informer import Informer
from ._steps import collapse_from_postprocessed
from .hooks import HookName, HookOutcome, HookRunner

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_RETRIES = 3
#: Seconds before a hook that met a store outage runs again.
TRANSIENT_RETRY = 2.0
DEFAULT_TIMEOUT_POLICY = RetryPolicy.model_validate({"limit": DEFAULT_TIMEOUT_RETRIES})

HANDLED = {
    JobState.STAGED_IN: "preprocess",
    JobState.RUN_DONE: "postprocess",
    JobState.RUN_ERROR: "handle_error",
    JobState.RUN_TIMEOUT: "handle_timeout",
}


class HookReconciler:
    name = "hook"

    def __init__(self, hooks: HookRunner) -> None:
        self.hooks = hooks

    def register(self, informers: dict[str, Informer], enqueue: Callable[[Request], None]) -> None:
        def on_job(typ: str, old: Job | None, new: Job | None) -> None:
            if new is not None and new.status.state in HANDLED:
                enqueue(Request(new.name, new.namespace))

        informers["Job"].add_handler(on_job)  # type: ignore[arg-type]
        self.hooks.set_waker(lambda name: enqueue(Request(name)))

    def reconcile(self, req: Request, ctx: Context) -> Result | None:
        jobs: Informer[Job] = ctx.caches["Job"]
        job = jobs.get(req.name)
        if job is None or job.status.state not in HANDLED:
            return None
        apps: Informer[App] = ctx.caches["App"]
        app = apps.get(job.spec.app)
        if app is None:
            # Not in this manager's cache (yet: the App's event can trail its job's). The
            # default step would skip a hook the App may declare; look again shortly.
            return Result(requeue_after=1.0)
        hook: HookName = HANDLED[job.status.state]  # type: ignore[assignment]
        new = job.status_copy()
        if self.hooks.has_hook(app, hook):
            assert app is not None
            outcome = self.hooks.outcome(job, app, hook)
            if outcome is None:
                return Result(requeue_after=5.0)  # the runner wakes us sooner when it ends
            result = self._apply_outcome(new, outcome, hook, app, ctx)
            if result is not None:
                return result
        else:
            result = self._default(new, hook, app)
            if result is not None:
                return result
        if new != job:
            ctx.update(job, new)
        return None

    def _default(self, job: Job, hook: HookName, app: App | None) -> Result | None:
        now = utcnow()
        if hook == "preprocess":
            transition(job, JobState.PREPROCESSED, "no preprocess hook", now=now)
        elif hook == "postprocess":
            transition(job, JobState.POSTPROCESSED, "no postprocess hook", now=now)
            collapse_from_postprocessed(job, app, now)
        elif hook == "handle_error":
            return self._retry_or_fail(job, job.spec.retry, self._error_retryable(job), "exited with code "
                                       f"{job.status.return_code}")
        else:
            policy = job.spec.retry or DEFAULT_TIMEOUT_POLICY
            return self._retry_or_fail(job, policy, True, "timed out")
        return None

    @staticmethod
    def _error_retryable(job: Job) -> bool:
        policy = job.spec.retry
        if policy is None:
            return False
        return policy.on_exit_codes is None or job.status.return_code in policy.on_exit_codes

    def _retry_or_fail(self, job: Job, policy: RetryPolicy | None, retryable: bool, what: str) -> Result | None:
        now = utcnow()
        attempts = job.status.attempts
        if policy is not None and retryable and attempts <= policy.limit:
            if policy.backoff_seconds and job.status.end_time is not None:
                wait = policy.backoff_seconds - (now - job.status.end_time).total_seconds()
                if wait > 0:
                    return Result(requeue_after=wait)
            transition(job, JobState.RESTART_READY, f"{what}; retry {attempts} of {policy.limit}", now=now)
            return None
        if policy is None or not retryable:
            msg = f"{what}; no retry policy allows another attempt"
            reason = "NoRetry"
        else:
            msg = f"{what}; gave up after {attempts} attempt(s) (retry.limit {policy.limit})"
            reason = "RetriesExhausted"
        set_condition(job.status.conditions, "Failed", "True", reason,
                      f"the run {msg}" if what.startswith(("exited", "timed")) else msg, now)
        transition(job, JobState.FAILED, msg, now=now)
        return None

    def _apply_outcome(self, job: Job, outcome: HookOutcome, hook: HookName, app: App,
                       ctx: Context) -> Result | None:
        """Record what the hook decided. A hook that left the state alone takes the default
        step, bounded by the retry policy like a job without hooks (``handle_timeout`` would
        otherwise restart a job that always times out forever). A state the table does not
        allow from here FAILS the job with the reason. Returns ``requeue_after`` when a retry
        backoff is still running (nothing is recorded then: the outcome is asked again)."""
        now = utcnow()
        if outcome.error is not None and outcome.transient:
            # The hook met a store outage: not the job's fault. Run it again (the runner starts a
            # new call at the next look); one line per attempt, as the hook pool logs failures.
            log.warning("%s hook of job %s met a store outage; running it again in %gs", hook, job.name,
                        TRANSIENT_RETRY)
            return Result(requeue_after=TRANSIENT_RETRY)
        if outcome.error is not None:
            transition(job, JobState.FAILED, f"{hook} hook failed: {outcome.error}", now=now)
            return None
        if outcome.state is None or outcome.state == job.status.state.value:
            if hook == "handle_error":
                result = self._retry_or_fail(job, job.spec.retry, self._error_retryable(job),
                                             f"exited with code {job.status.return_code}")
            elif hook == "handle_timeout":
                policy = job.spec.retry or DEFAULT_TIMEOUT_POLICY
                result = self._retry_or_fail(job, policy, True, "timed out")
            else:
                default = JobState.PREPROCESSED if hook == "preprocess" else JobState.POSTPROCESSED
                transition(job, default, outcome.message or f"{hook} hook done", now=now)
                result = None
            if result is not None:
                return result
        else:
            target = outcome.state
            if not is_allowed(job.status.state, target, by_user=True):
                transition(job, JobState.FAILED, f"{hook} hook set state {target}, which is not allowed from "
                           f"{job.status.state.value}", now=now)
                return None
            transition(job, target, outcome.message or f"set by {hook} hook", now=now,
                       by_user=not is_allowed(job.status.state, target))
        if outcome.data is not None or outcome.fields:
            job.spec = job.spec.model_copy(deep=True)  # spec and metadata are shared with the cache
            job.metadata = job.metadata.model_copy(deep=True)
            if outcome.data is not None:
                job.spec.data = outcome.data
            if outcome.fields:
                try:
                    apply_fields(job, outcome.fields)
                except Exception as e:  # noqa: BLE001 - a bad assignment fails the job, not us
                    if job.status.state not in TERMINAL:
                        transition(job, JobState.FAILED, f"{hook} hook set an invalid field: {e}", now=now)
        for child in outcome.new_jobs:
            ctx.create(child)
        if job.status.state is JobState.POSTPROCESSED:
            collapse_from_postprocessed(job, app, now)
        return None
