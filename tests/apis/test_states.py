"""The Job state machine, every pair of states, on both stores.

The allowed moves are written out here a second time, by hand, from the seed's diagram
(balsam-jobs.md, "Job states") plus the failure exits apis/_states.py documents; they are
deliberately not read from ``apis._states.TRANSITIONS``, so a changed table fails this file.
Every one of the 14 x 14 pairs is checked, by the system (reconcilers, node agents, hooks:
``transition``) and by a user's update (``apply_fields(job, {"state": ...})``, what Balsam's
``job.state = ...; job.save()`` and ``Job.objects.filter(...).update(state=...)`` run), on a
Job stored in SQLite and in etcd: an allowed move is stored, a refused one raises
``IllegalTransition`` ("illegal state transition A -> B") and leaves the store as it was.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import store as st
from apis import App, IllegalTransition, Invalid, Job, JobState, Registry, check_transition, transition
from apis._balsam import apply_fields
from apis._states import is_allowed, parse_state

STATES = [
    "CREATED", "AWAITING_PARENTS", "READY", "STAGED_IN", "PREPROCESSED", "RUNNING", "RUN_DONE",
    "POSTPROCESSED", "STAGED_OUT", "JOB_FINISHED", "RUN_ERROR", "RUN_TIMEOUT", "RESTART_READY", "FAILED",
]

#: What the system may do: the seed's diagram, one line per arrow.
SYSTEM_MOVES = {
    ("CREATED", "AWAITING_PARENTS"), ("CREATED", "READY"), ("CREATED", "FAILED"),
    ("AWAITING_PARENTS", "READY"), ("AWAITING_PARENTS", "FAILED"),
    ("READY", "STAGED_IN"), ("READY", "FAILED"),
    ("STAGED_IN", "PREPROCESSED"), ("STAGED_IN", "FAILED"),
    ("PREPROCESSED", "RUNNING"), ("PREPROCESSED", "FAILED"),
    ("RUNNING", "RUN_DONE"), ("RUNNING", "RUN_ERROR"), ("RUNNING", "RUN_TIMEOUT"),
    ("RUN_DONE", "POSTPROCESSED"), ("RUN_DONE", "RESTART_READY"), ("RUN_DONE", "FAILED"),
    ("RUN_ERROR", "RESTART_READY"), ("RUN_ERROR", "POSTPROCESSED"), ("RUN_ERROR", "FAILED"),
    ("RUN_TIMEOUT", "RESTART_READY"), ("RUN_TIMEOUT", "POSTPROCESSED"), ("RUN_TIMEOUT", "FAILED"),
    ("RESTART_READY", "RUNNING"), ("RESTART_READY", "FAILED"),
    ("POSTPROCESSED", "STAGED_OUT"), ("POSTPROCESSED", "FAILED"),
    ("STAGED_OUT", "JOB_FINISHED"), ("STAGED_OUT", "FAILED"),
}

#: A user may in addition, from any other state, run a job again or give up on it.
USER_MOVES = SYSTEM_MOVES | {(s, t) for s in STATES for t in ("RESTART_READY", "FAILED") if s != t}


def test_the_states_are_the_seeds_fourteen() -> None:
    assert sorted(s.value for s in JobState) == sorted(STATES)
    assert len(SYSTEM_MOVES) == 29 and len(USER_MOVES) == 41


@pytest.mark.parametrize("by_user", [False, True], ids=["system", "user"])
@pytest.mark.parametrize("current", STATES)
def test_check_transition_allows_exactly_the_diagrams_moves(current: str, by_user: bool) -> None:
    allowed = USER_MOVES if by_user else SYSTEM_MOVES
    for to in STATES:
        if (current, to) in allowed:
            check_transition(current, to, by_user=by_user)
            check_transition(JobState(current), JobState(to), by_user=by_user)
            assert is_allowed(current, to, by_user=by_user)
        else:
            with pytest.raises(IllegalTransition) as err:
                check_transition(current, to, by_user=by_user)
            assert str(err.value) == f"illegal state transition {current} -> {to}"
            assert (err.value.current, err.value.to) == (current, to)
            assert isinstance(err.value, Invalid)
            assert not is_allowed(current, to, by_user=by_user)


def test_nothing_leaves_a_terminal_state_but_a_users_restart_or_give_up() -> None:
    for final in ("JOB_FINISHED", "FAILED"):
        assert [t for t in STATES if is_allowed(final, t)] == []
    assert [t for t in STATES if is_allowed("JOB_FINISHED", t, by_user=True)] == ["RESTART_READY", "FAILED"]
    assert [t for t in STATES if is_allowed("FAILED", t, by_user=True)] == ["RESTART_READY"]
    assert not is_allowed("RUNNING", "JOB_FINISHED") and not is_allowed("RUNNING", "JOB_FINISHED", by_user=True)


def test_parse_state_is_case_insensitive_and_names_the_valid_states() -> None:
    assert parse_state("run_done") is JobState.RUN_DONE
    assert parse_state("Job_Finished") is JobState.JOB_FINISHED
    with pytest.raises(ValueError) as err:
        parse_state("DONE")
    assert str(err.value).startswith("unknown job state 'DONE' (valid: CREATED, AWAITING_PARENTS, READY,")


# --- on a stored Job, both backends --------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("etcd", marks=pytest.mark.etcd)])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    url = f"sqlite://{tmp_path}/store.db" if request.param == "sqlite" else request.getfixturevalue("etcd_url")
    s = st.open_store(url)
    try:
        yield Registry(s)
    finally:
        s.close()


def _stored_job_in(reg: Registry, state: str) -> Job:
    """A Job put in ``state`` around the table (the starting point of each row)."""
    app = f"a{uuid.uuid4().hex[:10]}"
    reg.create(App(metadata={"name": app}, spec={"command": "true"}))
    job = reg.create(Job(metadata={"name": f"j{uuid.uuid4().hex[:10]}"}, spec={"app": app, "workdir": "w"}))

    def put(j: Job) -> None:
        j.status.state = JobState(state)

    return reg.mutate(Job, job.name, put)


@pytest.mark.parametrize("by_user", [False, True], ids=["system", "user"])
@pytest.mark.parametrize("current", STATES)
def test_a_stored_job_moves_only_along_the_table(registry: Registry, current: str, by_user: bool) -> None:
    allowed = USER_MOVES if by_user else SYSTEM_MOVES
    for to in STATES:
        if to == current:
            continue
        job = _stored_job_in(registry, current)

        def move(j: Job, to: str = to) -> None:
            if by_user:
                apply_fields(j, {"state": to})
            else:
                transition(j, to, "by the test")

        if (current, to) in allowed:
            moved = registry.mutate(Job, job.name, move)
            stored = registry.get(Job, job.name)
            assert stored.status.state.value == to
            assert int(stored.metadata.resource_version) > int(job.metadata.resource_version)
            last = stored.status.history[-1]
            assert (last.from_state.value, last.to_state.value) == (current, to)
            assert moved.status.state.value == to
        else:
            with pytest.raises(IllegalTransition, match=f"^illegal state transition {current} -> {to}$"):
                registry.mutate(Job, job.name, move)
            stored = registry.get(Job, job.name)
            assert stored.status.state.value == current
            assert stored.metadata.resource_version == job.metadata.resource_version


def test_by_user_is_keyword_only_and_defaults_to_the_system() -> None:
    check_transition("RUNNING", "RUN_DONE")
    with pytest.raises(IllegalTransition):
        check_transition("FAILED", "RESTART_READY")  # a user's move, not the system's
    assert not is_allowed("JOB_FINISHED", "RESTART_READY") and is_allowed("JOB_FINISHED", "RESTART_READY", by_user=True)
    # ``check_transition(a, b, True)`` would read as "allowed?", not "by a user": refused.
    with pytest.raises(TypeError):
        check_transition("FAILED", "RESTART_READY", True)  # type: ignore[misc]
    with pytest.raises(TypeError):
        is_allowed("FAILED", "RESTART_READY", True)  # type: ignore[misc]
