"""Scenario ``scale`` (issue 5 #5): does a site stay usable at 10^4, 10^5 and 10^6 jobs?

Per backend (SQLite up to 10^6, etcd up to 10^5 at the default size), one fresh store grows
through the sizes; at each size:

* **bulk create** — the jobs added to reach the size, by ``Registry.create_many`` in batches of
  ``BULK_BATCH`` (10k: what ``Job.objects.bulk_create`` does), built batch by batch so the
  bench never holds a million objects. jobs/s, ÷ the raw ``Store.txn`` put rate of the same
  store measured first (1 KB values, 1,000 puts per txn). 90% of the jobs are JOB_FINISHED,
  10% RUNNING (``(i // 10) % 10 == 0``, no placement, so no controller acts on them), each with
  the history a job that lived that far has (8 and 4 entries); labels
  ``experiment`` = foo | bar (i even | odd) and ``run`` = i % 5 + 1.
* **count** — ``Job.objects.filter(state="JOB_FINISHED").count()`` (90% of the jobs: the
  biggest state), median of 5.
* **selector get** — ``balsamctl get jobs -l experiment=foo,run=5 --state RUNNING -o name``
  as a process (wall time, mean of 2; it prints 1% of the jobs), next to the same query in
  this process and to the CLI's own start-up (the same command with a selector nothing
  matches: the baseline a command cannot beat).
* **informer start-up** — a process that lists every job into the controller manager's Job
  informer (``JobInformer`` with its indexes: live jobs decoded, terminal ones only peeked at
  and left out) and reports the seconds and its RSS.
* **controller manager** — ``python -m controllers`` on the store: seconds until it is idle
  (leader, informers synced, nothing to do) and its RSS (VmRSS) and peak RSS (VmHWM) then.

The Job informer keeps live jobs only (controllers/_jobcache.py), so these processes are run
for real at every size. A guard stays: before starting one, the bench projects its RSS from
the largest size measured; only if that exceeds ``MEMORY_SHARE`` of the machine's available
memory is the process skipped and the projection reported (marked ``projected``) instead.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import store as st
from apis import HAPPY_PATH, App, Job, JobState, JobStatus, ObjectMeta, Registry, advance
from apis._client import BULK_BATCH

from ._harness import Context, Result, StoreTarget, median_ms, scenario, timed
from ._up import CLI, bench_env, proc_cpu, proc_rss_mib
from .store import raw_put_rate

SELECTOR = "experiment=foo,run=5"
TARGETS = {"count_ms": "<= 200", "selector_cli_ms": "<= 1000", "cm_rss_mib": "<= 2048"}
CLI_RUNS = 2  # each CLI figure is the median (mean) of this many runs
IDLE_CPU = 0.10  # a controller manager using less than this share of a core ...
IDLE_FOR = 2.0  # ... for this many seconds is idle (synced, nothing to do)
IDLE_GROWTH = (4.0, 0.01)  # ... if its RSS grew by less than max(MiB, share of its RSS) meanwhile
MEMORY_SHARE = 0.5  # never start a process projected to need more than this share of MemAvailable

INFORMER_SCRIPT = """
import json, sys, time
t0 = time.perf_counter()
import store as st
from apis import Job, Registry
from controllers._jobcache import JobInformer
from controllers._manager import job_indexers
from store.process import tune_gc
tune_gc("manager")  # as the controller manager's main does
t_import = time.perf_counter() - t0
def rss():
    out = {}
    for line in open("/proc/self/status"):
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out
base = rss()
reg = Registry(st.open_store(sys.argv[1]))
inf = JobInformer(reg, sys.argv[2], job_indexers())
t1 = time.perf_counter()
inf.start()
secs = time.perf_counter() - t1
mem = rss()
print(json.dumps({"seconds": secs, "objects": len(inf), "rss_mib": mem["VmRSS"], "peak_mib": mem["VmHWM"],
                  "base_rss_mib": base["VmRSS"], "import_s": t_import}))
