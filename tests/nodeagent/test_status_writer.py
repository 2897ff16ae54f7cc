"""The status writer (``nodeagent/_status.py``) on a real store: what one flush writes.

A job's ``→ RUNNING`` waits (``start_delay``) so that a short job is written once; a batch of
results must not take along the runs that started a moment ago, and the history keeps each
step's own time, not the time of the write.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from apis import Job, JobState, Registry, utcnow
from nodeagent._run import Run, Step
from nodeagent._status import StatusWriter

from .conftest import bind, make_app, make_jobs

S = JobState


class _Forgetful:
    """The supervisor's one duty towards the writer: forget a run once its end is written."""

    def __init__(self) -> None:
        self.forgotten: list[str] = []

    def forget(self, run: Run) -> None:
        self.forgotten.append(run.name)


def _writer(registry: Registry, start_delay: float) -> tuple[StatusWriter, _Forgetful]:
    w = StatusWriter(registry, logging.getLogger("test"))
    sup = _Forgetful()
    w.supervisor = sup  # type: ignore[assignment]
    w.start_delay = start_delay
    return w, sup


def _runs(registry: Registry, n: int) -> list[Run]:
    make_app(registry, "sleepy", "sleep 1")
    jobs = bind(registry, make_jobs(registry, "sleepy", [f"j{i}" for i in range(n)]), ["n1"])
    return [Run(name=j.name, snapshot=j, placement=j.status.placement) for j in jobs]  # type: ignore[arg-type]


def _history(job: Job) -> list[tuple[Any, Any]]:
    return [(h.to_state, h.time) for h in job.status.history]


def test_a_result_is_written_without_the_starts_of_runs_that_just_began(registry: Registry) -> None:
    done, fresh = _runs(registry, 2)
    w, sup = _writer(registry, start_delay=3600.0)
    started = utcnow() - timedelta(seconds=2)
    ended = started + timedelta(seconds=1)
    done.steps += [Step(S.RUNNING, "started on n1", at=started), Step(S.RUN_DONE, "exited with code 0", 0, at=ended)]
    done.finished = True
    w.mark(done, urgent=True)
    fresh.steps.append(Step(S.RUNNING, "started on n1"))
    w.mark(fresh, urgent=False)

    assert w.flush(stopping=False, retry_at=0.0, others_running=False)

    written = registry.get(Job, done.name)
    assert written.status.state is S.RUN_DONE
    assert _history(written)[-2:] == [(S.RUNNING, started), (S.RUN_DONE, ended)]
    assert written.status.start_time == started and written.status.end_time == ended
    assert sup.forgotten == [done.name]
    # the run that just started is neither written nor forgotten: it waits for its result
    assert registry.get(Job, fresh.name).status.state is S.PREPROCESSED
    assert list(w.dirty) == [fresh.name] and fresh.steps
    due = w.due(stopping=False, retry_at=0.0)
    assert due is not None and due > time.monotonic() + 3000


def test_a_start_older_than_the_delay_is_written_alone(registry: Registry) -> None:
    (run,) = _runs(registry, 1)
    w, _ = _writer(registry, start_delay=0.0)
    run.steps.append(Step(S.RUNNING, "started on n1"))
    w.mark(run, urgent=False)

    assert w.flush(stopping=False, retry_at=0.0)

    assert registry.get(Job, run.name).status.state is S.RUNNING
    assert run.started and not w.dirty
    assert w.due(stopping=False, retry_at=0.0) is None


def test_a_stopping_agent_writes_every_start_at_once(registry: Registry) -> None:
    (run,) = _runs(registry, 1)
    w, _ = _writer(registry, start_delay=3600.0)
    run.steps.append(Step(S.RUNNING, "started on n1"))
    w.mark(run, urgent=False)

    assert w.flush(stopping=True, retry_at=0.0)

    assert registry.get(Job, run.name).status.state is S.RUNNING
    assert not w.dirty
