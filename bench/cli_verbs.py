"""Scenario ``cli-verbs``: what ``get --field-selector`` reads, and the bulk verbs' write rate.

N jobs (``bench.store.make_jobs``), 1 in 100 moved to FAILED. Timed in-process through the
functions the commands call (``kubectl_like.query.query``, ``kubectl_like.bulk.update_all``),
median of 3, so the CLI's start-up is not part of it:

* ``list_all``: every job of the namespace read and decoded (``get jobs``) — the baseline;
* ``state_index``: ``--field-selector status.state=FAILED`` (the state index: 1 % read);
* ``name_index``: ``--field-selector metadata.name=NAME`` (one object read);
* ``workdir_scan``: ``--field-selector spec.workdir=bench/7`` (no index: every job read);
* ``workdir_narrowed``: ``status.state=FAILED,spec.workdir=bench/7`` (the index narrows first);
* ``retry``: the FAILED jobs moved to RESTART_READY (``balsamctl retry --state FAILED``), jobs/s;
* ``label``: a label added to the same jobs (``balsamctl label ... -l``), jobs/s.

Not in the default run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import store as st
from apis import App, Job, JobState, Registry, advance
from kubectl_like.bulk import update_all
from kubectl_like.commands.label import LABEL, Changer, Edits
from kubectl_like.commands.retry import move
from kubectl_like.fieldselector import parse_field_selector
from kubectl_like.query import Filters, query

from ._harness import Context, Result, StoreTarget, scenario
from .store import make_jobs

FAILED_PATH = [JobState.READY, JobState.STAGED_IN, JobState.PREPROCESSED, JobState.RUNNING,
               JobState.RUN_ERROR, JobState.FAILED]
CHUNK = 2000


def _median_ms(fn: Callable[[], Any], rounds: int = 3) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, out


def _bound(fn: Callable[[str], Any], arg: str) -> Callable[[], Any]:
    return lambda: fn(arg)


def _run_backend(ctx: Context, res: Result, target: StoreTarget, n: int) -> None:
    b = target.backend
    store = st.open_store(target.url)
    try:
        reg = Registry(store)
        ns = "default" if not target.shared else f"bench-verbs-{time.monotonic_ns() % 10**8}"
        reg.create(App.model_validate({"metadata": {"name": "hello", "namespace": ns}, "spec": {"command": "/bin/true", "parameters": {"x": {"required": False}}}}))
        ctx.log(f"{b}: creating {n:,} jobs")
        jobs = make_jobs(n, ns)
        created: list[Job] = []
        for i in range(0, n, CHUNK):
            created += reg.create_many(jobs[i : i + CHUNK])
        failed = created[::100]
        for i in range(0, len(failed), CHUNK):
            chunk = failed[i : i + CHUNK]
            reg.update_many([(j, advance(j.model_copy(deep=True), FAILED_PATH)) for j in chunk])
        named = created[n // 2].name
        target_wd = failed[len(failed) // 2].spec.workdir

        def get(sel: str | None) -> list[Any]:
            f = Filters.parse(None, (), {}, None, None, fields=parse_field_selector(sel, Job))
            return query(reg, Job, [ns], f)

        base_ms, objs = _median_ms(lambda: get(None))
        res.add("list_all", base_ms, "ms", f"get jobs: all {len(objs):,} read", backend=b, baseline=True)
        for name, sel, label in [
            ("state_index", "status.state=FAILED", "status.state=FAILED (state index)"),
            ("name_index", f"metadata.name={named}", "metadata.name=NAME (one object)"),
            ("workdir_scan", f"spec.workdir={target_wd}", "spec.workdir=W (no index: every job read)"),
            ("workdir_narrowed", f"status.state=FAILED,spec.workdir={target_wd}",
             "status.state=FAILED,spec.workdir=W"),
        ]:
            ms, found = _median_ms(_bound(get, sel))
            res.add(name, ms, "ms", label, backend=b, ratio_to="list_all", ratio_unit="of get all", matched=len(found))
        to_move = get("status.state=FAILED")
        t0 = time.perf_counter()
        moved = update_all(reg, Job, to_move, move)
        dt = time.perf_counter() - t0
        res.add("retry", len(moved) / dt, "jobs/s", f"retry: {len(moved):,} FAILED → RESTART_READY", backend=b)
        changer = Changer(LABEL, Edits({"triage": "done"}, ()), overwrite=False)
        fresh = get("status.state=RESTART_READY")
        t0 = time.perf_counter()
        labeled = update_all(reg, Job, fresh, changer)
        dt = time.perf_counter() - t0
        res.add("label", len(labeled) / dt, "jobs/s", f"label: {len(labeled):,} jobs", backend=b)
    finally:
        store.close()


@scenario("cli-verbs", help="get --field-selector by index vs scan; retry and label write rates",
          backends=("sqlite", "etcd"), default_backend="sqlite", plot=None, in_default_run=False)
def run_cli_verbs(ctx: Context) -> Result:
    n = ctx.pick(tiny=300, small=5_000, default=20_000, large=100_000)
    res = Result("cli-verbs", inputs={"jobs": n, "failed": len(range(0, n, 100)), "rounds": 3})
    ctx.per_backend(res, lambda target: _run_backend(ctx, res, target, n))
    return res
