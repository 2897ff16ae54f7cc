"""controllers._steps.collapsed_fields: the status fields of a release as placement writes
them, the new history entries made once per pass and steps and shared by the jobs that take
them (issue 19, seventh round)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from apis import HistoryEvent, Job, JobState, utcnow
from apis._lifecycle import HISTORY_CAP
from controllers._steps import collapsed_fields

S = JobState
STEPS = [(S.READY, "no parents"), (S.STAGED_IN, "no stage-in transfers"), (S.PREPROCESSED, "no preprocess hook")]


def _job(name: str) -> Job:
    return Job(metadata={"name": name}, spec={"app": "a", "workdir": f"w/{name}"})  # type: ignore[arg-type]


def test_jobs_released_in_one_pass_share_their_new_history_entries_and_keep_their_own() -> None:
    now = utcnow()
    a, b = _job("a"), _job("b")
    fa, fb = collapsed_fields(a, STEPS, now, "placement"), collapsed_fields(b, STEPS, now, "placement")
    assert fa["state"] is S.PREPROCESSED and fa["message"] == "no preprocess hook"
    assert [(e.from_state, e.to_state, e.message, e.by, e.time) for e in fa["history"]] == [
        (S.CREATED, S.READY, "no parents", "placement", now),
        (S.READY, S.STAGED_IN, "no stage-in transfers", "placement", now),
        (S.STAGED_IN, S.PREPROCESSED, "no preprocess hook", "placement", now)]
    assert all(x is y for x, y in zip(fa["history"], fb["history"], strict=True))
    assert fa["history"] is not fb["history"]  # each job its own list
    assert a.status.state is S.CREATED and a.status.history == []  # the job is not touched
    later = collapsed_fields(a, STEPS, now + timedelta(seconds=1), "placement")
    assert later["history"][0] is not fa["history"][0] and later["history"][0].time == now + timedelta(seconds=1)


def test_a_job_whose_history_is_full_drops_its_oldest_entries() -> None:
    job = _job("full")
    old = datetime(2020, 1, 1, tzinfo=UTC)
    job.status.history = [HistoryEvent(from_state=S.CREATED, to_state=S.CREATED, time=old, message=str(i))  # type: ignore[call-arg]
                          for i in range(HISTORY_CAP)]
    fields = collapsed_fields(job, STEPS, utcnow(), "placement")
    assert len(fields["history"]) == HISTORY_CAP
    assert fields["history"][0].message == "3" and fields["history"][-1].to_state is S.PREPROCESSED
    assert len(job.status.history) == HISTORY_CAP and job.status.history[0].message == "0"
