"""Scenario ``futures`` (issue 13f): what waiting for jobs costs the client, per job.

N jobs are created in a fresh store; another process ends them (FAILED, ``update_many`` of 50
a transaction, as a manager's batch of writes would), while this process only waits:
``as_completed`` over all N through the process's shared watcher (``apis._futures``: one
``store.reflector.Reflector`` per terminal-entry prefix, key-only, one ``get_many`` per batch
of entry events). Figure: this process's CPU ms per job from the wait's start to the last
result (``time.process_time``; the writer's CPU is its own), and how many sets of store
watches the N futures opened (1).

Baseline, same run: one decode of a finished job's stored value (``Registry.decode``), the one
step a waiter cannot avoid (it hands the job back decoded); the ratio says how much the watch,
the reads and the delivery add to it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import store as st
from apis import App, AppSpec, Job, ObjectMeta, Registry
from apis import _futures as futures
from apis._registry import object_key

from ._harness import Context, Result, StoreTarget, scenario

REPO = Path(__file__).resolve().parent.parent
BATCH = 50

WRITER = textwrap.dedent("""
    import sys
    import store as st
    from apis import Job, JobState, Registry
    url, ns, n, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    reg = Registry(st.open_store(url))
    names = [f"f{i}" for i in range(n)]
    for i in range(0, n, batch):
        jobs = [j for j in reg.get_many(Job, names[i:i + batch], ns) if j is not None]
        reg.update_many([(j, j.model_copy(update={"status": j.status.model_copy(
            update={"state": JobState.FAILED})})) for j in jobs])
""")


def wait_for_all(url: str, namespace: str, n: int) -> dict[str, float]:
    """Create ``n`` jobs, end them from another process, wait for them here: CPU per job."""
    reg = Registry(st.open_store(url))
    try:
        spec = AppSpec.model_validate({"command": "echo {{ x }}", "parameters": {"x": {"required": True}}})
        reg.create(App(metadata=ObjectMeta(name="echo", namespace=namespace), spec=spec))
        jobs = reg.create_many([Job(name=f"f{i}", namespace=namespace, app_id="echo", workdir=f"f{i}",
                                    parameters={"x": "1"}) for i in range(n)])
        watcher = futures.watcher_for(reg, namespace)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        writer = subprocess.Popen([sys.executable, "-c", WRITER, url, namespace, str(n), str(BATCH)], env=env,
                                  cwd=REPO)
        try:
            c0, t0 = time.process_time(), time.perf_counter()
            got = sum(1 for _ in futures.as_completed(jobs, timeout=600, registry=reg))
            c1, t1 = time.process_time(), time.perf_counter()
        finally:
            if writer.wait(600) != 0:
                raise RuntimeError("the writer process failed")
        if got != n or any(j.state != "FAILED" for j in jobs):
            raise AssertionError(f"{got} of {n} jobs came back FAILED")
        kvs = [kv for kv in reg.store.get_many([object_key(Job, namespace, j.name) for j in jobs])
               if kv is not None]
        d0 = time.process_time()
        for kv in kvs:
            Registry.decode(Job, kv)
        d1 = time.process_time()
        return {"wait_cpu_ms": (c1 - c0) * 1000 / n, "wait_s": t1 - t0, "decode_ms": (d1 - d0) * 1000 / len(kvs),
                "watch_sets": float(watcher.watches_opened)}
    finally:
        reg.store.close()


@scenario("futures", help="the client's CPU per job waiting on N futures ended by another process",
          backends=("sqlite", "etcd"), in_default_run=False)
def run_futures(ctx: Context) -> Result:
    n = ctx.pick(tiny=200, small=5000, default=20_000, large=100_000)
    res = Result("futures", inputs={"jobs": n, "ended_per_txn": BATCH,
                                    "method": "create N; another process ends them (FAILED, update_many of "
                                              f"{BATCH}); this process waits with as_completed"})

    def one(target: StoreTarget) -> None:
        b = target.backend
        ns = f"bench-{uuid.uuid4().hex[:8]}" if target.shared else "default"
        ctx.log(f"{b}: {n:,} futures, ended by another process {BATCH} at a time")
        r = wait_for_all(target.url, ns, n)
        res.add("decode", r["decode_ms"], "CPU ms/job", "one decode of a finished job (the step a waiter cannot avoid)",
                backend=b, baseline=True)
        res.add("wait_cpu", r["wait_cpu_ms"], "CPU ms/job", "client: as_completed over N futures, CPU per job",
                backend=b, ratio_to="decode", ratio_unit="× one decode", wait_s=round(r["wait_s"], 3))
        res.add("watch_sets", r["watch_sets"], "sets", "sets of store watches the N futures opened", backend=b)

    ctx.per_backend(res, one)
    return res
