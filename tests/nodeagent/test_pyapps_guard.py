"""The Python pool tells the job guardian of its processes (nodeagent/_pyapps.py): a warm
worker once for its whole life, not once per job (issue 14, fifth round), and never leaves a
dead worker's pid guarded (a reused pid would be killed with the next lease loss)."""

from __future__ import annotations

import os
import queue
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from apis import Job, Placement
from apis._pycodec import encode_params
from nodeagent._messages import Exited, Spawned
from nodeagent._pyapps import PythonApps
from nodeagent._run import Run
from tests._deadline import DEADLINE

from .pyapps import Crash, Fresh, Where

pytestmark = pytest.mark.timeout(3 * DEADLINE)


class Calls:
    def __init__(self) -> None:
        self.guarded: list[int] = []
        self.unguarded: list[int] = []

    def guard(self, pid: int) -> None:
        self.guarded.append(pid)

    def unguard(self, pid: int) -> None:
        self.unguarded.append(pid)


def _spec(cls: Any, tmp_path: Path, name: str, pool: str | None) -> dict[str, Any]:
    wd = tmp_path / name
    wd.mkdir()
    return {"pool": pool, "task": "run", "cwd": str(wd), "stdout": str(wd / "job.out"), "append": False,
            "env": {"BALSAM_JOB_ID": name}, "app": cls.to_app().spec.python.model_dump(by_alias=True, exclude_none=True),
            "job": b"{}", "parameters": encode_params({"tag": name}), "result_path": str(tmp_path / f"{name}.json"),
            "apps_dir": str(tmp_path)}


def _run(name: str) -> Run:
    job = Job(metadata={"name": name, "namespace": "default"}, spec={"app": "a", "workdir": name})  # type: ignore[arg-type]
    return Run(name=name, snapshot=job, placement=Placement())


def _until(q: queue.SimpleQueue, kind: type) -> Any:
    while True:
        m = q.get(timeout=DEADLINE)
        if isinstance(m, kind):
            return m


def _wait_for(cond: Any) -> None:
    deadline = time.monotonic() + DEADLINE
    while not cond():
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.fixture
def pool(tmp_path: Path) -> Any:
    q: queue.SimpleQueue = queue.SimpleQueue()
    calls = Calls()
    apps = PythonApps(q.put, guard=calls.guard, unguard=calls.unguard)
    yield apps, q, calls
    apps.close()


def test_a_warm_worker_is_guarded_once_for_all_its_jobs_and_unguarded_when_it_ends(pool: Any, tmp_path: Path) -> None:
    apps, q, calls = pool
    pids = []
    for i in range(3):
        run = _run(f"g{i}")
        apps.spawn(run, _spec(Where, tmp_path, f"g{i}", pool="p"))
        spawned = _until(q, Spawned)
        exited = _until(q, Exited)
        assert exited.code == 0 and run.worker
        pids.append(spawned.proc.pid)
    assert len(set(pids)) == 1  # one warm worker ran the three jobs
    assert calls.guarded == [pids[0]] and calls.unguarded == []
    os.kill(pids[0], signal.SIGKILL)  # the worker ends while idle
    _wait_for(lambda: calls.unguarded == [pids[0]])


def test_a_worker_that_dies_under_its_job_is_unguarded_after_the_jobs_exit(pool: Any, tmp_path: Path) -> None:
    apps, q, calls = pool
    run = _run("d1")
    spec = _spec(Crash, tmp_path, "d1", pool="p")
    spec["parameters"] = encode_params({"how": "sleep"})
    apps.spawn(run, spec)
    pid = _until(q, Spawned).proc.pid
    assert calls.guarded == [pid]
    os.kill(pid, signal.SIGKILL)
    exited = _until(q, Exited)
    assert exited.pid == pid and exited.died
    _wait_for(lambda: calls.unguarded == [pid])


def test_a_fresh_process_is_guarded_by_the_pool_and_left_to_the_agent_to_unguard(pool: Any, tmp_path: Path) -> None:
    apps, q, calls = pool
    run = _run("f1")
    apps.spawn(run, _spec(Fresh, tmp_path, "f1", pool=None))
    pid = _until(q, Spawned).proc.pid
    assert _until(q, Exited).code == 0 and not run.worker
    assert calls.guarded == [pid] and calls.unguarded == []  # the agent's on_exit unguards it, as a command's
