"""No-op steps collapse: a step with nothing to do completes in the same write as the step
before it, yet every state still lands in ``status.history`` (ARCHITECTURE.md §4). Which steps
are no-ops, and when, is declared in the state table (``apis.NO_OP_STEPS``).

A job whose every step up to PREPROCESSED is a no-op — its parents all JOB_FINISHED (or none),
no stage-in transfer, an App in the cache that declares no ``preprocess`` hook, not suspended —
is released by placement, in the one write that binds it (or gives it its Waiting/Unschedulable
condition): :func:`steps_to_preprocessed` decides it, the same function for the dependency
reconciler (which then leaves the job alone) and for placement (which then takes it), so one
reconciler owns each such move (issue 19)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from apis import App, Job, JobState, no_op_steps, remove_condition, step_work, transfer_slots, transition
from apis._release import collapsed_fields
from apis._release import steps_to_preprocessed as plain_steps_to_preprocessed

from ._informer import Informer
from ._jobcache import job_state
from .hooks import HookRunner

__all__ = ["collapse_from_postprocessed", "collapse_from_ready", "collapsed_fields", "steps_to_preprocessed",
           "take_release_steps", "transfer_slots"]

#: Conditions of a job that waits for its parents, gone once it is released.
PARENT_CONDITIONS = ("Waiting", "ParentFailed", "ParentMissing")


def _collapse(job: Job, app: App | None, hooks: HookRunner | None, now: datetime) -> None:
    def needs(work: str) -> bool:
        if hooks is not None and work in ("preprocess", "postprocess"):
            # Without its App (not in the cache yet) a hook may exist: the safe answer is
            # "work to do", so the hook reconciler, which waits for the App, takes the step.
            return app is None or hooks.has_hook(app, work)  # type: ignore[arg-type]
        return step_work(job, app, work)

    for state, msg in no_op_steps(job.status.state, needs):
        transition(job, state, msg, now=now)


def collapse_from_ready(job: Job, app: App | None, hooks: HookRunner, now: datetime) -> None:
    """READY → STAGED_IN (no stage-in) → PREPROCESSED (no preprocess hook), as far as possible."""
    if job.status.state is JobState.READY:
        _collapse(job, app, hooks, now)


def collapse_from_postprocessed(job: Job, app: App | None, now: datetime) -> None:
    """POSTPROCESSED → STAGED_OUT → JOB_FINISHED when there is nothing to stage out."""
    if job.status.state is JobState.POSTPROCESSED:
        _collapse(job, app, None, now)


def steps_to_preprocessed(job: Job, app: App | None, hooks: HookRunner,
                          state_of: Callable[[str], JobState | None]) -> list[tuple[JobState, str]] | None:
    """:func:`apis._release.steps_to_preprocessed` with the manager's hook runner deciding
    whether the App has a ``preprocess`` hook."""
    return plain_steps_to_preprocessed(job, app, lambda a: hooks.has_hook(a, "preprocess"), state_of)


def cached_release_steps(job: Job, apps: Informer[App], jobs: Informer[Job],
                         hooks: HookRunner) -> list[tuple[JobState, str]] | None:
    """:func:`steps_to_preprocessed` with the App and the parents' states read from the
    controller manager's caches (what placement and the dependency reconciler both ask)."""
    return steps_to_preprocessed(job, apps.get(job.spec.app), hooks, lambda p: job_state(jobs, p))

def take_release_steps(job: Job, steps: list[tuple[JobState, str]], now: datetime) -> None:
    """Take ``steps`` (a release: :func:`apis._states.release_steps`, or all of
    :func:`steps_to_preprocessed`) on ``job`` in place, and drop the conditions of a job that
    waited for its parents."""
    for state, msg in steps:
        transition(job, state, msg, now=now)
    for t in PARENT_CONDITIONS:
        remove_condition(job.status.conditions, t)
