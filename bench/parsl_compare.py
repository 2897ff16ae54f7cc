"""Scenario ``parsl`` (issue 5 #4): the same N trivial tasks through Parsl, a plain process pool,
and balsamctl, side by side in one run, against the spawn limit of the same run.

* **Parsl** (optional: the ``.[bench]`` extra; skipped with a note when absent) — a local
  ``HighThroughputExecutor`` (``LocalProvider``, one block, ``max_workers_per_node`` W), in a
  process of its own: N ``@bash_app``\\ s returning ``/bin/true``, then N ``@python_app``\\ s
  returning ``None``. Throughput is measured from the first submit to the last result, after a
  warm-up task (Parsl's start-up — interchange, workers — is reported on its own).
* **ProcessPoolExecutor** (W workers) — N tasks that each run ``subprocess.run(["/bin/true"])``
  (the like-for-like pool: one process launched per task), and N tasks that return ``None``.
* **balsamctl** — N ``/bin/true`` jobs through ``balsamctl up`` exactly as scenario ``e2e``
  (1 node agent, 64 CPUs, ``nodePackingCount`` 64), on each backend of the run.

Baseline: ``subprocess.Popen(["/bin/true"])`` + wait, sequential (scenario ``spawn``), measured
before and after (median). The goal (issue 5) is balsamctl above Parsl's bash-app rate.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from ._harness import Context, Result, StoreTarget, scenario
from ._up import site_parent, up_site, warm_up
from .e2e import CPUS, PACKING, run_true_jobs, spawn_rounds

WORKERS = 4

PARSL_SCRIPT = textwrap.dedent("""
    import json, sys, tempfile, time
    import parsl
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    n, workers = int(sys.argv[1]), int(sys.argv[2])
    run_dir = tempfile.mkdtemp(prefix="parsl-bench-")

    @parsl.bash_app
    def true_app():
        return "/bin/true"

    @parsl.python_app
    def noop():
        return None

    def timed(app):
        t0 = time.perf_counter()
        futs = [app() for _ in range(n)]
        submitted = time.perf_counter() - t0
        for f in futs:
            f.result()
        return {"elapsed_s": time.perf_counter() - t0, "submit_s": submitted}

    t0 = time.perf_counter()
    parsl.load(Config(
        executors=[HighThroughputExecutor(label="htex", max_workers_per_node=workers, address="127.0.0.1",
                                          provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1))],
        run_dir=run_dir, usage_tracking=0))
    true_app().result()
    noop().result()
    out = {"startup_s": time.perf_counter() - t0, "workers": workers, "version": parsl.__version__}
    out["bash"] = timed(true_app)
    out["python"] = timed(noop)
    print(json.dumps(out))
    parsl.dfk().cleanup()
""")


def parsl_version() -> str | None:
    try:
        import parsl
    except ImportError:
        return None
    return str(parsl.__version__)


def run_parsl(n: int, workers: int, timeout: float) -> dict[str, Any]:
    """Parsl in a process of its own (its interchange and workers are started from the
    environment's bin/, which must be on PATH)."""
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    with tempfile.TemporaryDirectory(prefix="parsl-bench-") as d:
        out = subprocess.run([sys.executable, "-c", PARSL_SCRIPT, str(n), str(workers)], capture_output=True,
                             text=True, timeout=timeout, cwd=d, env=dict(os.environ, PATH=path))
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["?"])[-1]
        raise RuntimeError(f"parsl run failed: {tail}")
    doc: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return doc


def _run_true() -> int:
    return subprocess.run(["/bin/true"]).returncode


def _noop(_: object = None) -> None:
    return None


def run_pool(n: int, workers: int) -> dict[str, float]:
    """N tasks through a ProcessPoolExecutor of ``workers`` (started and warmed first)."""
    out: dict[str, float] = {}
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        list(pool.map(_noop, range(workers * 2)))  # start the workers
        for label, fn in (("bash", _run_true), ("python", _noop)):
            t0 = time.perf_counter()
            futs = [pool.submit(fn) for _ in range(n)]
            for f in futs:
                f.result()
            out[label] = time.perf_counter() - t0
    return out


def _balsamctl(ctx: Context, target: StoreTarget, n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="balsam-parsl-", dir=site_parent()) as d, \
            up_site(Path(d) / "site", target, nodes=1, cpus=CPUS) as site:
        site.create_app("true", "/bin/true")
        warm_up(site, "true", resources={"nodePackingCount": PACKING})
        ctx.log(f"{target.backend}: {n:,} /bin/true jobs through balsamctl up")
        return run_true_jobs(site, n)


