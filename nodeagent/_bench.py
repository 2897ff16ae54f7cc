"""``python -m nodeagent._bench [N] [COMMAND]``: one agent's throughput on pre-bound jobs;
``python -m nodeagent._bench hop [N]``: parent-exit → child-start latency along a chain;
``python -m nodeagent._bench python [N] [INFLIGHT]``: Python jobs, warm workers vs a fresh
process per job, INFLIGHT bound at a time.

Creates N jobs of an App whose command is COMMAND (default ``/bin/true``), binds them all
to one agent in one transaction (as the placement reconciler would), and measures jobs/s
from the bind to the last JOB_FINISHED (written with the exit), next to the raw ``subprocess.Popen`` rate of
``/bin/true`` measured in the same run. Also prints store revisions used per job.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import store as st
from apis import App, ApplicationDefinition, Job, JobState, Placement, Registry, advance
from apis._config import SiteConfig
from apis._pycodec import encode_params
from apis._registry import index_prefix

from ._agent import NodeAgent


def raw_spawn_rate(n: int = 1000) -> float:
    t = time.perf_counter()
    for _ in range(n):
        subprocess.Popen(["/bin/true"]).wait()
    return n / (time.perf_counter() - t)


def run(n: int = 2000, command: str = "/bin/true") -> dict[str, float]:
    d = Path(tempfile.mkdtemp(prefix="nodeagent-bench-"))
    (d / "data").mkdir()
    site = SiteConfig(path=d, name="bench", store_url=f"sqlite://{d}/store.db")
    reg = Registry(st.open_store(site.store_url))
    reg.create(App(metadata={"name": "app"}, spec={"command": command}))  # type: ignore[arg-type]
    jobs = reg.create_many([
        Job(metadata={"name": f"j{i}"}, spec={"app": "app", "workdir": f"w/{i % 100}/{i}"})  # type: ignore[arg-type]
        for i in range(n)
    ])
    agent = NodeAgent(reg, name="n1", cpus=n, site_config=site, log_to_file=False).start()
    pairs = []
    for j in jobs:
        b = j.model_copy(deep=True)
        advance(b, [JobState.READY, JobState.STAGED_IN, JobState.PREPROCESSED])
        b.status.placement = Placement(nodes=["n1"], cpus=[0], occupancy=1.0 / n)
        pairs.append((j, b))
    done = threading.Event()
    w = reg.store.watch(index_prefix(Job, "boundnode", "default", "n1"))
    rev0 = reg.store.current_revision()
    c0 = _cpu()
    t0 = time.perf_counter()
    reg.update_many(pairs)

    def waiter() -> None:
        gone = 0
        for ev in w:
            gone += ev.type == "DELETE"
            if gone >= n:
                done.set()
                return

    threading.Thread(target=waiter, daemon=True).start()
    done.wait(600)
    dt = time.perf_counter() - t0
    c1 = _cpu()
    revs = reg.store.current_revision() - rev0 - 1
    w.close()
    agent.stop()
    states = {s: reg.index_count(Job, "state", s.value) for s in (JobState.JOB_FINISHED, JobState.RUN_ERROR)}
    raw = raw_spawn_rate()
    return {"jobs": n, "seconds": dt, "jobs_per_s": n / dt, "raw_popen_per_s": raw, "ratio": n / dt / raw,
            "revisions": revs, "revisions_per_job": revs / n, "job_txns": agent.stats["job_txns"],
            "finished": states[JobState.JOB_FINISHED], "run_error": states[JobState.RUN_ERROR],
            "agent_cpu_ms_per_job": (c1[0] - c0[0]) / n * 1e3, "children_cpu_ms_per_job": (c1[1] - c0[1]) / n * 1e3}


def _cpu() -> tuple[float, float]:
    """CPU seconds (user+sys) of this process and of its reaped children."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime, c.ru_utime + c.ru_stime




class BenchAdd(ApplicationDefinition):
    """The Python app of :func:`python_rate` (importable by module path in the workers)."""

    def run(self, x: int, y: int) -> int:
        return x + y


