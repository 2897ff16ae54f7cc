"""Moving a Job along the state table, with its history, in memory (callers write)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import Field

from ._meta import Model, utcnow
from ._states import JobState, StepWork, check_transition

if TYPE_CHECKING:
    from ._kinds import App, Job

HISTORY_CAP = 100


class HistoryEvent(Model):
    """One state change of a Job, as ``status.history`` keeps it (Balsam's EventLog entry)."""

    from_state: JobState | None = Field(None, alias="from")
    to_state: JobState = Field(alias="to")
    time: datetime
    message: str = ""
    by: str | None = None  # the component that made the move (a reconciler's name, node-agent, user)


def transition(
    job: Job,
    to: JobState | str,
    message: str = "",
    *,
    by_user: bool = False,
    now: datetime | None = None,
) -> Job:
    """Move ``job`` to ``to`` (IllegalTransition if the table forbids it) and append
    ``{from, to, time, message}`` to its history (capped: oldest dropped)."""
    cur = job.status.state
    nxt = JobState(to)
    check_transition(cur, nxt, by_user=by_user)
    now = now or utcnow()
    job.status.state = nxt
    job.status.message = message
    job.status.history.append(HistoryEvent(from_state=cur, to_state=nxt, time=now, message=message))  # type: ignore[call-arg]  # alias 'from'/'to'
    if len(job.status.history) > HISTORY_CAP:
        del job.status.history[: len(job.status.history) - HISTORY_CAP]
    if nxt is JobState.RUNNING:
        job.status.start_time = now
    if not by_user and nxt in (JobState.RUN_DONE, JobState.RUN_ERROR, JobState.RUN_TIMEOUT):
        job.status.end_time = now
    if nxt is JobState.RESTART_READY:
        # Runs again wherever placement finds room; the old binding is only history now.
        job.status.placement = None
    return job


def advance(job: Job, path: Sequence[JobState | str], message: str = "", now: datetime | None = None) -> Job:
    """Several steps in one write (no-op steps collapse): every state still lands in history."""
    now = now or utcnow()
    for s in path:
        transition(job, s, message, now=now)
    return job


def transfer_slots(job: Job, app: App | None, direction: str) -> list[str]:
    """The job's filled transfer slots of one direction ("in"/"out"). Without its App,
    every filled slot counts (the safe answer: nothing is skipped)."""
    if app is None:
        return list(job.spec.transfers)
    return [s for s in job.spec.transfers if s in app.spec.transfers and app.spec.transfers[s].direction == direction]


def declares_hook(app: App | None, hook: str) -> bool:
    """Whether ``app`` may run ``hook`` (a Python app's class runs every hook unless its
    ``hooks`` list names the ones it has)."""
    py = app.spec.python if app is not None else None
    if py is None:
        return False
    return py.hooks is None or hook in py.hooks


def step_work(job: Job, app: App | None, work: StepWork) -> bool:
    """Whether ``job`` (of ``app``) has ``work`` of that kind to do (a hook or transfers)."""
    if work == "stage_in":
        return bool(transfer_slots(job, app, "in"))
    if work == "stage_out":
        return bool(transfer_slots(job, app, "out"))
    return declares_hook(app, work)

