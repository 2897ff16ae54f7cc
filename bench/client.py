"""Scenario ``client`` (issue 16): what the Python client's layers cost over the registry they
sit on, on each backend.

* **bulk_create** — N jobs through ``Job.objects.using(reg).bulk_create`` (namespace, site
  placement, the per-object client binding) vs ``Registry.create_many`` of the same jobs in
  the same batches (baseline).
* **query** — ``list(Job.objects.using(reg).all())`` (decode, filter, sort, bind) vs
  ``Registry.list`` (decode only; baseline).
* **watch** — N status writes followed through ``Job.objects.filter(...).watch()`` (typed,
  decoded, matched against the query) vs a raw ``store.watch`` on the same prefix counting
  the same N events (baseline): the time from the first write until the last event arrives.
* **wait** — ``Job.objects.wait(jobs)`` on N jobs that finish in writes of CHUNK jobs: from
  the last write's return to wait()'s (the shared typed watch of ``apis._futures``); no baseline.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import store as st
from apis import HAPPY_PATH, App, Job, ObjectMeta, Registry, advance
from apis._registry import kind_prefix

from ._harness import Context, Result, StoreTarget, scenario

CHUNK = 1000


def _jobs(n: int, ns: str, tag: str) -> list[Job]:
    return [Job(app_id="bench", workdir=f"{tag}/{i}", namespace=ns, parameters={"x": str(i)}, tags={"set": tag})
            for i in range(n)]


def _status_writes(reg: Registry, ns: str, names: list[str]) -> None:
    """One status write per job (one step along the happy path), CHUNK per transaction."""
    for i in range(0, len(names), CHUNK):
        cur = [j for j in reg.get_many(Job, names[i:i + CHUNK], ns) if j is not None]
        reg.update_many([(j, advance(j.status_copy(), _rest(j)[:1])) for j in cur])


def _follow(events: Any, n: int, ready: threading.Event, done: list[float]) -> None:
    ready.set()
    seen = 0
    for _ in events:
        seen += 1
        if seen == n:
            done.append(time.perf_counter())
            return


def _measure(ctx: Context, res: Result, target: StoreTarget, n: int) -> None:
    b = target.backend
    s = st.open_store(target.url)
    reg = Registry(s)
    ns = f"bench-client-{int(time.time())}"
    try:
        reg.create(App(metadata=ObjectMeta(name="bench", namespace=ns),
                       spec={"command": "echo {{ x }}", "parameters": {"x": {"required": True}}}))
        mgr = Job.objects.using(reg, namespace=ns)
        ctx.log(f"{b}: bulk_create {n} jobs (registry, then client)")
        base = _jobs(n, ns, "raw")
        t0 = time.perf_counter()
        for i in range(0, n, CHUNK):
            reg.create_many(base[i:i + CHUNK])
        raw_s = time.perf_counter() - t0
        res.add("bulk_create_registry", n / raw_s, "jobs/s", "Registry.create_many", backend=b, baseline=True)
        mine = _jobs(n, ns, "client")  # built outside the timing, as the baseline's are
        t0 = time.perf_counter()
        made = mgr.bulk_create(mine, batch_size=CHUNK)
        cl_s = time.perf_counter() - t0
        res.add("bulk_create_client", n / cl_s, "jobs/s", "Job.objects.using(reg).bulk_create", backend=b,
                ratio_to="bulk_create_registry", ratio_unit="× registry")

        ctx.log(f"{b}: list {2 * n} jobs (registry, then client)")
        t0 = time.perf_counter()
        objs, _ = reg.list(Job, ns)
        list_s = time.perf_counter() - t0
        res.add("list_registry", len(objs) / list_s, "jobs/s", "Registry.list", backend=b, baseline=True)
        t0 = time.perf_counter()
        got = list(mgr.all())
        q_s = time.perf_counter() - t0
        res.add("list_client", len(got) / q_s, "jobs/s", "list(Job.objects.all())", backend=b,
                ratio_to="list_registry", ratio_unit="× registry")

        names = [j.name for j in made]
        ctx.log(f"{b}: {n} status writes followed by a raw store watch, then by Query.watch()")
        for label, make in (
            ("raw", lambda: s.watch(kind_prefix(Job, ns))),
            ("typed", lambda: mgr.filter(tags={"set": "client"}).watch(resource_version=s.current_revision())),
        ):
            ready, done = threading.Event(), []  # type: ignore[var-annotated]
            events = make()
            t = threading.Thread(target=_follow, args=(events, n, ready, done), daemon=True)
            t.start()
            ready.wait()
            t0 = time.perf_counter()
            _status_writes(reg, ns, names)
            t.join(600)
            if hasattr(events, "close"):
                events.close()
            took = (done[0] - t0) if done else None
            rate = None if took is None else n / took
            if label == "raw":
                res.add("watch_raw", rate, "events/s", "store.watch (raw events)", backend=b, baseline=True)
            else:
                res.add("watch_typed", rate, "events/s", "Query.watch() (typed ADDED/MODIFIED/DELETED)",
                        backend=b, ratio_to="watch_raw", ratio_unit="× raw")

        ctx.log(f"{b}: wait() on {n} jobs that finish in one write per {CHUNK}")
        waited: list[float] = []
        w = threading.Thread(target=lambda: (mgr.wait(made, timeout=600), waited.append(time.perf_counter())),
                             daemon=True)
        w.start()
        time.sleep(1.0)  # the waiter has subscribed
        for i in range(0, n, CHUNK):
            cur = [j for j in reg.get_many(Job, names[i:i + CHUNK], ns) if j is not None]
            reg.update_many([(j, advance(j.status_copy(), _rest(j))) for j in cur])
        t_last = time.perf_counter()
        w.join(600)
        res.add("wait_all", (waited[0] - t_last) * 1000 if waited else None, "ms",
                "wait(): last finishing write → return", backend=b)
    finally:
        s.close()


def _rest(job: Job) -> list[Any]:
    """The states left on the happy path from ``job``'s to JOB_FINISHED."""
    i = HAPPY_PATH.index(job.status.state)
    return list(HAPPY_PATH[i + 1:])


@scenario("client", help="the Python client's layers (bulk_create, query, watch, wait) vs the registry/store",
          backends=("sqlite", "etcd"), default_backend="sqlite", in_default_run=False)
def run_client(ctx: Context) -> Result:
    n = ctx.pick(tiny=100, small=2000, default=10_000, large=50_000)
    res = Result("client", inputs={"jobs": n, "chunk": CHUNK})
    ctx.per_backend(res, lambda target: _measure(ctx, res, target, n))
    res.note("ratios are client ÷ registry (or ÷ raw store watch) from the same run and store")
    return res
