"""Warm Python workers (issue 14): a Python app's jobs reuse warm interpreters of the node
agent, yet each job keeps its own workdir, environment, output file, GPU set and wall time,
and a worker that dies fails only the job it held."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from apis import ApplicationDefinition, Job, JobState, Registry
from apis._config import SiteConfig
from apis._pycodec import RemoteTraceback, decode_result, encode_params
from tests._deadline import DEADLINE

from .conftest import AgentFactory, bind, make_jobs, wait_state
from .pyapps import BadInput, Crash, Fresh, Pid, Raises, Where

S = JobState
FINAL = (S.JOB_FINISHED, S.RUN_ERROR, S.RUN_TIMEOUT, S.FAILED)
WAIT = DEADLINE


def sync(registry: Registry, cls: type[ApplicationDefinition]) -> str:
    app = registry.create(cls.to_app(by_value=False))
    return app.name


def run_one(registry: Registry, app: str, name: str, gpus: list[int] | None = None, **params: Any) -> Job:
    """Create ``name``, bind it to n1 and wait until it ends."""
    job = make_jobs(registry, app, [name], parameters=encode_params(params))[0]
    bind(registry, [job], ["n1"], cpus=[0], gpus=gpus)
    return wait_state(registry, name, FINAL, timeout=WAIT)


def value(job: Job) -> Any:
    return decode_result(job.status.result)


def out(site: SiteConfig, name: str) -> str:
    return (site.data_path / "work" / name / "job.out").read_text()


def test_two_jobs_on_one_reused_worker_see_their_own_cwd_env_and_output(
        registry: Registry, site: SiteConfig, agent: AgentFactory) -> None:
    app = sync(registry, Where)
    agent("n1", cpus=1)
    first = run_one(registry, app, "w1", tag="a")
    second = run_one(registry, app, "w2", tag="b")
    assert first.status.state is second.status.state is S.JOB_FINISHED, second.status.message
    a, b = value(first), value(second)
    assert a["pid"] == b["pid"]  # the same warm interpreter ran both
    assert b["calls"] == a["calls"] + 1  # (so its module globals carried over, as the README warns)
    assert Path(a["cwd"]) == site.data_path / "work" / "w1"
    assert Path(b["cwd"]) == site.data_path / "work" / "w2"
    assert (a["job"], b["job"]) == ("w1", "w2")
    assert b["left_by_earlier"] is None  # w1's os.environ change did not reach w2
    assert (a["tag"], b["tag"]) == ("a", "b")
    assert out(site, "w1").split() == "stdout of w1 stderr of w1".split()
    assert out(site, "w2").split() == "stdout of w2 stderr of w2".split()


def test_an_app_that_asks_for_it_gets_a_fresh_process_per_job(
        registry: Registry, site: SiteConfig, agent: AgentFactory) -> None:
    app = sync(registry, Fresh)
    agent("n1", cpus=1)
    a = value(run_one(registry, app, "f1"))
    b = value(run_one(registry, app, "f2"))
    assert a["pid"] != b["pid"] and a["calls"] == b["calls"] == 1


@pytest.mark.parametrize(("how", "state", "says"), [
    ("exit", S.RUN_ERROR, "exited with code 3: the Python worker running the job exited with code 3"),
    ("segfault", S.RUN_ERROR, "killed by SIGSEGV: the Python worker running the job was killed by SIGSEGV"),
    ("abort", S.RUN_ERROR, "killed by SIGABRT: the Python worker running the job was killed by SIGABRT"),
])
def test_a_worker_that_dies_fails_only_its_job_and_the_next_job_runs(
        registry: Registry, site: SiteConfig, agent: AgentFactory, how: str, state: JobState, says: str) -> None:
    crash, where = sync(registry, Crash), sync(registry, Where)
    agent("n1", cpus=1)
    before = value(run_one(registry, where, "before"))
    job = run_one(registry, crash, "crash", how=how)
    assert job.status.state is state
    assert job.status.message.startswith(says), job.status.message
    assert "the worker is replaced" in job.status.message
    after = run_one(registry, where, "after")
    assert after.status.state is S.JOB_FINISHED, after.status.message
    assert value(after)["pid"] == before["pid"]  # another App's worker was not touched


def test_sys_exit_in_run_ends_its_job_with_that_code_and_keeps_the_worker(
        registry: Registry, site: SiteConfig, agent: AgentFactory) -> None:
    app = sync(registry, Pid)
    agent("n1", cpus=1)
    first = value(run_one(registry, app, "p1"))
    job = run_one(registry, app, "p2", how="sys.exit")
    assert job.status.state is S.RUN_ERROR and job.status.message == "exited with code 2", job.status.message
    assert value(run_one(registry, app, "p3")) == first  # the same worker, still warm


def test_a_job_past_its_wall_time_is_killed_with_its_worker_and_the_next_job_runs(
        registry: Registry, site: SiteConfig, agent: AgentFactory) -> None:
    crash = sync(registry, Crash)
    agent("n1", cpus=1)
    job = make_jobs(registry, crash, ["slow"], parameters=encode_params({"how": "sleep"}),
                    resources={"wallTimeMin": 0.02})[0]
    bind(registry, [job], ["n1"], cpus=[0])
    done = wait_state(registry, "slow", FINAL, timeout=WAIT)
    assert done.status.state is S.RUN_TIMEOUT
    assert "exceeded its wall time of 0.02 min" in done.status.message
    nxt = run_one(registry, crash, "quick", how="none")
    assert nxt.status.state is S.JOB_FINISHED, nxt.status.message


def test_memory_error_fails_its_job_and_the_worker_is_let_go(
        registry: Registry, site: SiteConfig, agent: AgentFactory) -> None:
    crash = sync(registry, Crash)
    agent("n1", cpus=1)
    first = run_one(registry, crash, "ok", how="none")
    assert first.status.state is S.JOB_FINISHED
    job = run_one(registry, crash, "oom", how="memory")
    assert job.status.state is S.RUN_ERROR
    assert job.status.exception == "MemoryError: no room for this"
    assert run_one(registry, crash, "ok2", how="none").status.state is S.JOB_FINISHED


def test_an_exception_reaches_the_reader_with_its_traceback(
        registry: Registry, site: SiteConfig, agent: AgentFactory) -> None:
    app = sync(registry, Raises)
    agent("n1", cpus=1)
    job = run_one(registry, app, "neg", x=-2)
    assert job.status.state is S.RUN_ERROR
    assert job.status.exception == "BadInput: x must not be negative, got -2"
    exc = cloudpickle.loads(base64.b64decode(job.status.exception_data or ""))
    assert isinstance(exc, BadInput)
    cause = exc.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "in _check" in cause.tb and "raise BadInput" in cause.tb  # where it was raised
    assert "BadInput: x must not be negative" in out(site, "neg")


def test_each_job_is_pinned_to_its_gpus_on_an_eight_gpu_node(
        registry: Registry, site: SiteConfig, agent: AgentFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    app = sync(registry, Where)
    agent("n1", cpus=8, gpus=8)
    sets = [[0], [3], [4, 5, 6, 7], [3]]
    seen = [value(run_one(registry, app, f"g{i}", gpus=g)) for i, g in enumerate(sets)]
    assert [s["cuda"] for s in seen] == ["0", "3", "4,5,6,7", "3"]
    pids = [s["pid"] for s in seen]
    assert len(set(pids[:3])) == 3  # a worker per GPU set...
    assert pids[3] == pids[1]  # ...reused by the next job of the same set
