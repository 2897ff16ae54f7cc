"""No-op steps collapse: a step with nothing to do completes in the same write as the step
before it, yet every state still lands in ``status.history`` (ARCHITECTURE.md §4). Which steps
are no-ops, and when, is declared in the state table (``apis.NO_OP_STEPS``)."""

from __future__ import annotations

from datetime import datetime

from apis import App, Job, JobState, no_op_steps, step_work, transfer_slots, transition

from .hooks import HookRunner

__all__ = ["collapse_from_postprocessed", "collapse_from_ready", "transfer_slots"]


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