def _plot(result: Result, fig: Any) -> None:
    ax = fig.add_subplot(1, 1, 1)
    figs = [f for f in result.figures if f.unit == "tasks/s" and f.value is not None]
    labels = [f"{f.backend + ': ' if f.backend else ''}{f.label or f.name}" for f in figs]
    colors = ["#999999" if f.name == "spawn" else "#e1812c" if "parsl" in f.name else
              "#55a868" if "pool" in f.name else "#3b75af" for f in figs]
    ax.barh(range(len(figs)), [f.value for f in figs], color=colors)
    ax.set_yticks(range(len(figs)), labels, fontsize=8)
    ax.invert_yaxis()
    for i, f in enumerate(figs):
        ratio = f" ({f.ratio:.2f}× spawn)" if f.ratio is not None else ""
        ax.annotate(f"{f.value:,.0f}{ratio}", (f.value, i), va="center", fontsize=8)
    ax.set_xlabel("tasks / s (gray: spawn limit; orange: Parsl; green: process pool; blue: balsamctl)")
    ax.set_title(f"{result.inputs.get('tasks', 0):,} trivial tasks, same run")


@scenario("parsl", help="the same N trivial tasks through Parsl HTEX (bash/python apps), a ProcessPoolExecutor "
          "and balsamctl up, vs the spawn limit", backends=("sqlite", "etcd"), default_backend="sqlite", plot=_plot)
def run_parsl_compare(ctx: Context) -> Result:
    n = ctx.pick(tiny=20, small=1_000, default=3_000, large=20_000)
    version = parsl_version()
    res = Result("parsl", inputs={
        "site_dir": site_parent() or tempfile.gettempdir(),
        "tasks": n, "workers": WORKERS, "parsl": version,
        "parsl_config": f"HighThroughputExecutor(max_workers_per_node={WORKERS}, LocalProvider(1 block))",
        "parsl_bash_app": "/bin/true", "parsl_python_app": "return None",
        "pool": f"ProcessPoolExecutor({WORKERS}): subprocess.run(['/bin/true']) per task, and return None",
        "balsamctl": f"balsamctl up, 1 node agent, {CPUS} CPUs, nodePackingCount {PACKING}, /bin/true jobs",
        "baseline": "Popen(['/bin/true']) + wait, sequential: median of 3 rounds before and 3 after",
    })
    spawn_s = ctx.pick(tiny=0.1, small=0.5, default=1.0, large=1.0)
    before = spawn_rounds(3, spawn_s)
    parsl: dict[str, Any] | None = None
    if version is None:
        res.note("parsl is not installed (pip install -e '.[bench]'): Parsl rows skipped")
    else:
        ctx.log(f"parsl {version}: {n:,} bash apps, then {n:,} python apps (HTEX, {WORKERS} workers)")
        try:
            parsl = run_parsl(n, WORKERS, timeout=120 + n / 50)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            res.note(f"parsl run failed: {e}")
    ctx.log(f"ProcessPoolExecutor({WORKERS}): {n:,} /bin/true tasks, then {n:,} no-op tasks")
    pool = run_pool(n, WORKERS)
    ours: dict[str, dict[str, Any]] = {}
    ctx.per_backend(res, lambda t: ours.__setitem__(t.backend, _balsamctl(ctx, t, n)))
    after = spawn_rounds(3, spawn_s)
    res.add("spawn", statistics.median(before + after), "tasks/s", "spawn limit: Popen(/bin/true)+wait",
            baseline=True, before=before, after=after)
    if parsl is not None:
        res.add("parsl_bash", n / parsl["bash"]["elapsed_s"], "tasks/s", "Parsl HTEX bash apps (/bin/true)",
                ratio_to="spawn", ratio_unit="× spawn", submit_s=round(parsl["bash"]["submit_s"], 3))
        res.add("parsl_python", n / parsl["python"]["elapsed_s"], "tasks/s", "Parsl HTEX python apps (no-op)",
                ratio_to="spawn", ratio_unit="× spawn", submit_s=round(parsl["python"]["submit_s"], 3))
        res.add("parsl_startup", parsl["startup_s"], "s", "Parsl: load → first results (start-up)")
    res.add("pool_bash", n / pool["bash"], "tasks/s", f"ProcessPoolExecutor({WORKERS}): run /bin/true",
            ratio_to="spawn", ratio_unit="× spawn")
    res.add("pool_python", n / pool["python"], "tasks/s", f"ProcessPoolExecutor({WORKERS}): no-op",
            ratio_to="spawn", ratio_unit="× spawn")
    for b, r in ours.items():
        res.add("balsamctl", r["jobs_per_s"], "tasks/s", "balsamctl up: /bin/true jobs", backend=b,
                ratio_to="spawn", ratio_unit="× spawn", seconds=round(r["seconds"], 3))
        if parsl is not None:
            res.add("vs_parsl_bash", r["jobs_per_s"] / (n / parsl["bash"]["elapsed_s"]), "× Parsl bash",
                    "balsamctl ÷ Parsl bash apps (same run)", backend=b, target=">= 1")
    res.series = {"parsl": parsl, "pool_s": pool, "balsamctl": ours, "spawn_rounds": {"before": before,
                                                                                      "after": after}}
    return res
