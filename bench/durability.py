"""durability: what SQLite's ``synchronous=full`` costs against ``normal`` (the default), in
one run: the store figures of ``bench store`` (raw txn puts, one put per txn, bulk_create)
and the throughput of ``bench e2e`` (N /bin/true jobs through ``balsamctl up``), each measured
with both settings, interleaved (normal, full, normal, full) so that the machine's load moves
both alike. The store file lives on the disk (``tempfile``'s directory, or
``BALSAM_BENCH_STORE_DIR``), never on tmpfs, where fsync is free; job workdirs stay where
``e2e`` puts them (``BALSAM_BENCH_SITE_DIR``, tmpfs by default) so only the store's cost moves.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import store as st
from apis import App, Job, Registry

from ._harness import Context, Result, StoreTarget, scenario, timed
from .e2e import _throughput
from .store import make_jobs, raw_put_rate

STORE_DIR_ENV = "BALSAM_BENCH_STORE_DIR"
SETTINGS = ("normal", "full")


@contextmanager
def disk_store(setting: str) -> Iterator[StoreTarget]:
    d = Path(tempfile.mkdtemp(prefix="balsam-durability-", dir=os.environ.get(STORE_DIR_ENV)))
    try:
        path = d / "store.db"
        yield StoreTarget("sqlite", f"sqlite:///{path}?synchronous={setting}", path=path)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def single_put_rate(store: st.Store, n: int) -> float:
    """One put per transaction: one commit (and under ``full`` one fsync) per write, the
    shape of a node agent's or a controller's small writes."""
    secs, _ = timed(lambda: [store.put(f"/bench/single/{i}", b"x" * 200) for i in range(n)])
    return n / secs


def _store_figures(target: StoreTarget, n: int, singles: int) -> dict[str, float]:
    s = st.open_store(target.url)
    try:
        reg = Registry(s)
        raw = raw_put_rate(s, max(1000, n), "/bench/raw/")
        single = single_put_rate(s, singles)
        reg.create(App(metadata={"name": "hello"}, spec={"command": "/bin/true", "parameters": {"x": {"required": False}}}))  # type: ignore[arg-type]
        jobs = make_jobs(n)
        secs, _ = timed(lambda: Job.objects.using(reg).bulk_create(jobs, batch_size=1000))
        return {"raw_puts": raw, "single_puts": single, "bulk_create": n / secs}
    finally:
        s.close()


@scenario("durability", help="SQLite synchronous=full vs normal: store and e2e figures, same run",
          backends=("sqlite",), in_default_run=False)
def run_durability(ctx: Context) -> Result:
    n = ctx.pick(tiny=200, small=10_000, default=20_000, large=100_000)
    singles = ctx.pick(tiny=50, small=1_000, default=2_000, large=5_000)
    jobs = ctx.pick(tiny=20, small=1_000, default=2_000, large=6_000)
    rounds = ctx.pick(tiny=1, small=2, default=2, large=3)
    probe = tempfile.gettempdir() if not os.environ.get(STORE_DIR_ENV) else os.environ[STORE_DIR_ENV]
    res = Result("durability", inputs={
        "store_dir": probe, "jobs_bulk": n, "single_puts": singles, "e2e_jobs": jobs, "rounds": rounds,
        "order": "normal, full, normal, full, ... (medians per setting)",
    })
    store_runs: dict[str, list[dict[str, float]]] = {s: [] for s in SETTINGS}
    e2e_runs: dict[str, list[float]] = {s: [] for s in SETTINGS}
    for r in range(rounds):
        for setting in SETTINGS:
            with disk_store(setting) as target:
                ctx.log(f"round {r + 1}: synchronous={setting}: store figures ({n:,} jobs, {singles:,} single puts)")
                store_runs[setting].append(_store_figures(target, n, singles))
            with disk_store(setting) as target:
                ctx.log(f"round {r + 1}: synchronous={setting}: {jobs:,} jobs through up")
                e2e_runs[setting].append(_throughput(ctx, res, target, jobs)["jobs_per_s"])
    med: dict[str, dict[str, Any]] = {}
    for setting in SETTINGS:
        med[setting] = {k: statistics.median(run[k] for run in store_runs[setting]) for k in store_runs[setting][0]}
        med[setting]["e2e_jobs_per_s"] = statistics.median(e2e_runs[setting])
    labels = {"raw_puts": ("puts/s", "raw txn puts (1,000 per txn)"),
              "single_puts": ("puts/s", "one put per txn"),
              "bulk_create": ("jobs/s", "Job.objects.bulk_create (1,000 per txn)"),
              "e2e_jobs_per_s": ("jobs/s", f"{jobs:,} /bin/true jobs through up")}
    for name, (unit, label) in labels.items():
        res.add(f"normal_{name}", med["normal"][name], unit, f"{label}, synchronous=normal", backend="sqlite",
                baseline=True)
        res.add(f"full_{name}", med["full"][name], unit, f"{label}, synchronous=full", backend="sqlite",
                ratio_to=f"sqlite.normal_{name}", ratio_unit="of synchronous=normal")
    res.series["sqlite"] = {"store_runs": store_runs, "e2e_runs": e2e_runs}
    return res
