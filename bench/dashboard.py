"""Scenario ``dashboard`` (issue 18): ``balsamctl report`` over N recorded jobs, the dashboard's
first paint in a real headless chromium with N jobs stored, and how soon a state change shows
in the open page — each against a floor measured in the same run.

1. A site (``balsamctl init``) filled with a recorded campaign of N jobs (bench/_campaign.py).
2. Baseline: reading every stored Job's bytes (``Store.range`` pages, nothing decoded), s.
   ``report``: ``balsamctl report -o json`` as a process (what a user runs), s, median of R.
3. Dashboard: ``balsamctl dashboard`` started (its start-up, listing N jobs, for context);
   baseline: first-contentful-paint of the server's plain-text ``/healthz`` in the same
   browser (the browser's own floor); the dashboard page's first-contentful-paint, ms, and
   the time until its charts are drawn (``window.__rendered``), median of 3 loads.
4. Change → page: a RUNNING job is moved to JOB_FINISHED through the registry (as an agent
   writes it); the time from before the write to the page's render of that revision (the
   page stamps ``performance.timeOrigin + now()``), median of K; baseline: the same write
   seen by a store watch in this process.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import store as st
from apis import Job, JobState, Registry, advance
from apis._registry import kind_prefix
from kubectl_like.dashboard_testing import browser_available, headless_chrome, running_dashboard

from ._campaign import fill_campaign
from ._harness import Context, Result, Skip, scenario, timed

TARGETS = {"report_s": "<= 5", "first_paint_ms": "<= 1000", "change_ms": "<= 1000"}
_FINISH = (JobState.RUN_DONE, JobState.POSTPROCESSED, JobState.STAGED_OUT, JobState.JOB_FINISHED)


def _balsamctl() -> str:
    exe = Path(sys.executable).parent / "balsamctl"
    return str(exe) if exe.exists() else "balsamctl"


def _env(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALSAM_")}
    env["BALSAM_SITE_PATH"] = str(site)
    return env


def _paint_ms(driver: Any, wait_s: float = 5.0) -> float | None:
    """The page's first-contentful-paint (ms from navigation start), once chromium has
    recorded it (polled: the entry appears after the frame is presented)."""
    deadline = time.monotonic() + wait_s
    while True:
        v = driver.execute_script(
            "const p = performance.getEntriesByName('first-contentful-paint'); return p.length ? p[0].startTime : null;")
        if v is not None or time.monotonic() > deadline:
            return None if v is None else float(v)
        time.sleep(0.02)


def _finish(reg: Registry, name: str) -> int:
    old = reg.get(Job, name)
    new = advance(old.status_copy(), _FINISH, "finished (bench)")
    return int(reg.update(old, new).metadata.resource_version or 0)


@scenario("dashboard", help="report over N jobs; dashboard first paint and change-to-page latency in chromium",
          plot=None, in_default_run=False)
def run_dashboard(ctx: Context) -> Result:
    n = ctx.pick(tiny=300, small=10_000, default=100_000, large=300_000)
    repeats = ctx.pick(tiny=2, default=3)
    changes = ctx.pick(tiny=3, default=7)
    res = Result("dashboard", inputs={
        "jobs": n, "report_repeats": repeats, "page_loads": 3, "changes": changes,
        "campaign": "bench/_campaign.py: 3 apps, 92% finished, 3% failed, 3% running, 2% waiting, 32 nodes",
        "browser": "Debian chromium + chromedriver, selenium, --headless=new",
    })
    if not browser_available():
        raise Skip("chromium / chromium-driver not installed (scripts/install)")
    root = Path(tempfile.mkdtemp(prefix="balsam-bench-dash-"))
    try:
        site = root / "site"
        subprocess.run([_balsamctl(), "init", str(site)], check=True, capture_output=True, timeout=120)
        store = st.open_store(f"sqlite:///{site}/store.db")
        reg = Registry(store)
        ctx.log(f"filling {n:,} recorded jobs")
        secs, _ = timed(lambda: fill_campaign(reg, n))
        res.add("fill", n / secs, "jobs/s", "recorded campaign written (bulk_create)")

        def raw_read() -> int:
            total, after = 0, None
            while True:
                r = store.range(kind_prefix(Job, "default"), limit=5000, start_after=after)
                total += sum(len(kv.value) for kv in r.kvs)
                if not r.more:
                    return total
                after = r.continue_key
        raw_s, nbytes = timed(raw_read)
        res.add("raw_read", raw_s, "s", f"read every Job's bytes ({nbytes / 2**20:.0f} MiB), no decode",
                baseline=True)

        ctx.log("balsamctl report -o json")
        runs, cpus = [], []
        for _ in range(repeats):
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            s, p = timed(lambda: subprocess.run([_balsamctl(), "report", "-o", "json", "--out", str(root / "r.json")],
                                                env=_env(site), capture_output=True, text=True, timeout=600))
            if p.returncode != 0:
                raise RuntimeError(f"report failed: {p.stderr}")
            runs.append(s)
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime)
        res.add("report_s", statistics.median(runs), "s", "balsamctl report -o json (process)",
                ratio_to="raw_read", ratio_unit="× the raw read", target=TARGETS["report_s"], runs=runs)
        res.add("report_cpu_s", statistics.median(cpus), "s", "its CPU time (user + sys): what load does not inflate",
                target=TARGETS["report_s"], runs=cpus)

        ctx.log("dashboard: start, first paint, change -> page")
        t0 = time.perf_counter()
        with running_dashboard(site, timeout=600) as dash, headless_chrome() as driver:
            res.add("startup_s", time.perf_counter() - t0, "s", f"dashboard start-up (lists {n:,} jobs)")
            driver.get(dash.base + "healthz")
            floor = _paint_ms(driver)
            floors, paints, drawn = [], [], []
            for _ in range(3):
                driver.get(dash.base + "healthz")
                floors.append(_paint_ms(driver) or 0.0)
                driver.get(dash.base)
                drawn.append(float(driver.execute_script(
                    "return window.__rendered.at - performance.timeOrigin")))
                paint = _paint_ms(driver)
                if paint is None:  # never recorded: count the page as painted when it was drawn
                    res.note("a dashboard load had no first-contentful-paint entry: its draw time counted")
                paints.append(drawn[-1] if paint is None else paint)
            res.add("healthz_paint_ms", statistics.median(floors), "ms", "first paint of plain-text /healthz",
                    baseline=True, warmup=floor)
            res.add("first_paint_ms", statistics.median(paints), "ms", f"dashboard first paint, {n:,} jobs stored",
                    ratio_to="healthz_paint_ms", ratio_unit="× the plain page", target=TARGETS["first_paint_ms"],
                    runs=paints)
            res.add("rendered_ms", statistics.median(drawn), "ms", "until counts, charts and tables are drawn",
                    runs=drawn)

            running = reg.index_names(Job, "state", JobState.RUNNING.value)[:changes]
            watch_ms, page_ms = [], []
            with store.watch(kind_prefix(Job, "default")) as w:
                for name in running:
                    w.poll(timeout=0)
                    before = time.time()
                    rev = _finish(reg, name)
                    while True:
                        evs = w.poll(timeout=10)
                        if any(e.revision >= rev for e in evs):
                            watch_ms.append((time.time() - before) * 1000)
                            break
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline:
                        r = driver.execute_script("return window.__rendered")
                        if r and r["revision"] >= rev:
                            page_ms.append(r["at"] - before * 1000)
                            break
                        time.sleep(0.005)
                    else:
                        raise RuntimeError(f"the page never showed revision {rev}")
                    time.sleep(0.3)  # let the page's push interval pass: each change is its own push
            res.add("watch_ms", statistics.median(watch_ms), "ms", "write -> store watch event (this process)",
                    baseline=True, runs=watch_ms)
            res.add("change_ms", statistics.median(page_ms), "ms", "write -> rendered in the open page",
                    ratio_to="watch_ms", ratio_unit="× the watch", target=TARGETS["change_ms"], runs=page_ms,
                    worst=max(page_ms))
        store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return res