inf.stop()
"""


def mem_available_mib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("inf")


def _lived(state: JobState) -> JobStatus:
    """The status of a job that went the happy path up to ``state`` (history included, as a
    real job's: 4 entries when RUNNING, 8 when JOB_FINISHED), without placement."""
    j = Job(metadata=ObjectMeta(name="x"), spec={"app": "hello", "workdir": "x"})  # type: ignore[arg-type]
    path = [s for s in HAPPY_PATH[1 : HAPPY_PATH.index(state) + 1] if s is not JobState.AWAITING_PARENTS]
    advance(j, path[:3], "no parents")
    for s in path[3:]:
        advance(j, [s], f"to {s.value}")
    if state is JobState.JOB_FINISHED:
        j.status.return_code = 0
    return j.status


def job_batch(start: int, stop: int, ns: str) -> list[Job]:
    finished, running = _lived(JobState.JOB_FINISHED), _lived(JobState.RUNNING)
    out = []
    for i in range(start, stop):
        j = Job(metadata=ObjectMeta(name=f"s{i:07d}", namespace=ns,
                                    labels={"experiment": "foo" if i % 2 == 0 else "bar", "run": str(i % 5 + 1)}),
                spec={"app": "hello", "workdir": f"scale/{i // 1000}/{i}",  # type: ignore[arg-type]
                      "parameters": {"x": str(i)}})
        j.status = running if (i // 10) % 10 == 0 else finished  # shared: create_many copies before stamping
        out.append(j)
    return out


def expected_matches(n: int) -> int:
    return sum(1 for i in range(n) if i % 2 == 0 and i % 5 == 4 and (i // 10) % 10 == 0)


def cli(url: str, ns: str, *args: str, timeout: float = 300) -> tuple[float, subprocess.CompletedProcess[str]]:
    argv = [sys.executable, "-c", CLI, *args, "--store", url, "-n", ns]
    t0 = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=bench_env(),
                         cwd=tempfile.gettempdir())
    return time.perf_counter() - t0, out


def informer_startup(url: str, ns: str, timeout: float = 1800) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", INFORMER_SCRIPT, url, ns], capture_output=True, text=True,
                         timeout=timeout, env=bench_env(), cwd=tempfile.gettempdir())
    if out.returncode != 0:
        raise RuntimeError(f"informer process failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    doc: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return doc


def controller_manager(url: str, ns: str, timeout: float = 1800) -> dict[str, Any]:
    """Start ``python -m controllers``; once it leads, has used under ``IDLE_CPU`` of a core for
    ``IDLE_FOR`` seconds (its store poller keeps ticking, so CPU never stops entirely) and its RSS
    grew by less than ``IDLE_GROWTH`` (4 MiB or 1%) meanwhile, it is idle: report the seconds until then
    and its memory. The RSS condition matters on a loaded machine: a manager whose first list
    waits on the disk (a cold 10^6-job file) or on the CPU uses little of a core for seconds
    while its cache is still filling; it was once taken for idle there (740 MiB "idle" at 10^6,
    where every complete list of that store measures 1.10-1.11 GB)."""
    proc = subprocess.Popen([sys.executable, "-m", "controllers", "--store", url, "-n", ns, "--log-level",
                             "WARNING"], env=bench_env(), cwd=tempfile.gettempdir(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    store = st.open_store(url)
    t0 = time.perf_counter()
    try:
        samples: list[tuple[float, float, float]] = []  # (time, cpu seconds, rss MiB)
        leading = False
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"controller manager exited with {proc.returncode}: {err[-500:]}")
            leading = leading or store.get(f"/leases/controller-manager/{ns}") is not None
            now = time.perf_counter()
            samples.append((now, proc_cpu(proc.pid)["self"], proc_rss_mib(proc.pid)["rss"]))
            old = [s for s in samples if s[0] <= now - IDLE_FOR]
            if leading and old:
                t_old, cpu_old, rss_old = old[-1]
                rss_now = samples[-1][2]
                if (samples[-1][1] - cpu_old) / (now - t_old) < IDLE_CPU and \
                        rss_now - rss_old < max(IDLE_GROWTH[0], IDLE_GROWTH[1] * rss_now):
                    mem = proc_rss_mib(proc.pid)
                    return {"seconds": t_old - t0, "rss_mib": mem["rss"], "peak_mib": mem["peak"],
                            "cpu_s": samples[-1][1]}
            time.sleep(0.1)
        raise RuntimeError(f"controller manager not idle after {timeout:.0f}s")
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        store.close()


def _run_backend(ctx: Context, res: Result, target: StoreTarget, sizes: list[int]) -> dict[str, Any]:
    b = target.backend
    store = st.open_store(target.url)
    rows: list[dict[str, Any]] = []
    try:
        reg = Registry(store)
        ns = f"scale-{uuid.uuid4().hex[:8]}" if target.shared else "default"
        ctx.log(f"{b}: raw puts (20,000 × 1 KB, 1,000/txn)")
        raw = raw_put_rate(store, 20_000, f"/bench/raw/{uuid.uuid4().hex[:8]}/")
        res.add("raw_puts", raw, "puts/s", "raw txn puts (1 KB, 1,000/txn)", backend=b, baseline=True)
        reg.create(App(metadata=ObjectMeta(name="hello", namespace=ns), spec={"command": "/bin/true", "parameters": {"x": {"required": False}}}))  # type: ignore[arg-type]
        mgr = Job.objects.using(reg)
        have = 0
        per_job_mib: dict[str, float] = {}
        for size in sizes:
            ctx.log(f"{b}: growing to {size:,} jobs")
            secs = 0.0
            for start in range(have, size, BULK_BATCH):
                batch = job_batch(start, min(size, start + BULK_BATCH), ns)
                dt, _ = timed(lambda batch=batch: reg.create_many(batch))
                secs += dt
            create_rate = (size - have) / secs
            have = size
            count_ms, _, counted = median_ms(lambda: mgr.filter(namespace=ns, state="JOB_FINISHED").count(), 5)
            q_ms, _, got = median_ms(lambda: [j.name for j in mgr.filter(namespace=ns, selector=SELECTOR,
                                                                          state="RUNNING")], 3)
            want = expected_matches(size)
            cli_runs, base_runs, printed = [], [], -1
            for _ in range(CLI_RUNS):
                dt, out = cli(target.url, ns, "get", "jobs", "-l", SELECTOR, "--state", "RUNNING", "-o", "name")
                if out.returncode != 0:
                    raise RuntimeError(f"balsamctl get failed: {out.stderr.strip()[-300:]}")
                cli_runs.append(dt * 1000)
                printed = len(out.stdout.splitlines())
                dt, _ = cli(target.url, ns, "get", "jobs", "-l", "nosuch=label", "--state", "RUNNING", "-o", "name")
                base_runs.append(dt * 1000)
            row: dict[str, Any] = {
                "jobs": size, "create_per_s": create_rate, "count_ms": count_ms, "count_result": counted,
                "selector_query_ms": q_ms, "selector_cli_ms": statistics.median(cli_runs),
                "cli_startup_ms": statistics.median(base_runs), "selector_matches": printed,
                "selector_expected": want,
            }
            if printed != want or len(got) != want:
                res.note(f"{b} at {size:,}: the selector get printed {printed:,} names (query {len(got):,}), "
                         f"expected {want:,}")
            ctx.log(f"{b} {size:,}: create {create_rate:,.0f}/s, count {count_ms:.1f} ms, selector get "
                    f"{row['selector_cli_ms']:.0f} ms (CLI start-up {row['cli_startup_ms']:.0f} ms)")
            # Processes that hold every job: run them only when they fit comfortably.
            for what, fn in (("informer", informer_startup), ("cm", controller_manager)):
                slope = per_job_mib.get(what)
                projected = None if slope is None else slope * size + 60
                avail = mem_available_mib()
                if projected is not None and projected > MEMORY_SHARE * avail:
                    row[f"{what}_projected_rss_mib"] = projected
                    res.note(f"{b} at {size:,}: {what} process skipped: projected RSS {projected:,.0f} MiB "
                             f"(from {slope * 1024 * 1024:,.0f} B/job measured at the previous size) exceeds "
                             f"{MEMORY_SHARE:.0%} of the {avail:,.0f} MiB available")
                    continue
                doc = fn(target.url, ns)
                row[f"{what}_seconds"] = doc["seconds"]
                row[f"{what}_rss_mib"] = doc["rss_mib"]
                row[f"{what}_peak_mib"] = doc["peak_mib"]
                per_job_mib[what] = max(doc["peak_mib"], doc["rss_mib"]) / size
                ctx.log(f"{b} {size:,}: {what} {doc['seconds']:.2f}s, RSS {doc['rss_mib']:,.0f} MiB "
                        f"(peak {doc['peak_mib']:,.0f})")
            rows.append(row)
    finally:
        store.close()
    return {"rows": rows}


def _record(res: Result, b: str, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        n = row["jobs"]
        tag = f"{n:.0e}".replace("+0", "").replace("+", "")  # 1e4, 1e5, 1e6
        res.add(f"create_{tag}", row["create_per_s"], "jobs/s", f"bulk create → {n:,}", backend=b,
                ratio_to="raw_puts", ratio_unit="jobs per raw put")
        res.add(f"count_ms_{tag}", row["count_ms"], "ms", f'count(state=JOB_FINISHED) at {n:,}', backend=b,
                target=TARGETS["count_ms"], result=row["count_result"])
        res.add(f"cli_startup_ms_{tag}", row["cli_startup_ms"], "ms", f"balsamctl get, nothing matches, at {n:,}",
                backend=b, baseline=True)
        res.add(f"selector_cli_ms_{tag}", row["selector_cli_ms"], "ms",
                f"get jobs -l {SELECTOR} --state RUNNING -o name at {n:,}", backend=b,
                target=TARGETS["selector_cli_ms"], ratio_to=f"cli_startup_ms_{tag}", ratio_unit="× CLI start-up",
                printed=row["selector_matches"])
        res.add(f"selector_query_ms_{tag}", row["selector_query_ms"], "ms", f"the same query in-process at {n:,}",
                backend=b)
        for what, label in (("informer", "informer list + cache"), ("cm", "controller manager")):
            if f"{what}_seconds" in row:
                res.add(f"{what}_s_{tag}", row[f"{what}_seconds"], "s", f"{label}: start-up at {n:,}", backend=b)
                res.add(f"{what}_rss_mib_{tag}", row[f"{what}_rss_mib"], "MiB", f"{label}: RSS at {n:,}", backend=b,
                        target=TARGETS["cm_rss_mib"] if what == "cm" else None, peak_mib=row[f"{what}_peak_mib"])
            elif f"{what}_projected_rss_mib" in row:
                res.add(f"{what}_rss_mib_{tag}", row[f"{what}_projected_rss_mib"], "MiB",
                        f"{label}: RSS at {n:,} (projected, not run)", backend=b,
                        target=TARGETS["cm_rss_mib"] if what == "cm" else None, projected=True)


def _plot(result: Result, fig: Any) -> None:
    axes = fig.subplots(2, 2)
    colors = {"sqlite": "#3b75af", "etcd": "#e1812c"}
    panels = [
        (axes[0][0], [("count", "count_ms")], "count(state) ms", 200),
        (axes[0][1], [("selector", "selector_cli_ms"), ("query", "selector_query_ms"), ("start-up", "cli_startup_ms")],
         "selector get ms", 1000),
        (axes[1][0], [("cm", "cm_rss_mib"), ("informer", "informer_rss_mib")], "RSS MiB", 2048),
        (axes[1][1], [("create", "create_per_s")], "bulk create jobs/s", None),
    ]
    for ax, keys, title, goal in panels:
        for b in result.backends:
            rows = result.series.get(b, {}).get("rows", [])
            for style, (label, key) in zip(("o-", "s--", "^:"), keys, strict=False):
                pts = [(r["jobs"], r[key]) for r in rows if r.get(key) is not None]
                proj = [(r["jobs"], r[key.replace("_rss_mib", "_projected_rss_mib")]) for r in rows
                        if key.endswith("_rss_mib") and r.get(key.replace("_rss_mib", "_projected_rss_mib"))]
                if pts:
                    ax.plot(*zip(*pts, strict=True), style, color=colors.get(b), label=f"{b} {label}")
                if proj:
                    ax.plot(*zip(*proj, strict=True), "x", color=colors.get(b), ms=9, label=f"{b} {label} (projected)")
        if goal:
            ax.axhline(goal, color="red", ls="--", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("jobs in the store")
        ax.set_title(title + (" (red: goal)" if goal else ""), fontsize=9)
        ax.legend(fontsize=6)
    fig.suptitle("bench scale")


@scenario("scale", help="10^4..10^6 jobs: bulk create, count, selector get, informer start-up, controller RSS",
          backends=("sqlite", "etcd"), default_backend="both", plot=_plot)
def run_scale(ctx: Context) -> Result:
    sizes = {
        "sqlite": ctx.pick(tiny=[500, 2_000], small=[10_000, 30_000], default=[10_000, 100_000, 1_000_000],
                           large=[10_000, 100_000, 1_000_000]),
        "etcd": ctx.pick(tiny=[500, 2_000], small=[10_000], default=[10_000, 100_000],
                         large=[10_000, 100_000, 300_000]),
    }
    res = Result("scale", inputs={
        "sizes": sizes, "selector": SELECTOR, "states": "90% JOB_FINISHED, 10% RUNNING (no placement)",
        "bulk_batch": BULK_BATCH, "count": "filter(state=JOB_FINISHED).count(), median of 5",
        "selector_get": f"balsamctl get jobs -l experiment=foo,run=5 --state RUNNING -o name (process wall "
                        f"time, median of {CLI_RUNS}); baseline: the same with a selector nothing matches",
        "memory_share": MEMORY_SHARE, "mem_available_mib_at_start": round(mem_available_mib()),
    })
    out: dict[str, Any] = {}
    ctx.per_backend(res, lambda t: out.__setitem__(t.backend, _run_backend(ctx, res, t, sizes[t.backend])))
    for b, d in out.items():
        _record(res, b, d["rows"])
        res.series[b] = d
    return res
