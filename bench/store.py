"""Scenario ``store`` (issue 3): bulk create, count by state and label-selector get over N jobs,
on each backend, against the raw write rate of the same store measured in the same run.

Per backend, on a fresh store (a new SQLite file, or a newly started etcd):

1. baseline — raw puts/s: 1 KB values in txns of 1,000 puts straight to ``Store.txn`` (the ops
   are built before the clock starts, so this is the store's own rate);
2. ``Job(...)`` construction rate (client side, outside bulk_create, for context);
3. ``Job.objects.bulk_create`` of N jobs, in calls of one ``BULK_BATCH`` (10k) each — exactly
   the store transactions bulk_create makes anyway — jobs/s and its ratio to the raw rate;
4. ``Job.objects.filter(state="CREATED").count()``: ms, median of 5;
5. ``list(Job.objects.filter(selector="experiment=foo,run=5"))``: ms, median of 3; labels are
   spread so that it matches 1/10 of the jobs (experiment foo on even i, run = i % 5 + 1).
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from typing import Any

import store as st
from apis import App, Job
from apis._client import BULK_BATCH
from apis._registry import Registry, index_keys

from ._harness import Context, Result, StoreTarget, median_ms, scenario, timed

RAW_VALUE_BYTES = 1024
RAW_TXN_PUTS = 1000
SELECTOR = "experiment=foo,run=5"

TARGETS = {
    "bulk_create": {"sqlite": ">= 20000", "etcd": ">= 2000"},
    "count_ms": "<= 200",
    "selector_ms": "<= 1000",
}


def make_jobs(n: int, namespace: str = "default", app: str = "hello") -> list[Job]:
    """N Balsam-style jobs (generated names); the labels make ``SELECTOR`` match 1 in 10."""
    return [
        Job(app_id=app, workdir=f"bench/{i}", parameters={"x": str(i)}, namespace=namespace,
            tags={"experiment": "foo" if i % 2 == 0 else "bar", "run": str(i % 5 + 1)})
        for i in range(n)
    ]


def selector_matches(n: int) -> int:
    return sum(1 for i in range(n) if i % 2 == 0 and i % 5 + 1 == 5)


def raw_put_rate(store: st.Store, n: int, prefix: str, per_txn: int = RAW_TXN_PUTS) -> float:
    """Puts/s of ``n`` 1 KB values in txns of ``RAW_TXN_PUTS`` puts (ops built beforehand); 100
    per txn on an etcd with its default limits (128 ops, 1.5 MiB per txn)."""
    value = os.urandom(RAW_VALUE_BYTES)
    txns = [
        [st.Put(f"{prefix}{i:09d}", value) for i in range(start, min(start + per_txn, n))]
        for start in range(0, n, per_txn)
    ]
    try:
        secs, _ = timed(lambda: [store.txn([], ops) for ops in txns])
    except st.TooLarge:
        if per_txn <= 100:
            raise
        return raw_put_rate(store, n, prefix + "small/", 100)
    return n / secs


def _run_backend(ctx: Context, res: Result, target: StoreTarget, n: int) -> None:
    b = target.backend
    store = st.open_store(target.url)
    try:
        reg = Registry(store)
        tag = uuid.uuid4().hex[:8]
        ns = f"bench-{tag}" if target.shared else "default"
        n_raw = max(RAW_TXN_PUTS, n)

        ctx.log(f"{b}: raw puts ({n_raw:,} × {RAW_VALUE_BYTES} B, {RAW_TXN_PUTS}/txn)")
        raw = raw_put_rate(store, n_raw, f"/bench/raw/{tag}/")
        res.add("raw_puts", raw, "puts/s", f"raw txn puts ({RAW_VALUE_BYTES} B, {RAW_TXN_PUTS}/txn)",
                backend=b, baseline=True, puts=n_raw)

        reg.create(App(metadata={"name": "hello", "namespace": ns}, spec={"command": "/bin/true", "parameters": {"x": {"required": False}}}))
        ctx.log(f"{b}: constructing {n:,} Job objects")
        secs, jobs = timed(lambda: make_jobs(n, ns))
        res.add("construct", n / secs, "jobs/s", "Job(...) construction (client side)",
                backend=b)

        ctx.log(f"{b}: bulk_create {n:,} jobs in batches of {BULK_BATCH:,}")
        mgr = Job.objects.using(reg)
        batch_rates: list[float] = []
        in_store: list[int] = []
        total = 0.0
        cpu0 = time.process_time()
        keys_per_job = json_bytes = 0.0
        for start in range(0, n, BULK_BATCH):
            chunk = jobs[start : start + BULK_BATCH]
            secs, created = timed(lambda chunk=chunk: mgr.bulk_create(chunk))
            total += secs
            batch_rates.append(len(chunk) / secs)
            in_store.append(start + len(chunk))
            if start == 0:
                keys_per_job = statistics.mean(len(index_keys(o)) + 1 for o in created)
                json_bytes = statistics.mean(len(o.to_json()) for o in created)
            del created
        cpu = time.process_time() - cpu0
        del jobs
        rate = n / total
        # cpu_seconds: this process's CPU time (SQLite works in-process; etcd's server does not count)
        res.add("bulk_create", rate, "jobs/s", "Job.objects.bulk_create", backend=b,
                ratio_to="raw_puts", ratio_unit="jobs per raw put", target=TARGETS["bulk_create"][b],
                seconds=round(total, 3), cpu_seconds=round(cpu, 3))
        res.add("bulk_keys", rate * keys_per_job, "keys/s", f"bulk_create keys ({keys_per_job:.0f}/job)",
                backend=b, ratio_to="raw_puts", ratio_unit="of raw put rate")

        ctx.log(f"{b}: count and selector get")
        q_count = lambda: mgr.filter(namespace=ns, state="CREATED").count()  # noqa: E731
        count_ms, count_all, counted = median_ms(q_count, 5)
        if counted != n:
            res.note(f"{b}: count returned {counted:,}, expected {n:,}")
        res.add("count_ms", count_ms, "ms", 'filter(state="CREATED").count()', backend=b,
                target=TARGETS["count_ms"], result=counted)

        q_sel = lambda: list(mgr.filter(namespace=ns, selector=SELECTOR))  # noqa: E731
        sel_ms, sel_all, got = median_ms(q_sel, 3)
        expected = selector_matches(n)
        if len(got) != expected:
            res.note(f"{b}: selector get returned {len(got):,} jobs, expected {expected:,}")
        res.add("selector_ms", sel_ms, "ms", f'list(filter(selector="{SELECTOR}"))', backend=b,
                target=TARGETS["selector_ms"], result=len(got))
        del got

        series: dict[str, Any] = {
            "batch_jobs_in_store": in_store,
            "batch_jobs_per_s": batch_rates,
            "count_ms_runs": count_all,
            "selector_ms_runs": sel_all,
            "keys_per_job": keys_per_job,
            "job_json_bytes": json_bytes,
        }
        if target.path is not None:
            series["sqlite_file_bytes"] = sum(
                p.stat().st_size for p in target.path.parent.iterdir() if p.name.startswith(target.path.name)
            )
        res.series[b] = series
    finally:
        store.close()


def _plot(result: Result, fig: Any) -> None:
    backends = result.backends
    ax1, ax2, ax3 = fig.subplots(1, 3)
    colors = {"sqlite": "#3b75af", "etcd": "#e1812c"}
    width = 0.8 / max(1, len(backends))

    def bars(ax: Any, names: list[tuple[str, str]], unit: str) -> None:
        for j, b in enumerate(backends):
            xs = [i + (j - (len(backends) - 1) / 2) * width for i in range(len(names))]
            vals = [result.value(n, b) or 0 for n, _ in names]
            ax.bar(xs, vals, width, label=b, color=colors.get(b))
            for x, (n, _) in zip(xs, names, strict=True):
                f = result.find(n, b)
                if f is not None and f.target is not None:
                    ax.plot([x - width / 2, x + width / 2], [f.target.value] * 2, "r--", lw=1.5)
        ax.set_xticks(range(len(names)), [lbl for _, lbl in names], fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel(unit)
        ax.legend(fontsize=8)

    bars(ax1, [("raw_puts", "raw puts/s\n(baseline)"), ("bulk_keys", "bulk_create\nkeys/s"),
               ("bulk_create", "bulk_create\njobs/s"), ("construct", "Job()\njobs/s")], "per second (log)")
    ax1.set_title("write rates (red: target)")
    bars(ax2, [("count_ms", "count by state"), ("selector_ms", "selector get")], "ms (log)")
    ax2.set_title(f"queries over {result.inputs.get('jobs', 0):,} jobs")
    for b in backends:
        s = result.series.get(b, {})
        ax3.plot(s.get("batch_jobs_in_store", []), s.get("batch_jobs_per_s", []), "o-", label=b,
                 color=colors.get(b))
    ax3.set_xlabel("jobs in store after batch")
    ax3.set_ylabel("jobs/s of the batch")
    ax3.set_ylim(bottom=0)
    ax3.set_title(f"bulk_create per {BULK_BATCH:,}-job batch")
    ax3.legend(fontsize=8)
    fig.suptitle("bench store")


@scenario("store", help="bulk create / count / selector get over N jobs vs the raw store write rate",
          backends=("sqlite", "etcd"), default_backend="both", plot=_plot, in_default_run=False)
def run_store(ctx: Context) -> Result:
    n = ctx.pick(tiny=200, small=10_000, default=100_000, large=300_000)
    res = Result("store", inputs={
        "jobs": n,
        "raw_puts": max(RAW_TXN_PUTS, n),
        "raw_value_bytes": RAW_VALUE_BYTES,
        "raw_txn_puts": RAW_TXN_PUTS,
        "bulk_batch": BULK_BATCH,
        "selector": SELECTOR,
        "selector_expected": selector_matches(n),
        "labels": "experiment=foo (even i) | bar; run=str(i % 5 + 1)",
        "count_repeats": 5,
        "selector_repeats": 3,
        "stores": "fresh SQLite file in $TMPDIR / fresh single-member etcd (data on /dev/shm)",
    })
    ctx.per_backend(res, lambda target: _run_backend(ctx, res, target, n))
    return res
