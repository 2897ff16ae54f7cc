"""The Job state machine: the seed's 14 states and its transition diagram, in one table.

Reconcilers and node agents move jobs along ``TRANSITIONS``; users may in addition
make the moves in ``USER_TRANSITIONS`` (the seed's ``update(state="RESTART_READY")``
of FAILED jobs, and killing or re-running any job by hand).  Everything else is
refused with :class:`IllegalTransition`, which names both states.
"""

from __future__ import annotations

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
