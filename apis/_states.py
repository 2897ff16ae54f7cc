"""The Job state machine: the seed's 14 states and its transition diagram, in one table.

Reconcilers and node agents move jobs along ``TRANSITIONS``; users may in addition
make the moves in ``USER_TRANSITIONS`` (the seed's ``update(state="RESTART_READY")``
of FAILED jobs, and killing or re-running any job by hand).  Everything else is
refused with :class:`IllegalTransition`, which names both states.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from ._errors import IllegalTransition


class JobState(StrEnum):
    CREATED = "CREATED"
    AWAITING_PARENTS = "AWAITING_PARENTS"
    READY = "READY"
    STAGED_IN = "STAGED_IN"
    PREPROCESSED = "PREPROCESSED"
    RUNNING = "RUNNING"
    RUN_DONE = "RUN_DONE"
    POSTPROCESSED = "POSTPROCESSED"
    STAGED_OUT = "STAGED_OUT"
    JOB_FINISHED = "JOB_FINISHED"
    RUN_ERROR = "RUN_ERROR"
    RUN_TIMEOUT = "RUN_TIMEOUT"
    RESTART_READY = "RESTART_READY"
    FAILED = "FAILED"

    @classmethod
    def is_valid(cls, state: str) -> bool:
        """Whether ``state`` names a state (Balsam's ``JobState.is_valid``)."""
        return state in cls._value2member_map_


# Balsam's member names (``JobState.job_finished``) as attributes naming the same members: not
# enum aliases, which would list every state twice in ``__members__`` and the CRDs' schema.
for _m in list(JobState):
    setattr(JobState, _m.name.lower(), _m)

S = JobState

#: Moves made by the system (reconcilers, node agents, hooks). Seed diagram, plus the
#: failure exits every Balsam step has (a failed transfer, a hook that raises, a
#: parent that failed under ``onParentFailure: Fail``, a command that cannot render).
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    S.CREATED: frozenset({S.AWAITING_PARENTS, S.READY, S.FAILED}),
    S.AWAITING_PARENTS: frozenset({S.READY, S.FAILED}),
    S.READY: frozenset({S.STAGED_IN, S.FAILED}),
    S.STAGED_IN: frozenset({S.PREPROCESSED, S.FAILED}),
    S.PREPROCESSED: frozenset({S.RUNNING, S.FAILED}),
    S.RUNNING: frozenset({S.RUN_DONE, S.RUN_ERROR, S.RUN_TIMEOUT}),
    S.RUN_DONE: frozenset({S.POSTPROCESSED, S.RESTART_READY, S.FAILED}),
    S.RUN_ERROR: frozenset({S.RESTART_READY, S.POSTPROCESSED, S.FAILED}),
    S.RUN_TIMEOUT: frozenset({S.RESTART_READY, S.POSTPROCESSED, S.FAILED}),
    S.RESTART_READY: frozenset({S.RUNNING, S.FAILED}),
    S.POSTPROCESSED: frozenset({S.STAGED_OUT, S.FAILED}),
    S.STAGED_OUT: frozenset({S.JOB_FINISHED, S.FAILED}),
    S.JOB_FINISHED: frozenset(),
    S.FAILED: frozenset(),
}

#: Moves a user may make by hand, from any state: run it again (RESTART_READY; a
#: RUNNING job is killed by its node agent first) or give up on it (FAILED).
USER_TARGETS: frozenset[JobState] = frozenset({S.RESTART_READY, S.FAILED})

TERMINAL: frozenset[JobState] = frozenset({S.JOB_FINISHED, S.FAILED})

#: States in which a job waits for, or holds, compute resources.
RUNNABLE: frozenset[JobState] = frozenset({S.PREPROCESSED, S.RESTART_READY})

#: The happy path, in order (used to collapse no-op steps into one write).
HAPPY_PATH: tuple[JobState, ...] = (
    S.CREATED,
    S.AWAITING_PARENTS,
    S.READY,
    S.STAGED_IN,
    S.PREPROCESSED,
    S.RUNNING,
    S.RUN_DONE,
    S.POSTPROCESSED,
    S.STAGED_OUT,
    S.JOB_FINISHED,
)


