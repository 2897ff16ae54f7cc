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

import orjson

from apis import Job, JobState, Registry, transition, utcnow
from apis._registry import object_key
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


def _stored(registry: Registry, job: Job) -> dict[str, Any]:
    """The stored document of ``job`` with the write's own stamps taken out."""
    doc = orjson.loads(registry.store.get(object_key(Job, job.metadata.namespace, job.name)).value)  # type: ignore[union-attr]
    doc["status"].pop("lastUpdate", None)
    doc["metadata"].pop("resourceVersion", None)
    return doc


def _index_keys(registry: Registry) -> list[str]:
    return sorted(kv.key for kv in registry.store.range("/index/jobs/", keys_only=True).kvs if "/workdir/" not in kv.key)


def _whole_job_update(run: Run, base: Job) -> Job:
    """The whole-job path the status patch replaced: ``base`` copied, each step taken with
    ``transition`` and the run's fields set on the copy (the reference the patch must match)."""
    new = base.model_copy()  # a copy whose status the steps may transition
    new.status = base.status.model_copy()
    new.status.history = list(base.status.history)
    for step in run.steps:
        transition(new, step.to, step.message, now=step.at)
        if step.to is S.RUNNING:
            new.status.attempts += 1
            new.status.return_code = None
            new.status.output_tail = None
            new.status.result = new.status.exception = new.status.exception_data = None
        elif step.to in (S.RUN_DONE, S.RUN_ERROR, S.RUN_TIMEOUT):
            new.status.return_code = step.return_code
            new.status.output_tail = step.output_tail
            if step.result is not None:
                new.status.result = step.result.get("result")
                new.status.exception = step.result.get("exception")
                new.status.exception_data = step.result.get("exceptionData")
    return new


def test_the_status_patch_stores_what_a_whole_job_update_stored(registry: Registry) -> None:
    # Two runs through the same steps: one written as a status patch (the writer), the
    # other with the whole-job path it replaced (_whole_job_update + update_many). Same documents
    # and the same index keys (the boundnode entry gone with JOB_FINISHED), every step in history.
    a, b = _runs(registry, 2)
    t0 = utcnow() - timedelta(seconds=3)
    steps = [Step(S.RUNNING, "started on n1", at=t0), Step(S.RUN_DONE, "exited with code 0", 0, "out\n",
                                                            at=t0 + timedelta(seconds=1)),
             *(Step(to, "no postprocess", at=t0 + timedelta(seconds=2)) for to in (S.POSTPROCESSED, S.STAGED_OUT,
                                                                                    S.JOB_FINISHED))]
    w, _ = _writer(registry, start_delay=0.0)
    a.steps += steps
    a.finished = True
    w.mark(a, urgent=True)
    assert w.flush(stopping=False, retry_at=0.0, others_running=False)
    b.steps += steps
    registry.update_many([(b.snapshot, _whole_job_update(b, b.snapshot))])

    da, db = _stored(registry, registry.get(Job, a.name)), _stored(registry, registry.get(Job, b.name))
    da["metadata"].pop("name"), db["metadata"].pop("name")
    da["metadata"].pop("uid"), db["metadata"].pop("uid")
    da["spec"].pop("workdir"), db["spec"].pop("workdir")
    ha, hb = da["status"].pop("history"), db["status"].pop("history")  # the binds' own steps: their times differ
    assert ha[-5:] == hb[-5:] and len(ha) == len(hb) == len(a.snapshot.status.history)
    assert [h["to"] for h in ha[-5:]] == ["RUNNING", "RUN_DONE", "POSTPROCESSED", "STAGED_OUT", "JOB_FINISHED"]
    assert da == db
    assert da["status"]["attempts"] == 1 and da["status"]["returnCode"] == 0 and da["status"]["outputTail"] == "out\n"
    keys = _index_keys(registry)
    assert [k.replace(f"/{a.name}", "/X") for k in keys if k.endswith(f"/{a.name}")] == \
        [k.replace(f"/{b.name}", "/X") for k in keys if k.endswith(f"/{b.name}")]
    assert not any("/boundnode/" in k for k in keys)
    # the run's snapshot is the job as written: its resourceVersion is the next CAS base
    assert a.snapshot.metadata.resource_version == registry.get(Job, a.name).metadata.resource_version
    assert a.snapshot.status.state is S.JOB_FINISHED


def test_a_status_patch_never_overwrites_a_job_moved_meanwhile(registry: Registry) -> None:
    (run,) = _runs(registry, 1)
    moved = registry.get(Job, run.name)
    user = moved.model_copy(deep=True)
    transition(user, S.FAILED, "failed by a user", by_user=True)
    registry.update_many([(moved, user)])

    class _Source:
        def __init__(self) -> None:
            self.observed: list[tuple[str, Job | None]] = []

        def read(self, names: list[str]) -> list[tuple[str, Job | None]]:
            return list(zip(names, registry.get_many(Job, names), strict=True))

        def observe(self, name: str, job: Job | None, *, stopping: bool) -> None:
            self.observed.append((name, job))
            w.forget(run)  # what the job source does for a job moved away: cancel, drop the result

    w, sup = _writer(registry, start_delay=0.0)
    src = _Source()
    w.source = src  # type: ignore[assignment]
    run.steps += [Step(S.RUNNING, "started on n1"), Step(S.RUN_DONE, "exited with code 0", 0)]
    w.mark(run, urgent=True)

    assert w.flush(stopping=False, retry_at=0.0, others_running=False)

    assert w.stats["conflicts"] == 1 and w.stats["job_writes"] == 0
    assert [n for n, _ in src.observed] == [run.name]
    assert registry.get(Job, run.name).status.state is S.FAILED
