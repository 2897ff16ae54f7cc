"""The release of a job whose steps up to PREPROCESSED are no-ops, and the status fields that
record collapsed steps: shared by the controllers (placement and the dependency reconciler,
``controllers/_steps.py``) and by node agents that claim jobs themselves (issue 19, eighth
round), so that all of them decide the same release in the same words."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from ._codec import shallow_copy
from ._kinds import App, Job
from ._lifecycle import HISTORY_CAP, step_work, transition
from ._meta import set_field
from ._states import PRE_READY, JobState, no_op_steps, release_steps

#: collapsed_fields' shared history entries: (from, steps, time, by) -> (state, message, entries);
#: a pass has one time, so a handful of keys live at once.
_COLLAPSED: dict[tuple[Any, ...], tuple[JobState, str, tuple[Any, ...]]] = {}
_COLLAPSED_MAX = 64


def steps_to_preprocessed(job: Job, app: App | None, has_preprocess: Callable[[App], bool],
                          state_of: Callable[[str], JobState | None]) -> list[tuple[JobState, str]] | None:
    """Every step, as (state, message), that takes ``job`` from CREATED, AWAITING_PARENTS or
    READY to PREPROCESSED when each of them is a no-op (the release of
    :func:`apis._states.release_steps`, then the table's READY → STAGED_IN → PREPROCESSED);
    None when one has work or cannot be decided yet: a parent not JOB_FINISHED (``state_of``
    answers), a stage-in transfer, an App unknown or one with a ``preprocess`` hook
    (``has_preprocess``), a suspended job, a job in another state."""
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
            return has_preprocess(app)
        return step_work(job, app, work)

    rest = no_op_steps(JobState.READY, needs)
    if not rest or rest[-1][0] is not JobState.PREPROCESSED:
        return None
    return release_steps(state, bool(parents)) + rest


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