#: What a lifecycle step may have to do for a job: the work its App or spec may declare.
StepWork = str  # "stage_in" | "preprocess" | "postprocess" | "stage_out"

#: No-op steps, declared: from ``state`` a job moves on to ``next`` with nothing done when it
#: needs no ``work`` of that kind (None: the step never does any work). Whoever writes a job
#: into ``state`` takes these steps in the same write (the placement side after READY, the node
#: agent after its ``RUN_DONE``); every state still lands in ``status.history`` with its time
#: and message, so ``describe`` and analytics see each step.
NO_OP_STEPS: dict[JobState, tuple[JobState, StepWork | None, str]] = {
    S.READY: (S.STAGED_IN, "stage_in", "no stage-in transfers"),
    S.STAGED_IN: (S.PREPROCESSED, "preprocess", "no preprocess hook"),
    S.RUN_DONE: (S.POSTPROCESSED, "postprocess", "no postprocess hook"),
    S.POSTPROCESSED: (S.STAGED_OUT, "stage_out", "no stage-out transfers"),
    S.STAGED_OUT: (S.JOB_FINISHED, None, "no stage-out transfers"),
}
for _frm, (_to, _work, _msg) in NO_OP_STEPS.items():  # a no-op step is a move of the table
    assert _to in TRANSITIONS[_frm], (_frm, _to)


def no_op_steps(state: JobState, needs: Callable[[StepWork], bool],
                stop_at: JobState | None = None) -> list[tuple[JobState, str]]:
    """The no-op steps a job in ``state`` takes at once, in order, as (state, message):
    those of :data:`NO_OP_STEPS` up to the first whose work ``needs(work)`` says the job
    has (or ``stop_at``, included)."""
    out: list[tuple[JobState, str]] = []
    while state in NO_OP_STEPS and state is not stop_at:
        nxt, work, msg = NO_OP_STEPS[state]
        if work is not None and needs(work):
            break
        out.append((nxt, msg))
        state = nxt
    return out


#: States a job is in before it is released (its parents finished, or none): the dependency
#: reconciler's, or placement's when every step up to PREPROCESSED is a no-op (issue 19).
PRE_READY: frozenset[JobState] = frozenset({S.CREATED, S.AWAITING_PARENTS, S.READY})


def release_steps(state: JobState, has_parents: bool) -> list[tuple[JobState, str]]:
    """The steps, as (state, message), that release a job in ``state`` whose parents are all
    JOB_FINISHED (or that has none) up to READY: the moves and words of the dependency
    reconciler, whoever writes them (it, or placement in the write that binds the job)."""
    if state is S.CREATED:
        if not has_parents:
            return [(S.READY, "no parents")]
        return [(S.AWAITING_PARENTS, "waiting for parents"), (S.READY, "all parents finished")]
    if state is S.AWAITING_PARENTS:
        return [(S.READY, "all parents finished")]
    return []


def parse_state(value: str) -> JobState:
    """``JobState`` from its name (case-insensitive); ValueError names the valid ones."""
    try:
        return JobState(value.upper())
    except ValueError:
        raise ValueError(
            f"unknown job state {value!r} (valid: {', '.join(s.value for s in JobState)})"
        ) from None


def check_transition(current: JobState | str, to: JobState | str, *, by_user: bool = False) -> None:
    """Raise IllegalTransition unless ``current → to`` is allowed."""
    cur, nxt = JobState(current), JobState(to)
    if nxt in TRANSITIONS[cur]:
        return
    if by_user and nxt in USER_TARGETS and cur != nxt:
        return
    raise IllegalTransition(cur.value, nxt.value)


def is_allowed(current: JobState | str, to: JobState | str, *, by_user: bool = False) -> bool:
    try:
        check_transition(current, to, by_user=by_user)
    except IllegalTransition:
        return False
    return True