def python_rate(n: int = 2000, inflight: int = 8, fresh: bool = False) -> dict[str, float]:
    """N Python jobs (``BenchAdd``) through one agent, ``inflight`` bound at a time: this
    harness binds the next job as each one is finished (as placement would, reacting to
    a watch). ``fresh``: the App asks for a fresh process per job (the path before issue 14)."""
    d = Path(tempfile.mkdtemp(prefix="nodeagent-py-"))
    (d / "data").mkdir()
    site = SiteConfig(path=d, name="bench", store_url=f"sqlite://{d}/store.db")
    reg = Registry(st.open_store(site.store_url))
    app = BenchAdd.to_app(by_value=True)  # as bench python-apps sends it: no user module import per job
    app.metadata.name = "add"
    assert app.spec.python is not None
    app.spec.python.fresh_process = fresh
    reg.create(app)
    jobs = reg.create_many([
        Job(metadata={"name": f"p{i:05d}"}, spec={"app": "add", "workdir": f"p/{i % 100}/{i}",  # type: ignore[arg-type]
                                                 "parameters": encode_params({"x": i, "y": 1})})
        for i in range(n)
    ])
    agent = NodeAgent(reg, name="n1", cpus=inflight, site_config=site, log_to_file=False).start()
    w = reg.store.watch(index_prefix(Job, "state", "default", "JOB_FINISHED"))

    def bind(batch: list[Job]) -> None:
        pairs = []
        for j in batch:
            b = j.model_copy(deep=True)
            advance(b, [JobState.READY, JobState.STAGED_IN, JobState.PREPROCESSED])
            b.status.placement = Placement(nodes=["n1"], cpus=[0], occupancy=1.0 / inflight)
            pairs.append((j, b))
        reg.update_many(pairs)

    c0 = _cpu()
    t0 = time.perf_counter()
    bind(jobs[:inflight])
    nxt, done = inflight, 0
    while done < n:
        evs = [e for e in w.poll(60) if e.type == "PUT"]
        if not evs:
            break
        done += len(evs)
        if nxt < n:
            bind(jobs[nxt : nxt + len(evs)])
            nxt += len(evs)
    dt = time.perf_counter() - t0
    c1 = _cpu()
    w.close()
    agent.stop()
    return {"jobs": n, "inflight": inflight, "fresh_process": fresh, "seconds": dt, "jobs_per_s": done / dt,
            "finished": reg.index_count(Job, "state", "JOB_FINISHED"), "job_txns": agent.stats["job_txns"],
            "agent_cpu_ms_per_job": (c1[0] - c0[0]) / n * 1e3}


def hop_latency(n: int = 200) -> dict[str, float]:
    """A chain of n jobs: when job i is finished this harness binds job i+1 (as placement
    would, reacting to a watch). Measures parent-exit → child-start from the jobs' own
    clocks (``date +%s%N`` as the parent's last and the child's first command)."""
    d = Path(tempfile.mkdtemp(prefix="nodeagent-hop-"))
    (d / "data").mkdir()
    site = SiteConfig(path=d, name="bench", store_url=f"sqlite://{d}/store.db")
    reg = Registry(st.open_store(site.store_url))
    reg.create(App(metadata={"name": "app"}, spec={"command": "date +%s%N > start; date +%s%N > end"}))  # type: ignore[arg-type]
    jobs = reg.create_many([
        Job(metadata={"name": f"j{i:04d}"}, spec={"app": "app", "workdir": f"c/{i:04d}"})  # type: ignore[arg-type]
        for i in range(n)
    ])
    agent = NodeAgent(reg, name="n1", cpus=4, site_config=site, log_to_file=False).start()
    w = reg.store.watch(index_prefix(Job, "state", "default", "JOB_FINISHED"))

    def bind(j: Job) -> None:
        b = j.model_copy(deep=True)
        advance(b, [JobState.READY, JobState.STAGED_IN, JobState.PREPROCESSED])
        b.status.placement = Placement(nodes=["n1"], cpus=[0], occupancy=1.0)
        reg.update_many([(j, b)])

    bind(jobs[0])
    i = 0
    for ev in w:
        if ev.type != "PUT":
            continue
        i += 1
        if i >= n:
            break
        bind(jobs[i])
    w.close()
    agent.stop()
    hops = []
    for i in range(1, n):
        end = int((d / "data" / f"c/{i - 1:04d}" / "end").read_text())
        start = int((d / "data" / f"c/{i:04d}" / "start").read_text())
        hops.append((start - end) / 1e6)
    hops.sort()
    return {"hops": len(hops), "p50_ms": hops[len(hops) // 2], "p99_ms": hops[int(len(hops) * 0.99)],
            "max_ms": hops[-1]}


if __name__ == "__main__":
    if sys.argv[1:2] == ["python"]:  # python [N] [INFLIGHT]: warm workers, then fresh processes, same run
        jobs = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
        inflight = int(sys.argv[3]) if len(sys.argv) > 3 else 8
        for fresh in (False, True):
            print(python_rate(jobs, inflight, fresh))
        sys.exit(0)
    if sys.argv[1:2] == ["hop"]:
        for k, v in hop_latency(int(sys.argv[2]) if len(sys.argv) > 2 else 200).items():
            print(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}")
        sys.exit(0)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    cmd = sys.argv[2] if len(sys.argv) > 2 else "/bin/true"
    raw0 = raw_spawn_rate()
    res = run(n, cmd)
    print(f"raw Popen(/bin/true) before: {raw0:.0f}/s")
    for k, v in res.items():
        print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}")
