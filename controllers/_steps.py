"""No-op steps collapse: a step with nothing to do completes in the same write as the step
before it, yet every state still lands in ``status.history`` (ARCHITECTURE.md §4)."""

from __future__ import annotations

from datetime import datetime

from apis import App, Job, JobState, advance

from .hooks import HookRunner


def transfer_slots(job: Job, app: App | None, direction: str) -> list[str]:
    """The job's filled transfer slots of one direction. Without its App, every filled
    slot counts (the safe answer: nothing is skipped)."""
    if app is None:
        return list(job.spec.transfers)
    return [s for s in job.spec.transfers if s in app.spec.transfers and app.spec.transfers[s].direction == direction]


def collapse_from_ready(job: Job, app: App | None, hooks: HookRunner, now: datetime) -> None:
    """READY → STAGED_IN (no stage-in) → PREPROCESSED (no preprocess hook), as far as possible."""
    if job.status.state is JobState.READY and not transfer_slots(job, app, "in"):
        advance(job, [JobState.STAGED_IN], "no stage-in transfers", now)
    if job.status.state is JobState.STAGED_IN and not hooks.has_hook(app, "preprocess"):
        advance(job, [JobState.PREPROCESSED], "no preprocess hook", now)


def collapse_from_postprocessed(job: Job, app: App | None, now: datetime) -> None:
    """POSTPROCESSED → STAGED_OUT → JOB_FINISHED when there is nothing to stage out."""
    if job.status.state is JobState.POSTPROCESSED and not transfer_slots(job, app, "out"):
        advance(job, [JobState.STAGED_OUT, JobState.JOB_FINISHED], "no stage-out transfers", now)
