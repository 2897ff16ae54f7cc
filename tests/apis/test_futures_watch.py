"""The futures' shared watch (``apis._futures``) on both store backends, with no site: the
test writes the states itself. Futures wake on the terminal states' index entries and on a
job's deletion; the writes on the way there wake nobody."""

from __future__ import annotations

import concurrent.futures

import pytest

import apis
from apis import Job, JobState
from apis import _futures as futures
from tests._deadline import DEADLINE
from tests.apis.conftest import Backend

S = JobState


def _jobs(backend: Backend, *names: str) -> list[Job]:
    backend.app()
    return [backend.registry.create(Job(name=n, namespace=backend.namespace, app_id="echo", workdir=n,
                                        parameters={"x": "1"})) for n in names]


def _to(backend: Backend, name: str, *path: JobState) -> None:
    backend.registry.mutate(Job, name, lambda j: apis.advance(j, list(path), "test"), backend.namespace)


def test_waiters_wake_on_finished_failed_and_deleted_jobs_not_on_the_writes_between(backend: Backend) -> None:
    done, failed, deleted, running = _jobs(backend, "done", "failed", "deleted", "running")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        it = futures.as_completed([done, failed, deleted, running], timeout=DEADLINE, registry=backend.registry)
        first = pool.submit(next, it)
        _to(backend, "running", S.READY, S.STAGED_IN, S.PREPROCESSED, S.RUNNING)  # not terminal: wakes nobody
        _to(backend, "done", S.READY, S.STAGED_IN, S.PREPROCESSED, S.RUNNING)
        _to(backend, "done", S.RUN_DONE, S.POSTPROCESSED, S.STAGED_OUT, S.JOB_FINISHED)
        assert first.result(timeout=DEADLINE).name == "done"
        _to(backend, "failed", S.FAILED)
        assert pool.submit(next, it).result(timeout=DEADLINE).name == "failed"
        backend.registry.delete(Job, "deleted", backend.namespace)
        assert pool.submit(next, it).result(timeout=DEADLINE).name == "deleted"
    assert done.state == "JOB_FINISHED" and failed.state == "FAILED"
    with pytest.raises(futures.JobDeleted):
        futures.outcome(deleted)
    res = futures.wait([running], timeout=0.2, registry=backend.registry)
    assert res.not_done == [running]
