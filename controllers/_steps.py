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
from typing import Any

from apis import App, Job, JobState, no_op_steps, remove_condition, step_work, transfer_slots, transition
from apis._codec import shallow_copy
from apis._lifecycle import HISTORY_CAP
from apis._meta import set_field
from apis._states import PRE_READY, release_steps

from ._informer import Informer
from ._jobcache import job_state
from .hooks import HookRunner

__all__ = ["collapse_from_postprocessed", "collapse_from_ready", "collapsed_fields", "steps_to_preprocessed",
           "take_release_steps", "transfer_slots"]

#: collapsed_fields' shared history entries: (from, steps, time, by) -> (state, message, entries);
#: a pass has one time, so a handful of keys live at once.
_COLLAPSED: dict[tuple[Any, ...], tuple[JobState, str, tuple[Any, ...]]] = {}
_COLLAPSED_MAX = 64

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
    """Every step, as (state, message), that takes ``job`` from CREATED, AWAITING_PARENTS or
    READY to PREPROCESSED when each of them is a no-op (the release of
    :func:`apis._states.release_steps`, then the table's READY → STAGED_IN → PREPROCESSED);
    None when one has work or cannot be decided yet: a parent not JOB_FINISHED (``state_of``
    answers from the Job cache), a stage-in transfer, an App not cached or one with a
    ``preprocess`` hook, a suspended job, a job in another state."""
    state = job.status.state
    if state not in PRE_READY or job.spec.suspend or app is None:
        return None
    parents = job.spec.parents
    if state is not JobState.READY:
        for p in parents:
            if state_of(p) is not JobState.JOB_FINISHED:
                return None

    def needs(work: str) -> bool:
        if work == "preprocess":
            return hooks.has_hook(app, "preprocess")
        return step_work(job, app, work)

    rest = no_op_steps(JobState.READY, needs)
    if not rest or rest[-1][0] is not JobState.PREPROCESSED:
        return None
    return release_steps(state, bool(parents)) + rest



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


def collapsed_fields(job: Job, steps: list[tuple[JobState, str]], now: datetime, by: str) -> dict[str, Any]:
    """The status fields (state, message, history) of ``job`` once ``steps`` are taken, each
    step in the history with ``now``, its message and ``by`` (the component: describe's FROM),
    as :func:`apis.transition` records it (the same checks against the table, the same cap).
    ``job`` is not touched: the fields are a patch for ``Registry.write_status_patches``
    (which, unlike a controller's write, stamps no ``by`` itself).

    The new history entries are made once per (from state, steps, time, component) and shared
    by every job of a pass that takes the same steps (issue 19, seventh round: a pass releasing
    a backlog made three validated ``HistoryEvent``s per job, ~8% of placement's thread).
    Nothing edits a written history entry in place (as with the shared Waiting conditions)."""
    key = (job.status.state, tuple(steps), now, by)
    hit = _COLLAPSED.get(key)
    if hit is None:
        work = shallow_copy(job, {"status": shallow_copy(job.status, {"history": []})})
        for state, msg in steps:
            transition(work, state, msg, now=now)
        ws = work.status
        for ev in ws.history:
            set_field(ev, "by", by)
        if len(_COLLAPSED) >= _COLLAPSED_MAX:
            _COLLAPSED.clear()
        hit = _COLLAPSED[key] = (ws.state, ws.message, tuple(ws.history))
    state, message, entries = hit
    history = [*job.status.history, *entries]
    if len(history) > HISTORY_CAP:
        del history[: len(history) - HISTORY_CAP]
    return {"state": state, "message": message, "history": history}
