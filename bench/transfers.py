"""Scenario ``transfers`` (issue 8): N jobs with one ``file://`` stage-in each.

Per backend, on a fresh store and a fresh site directory:

1. baseline — the same N copies done by a plain ``shutil.copy`` loop (source files written
   beforehand, so both runs read them from the page cache);
2. the jobs are created with ``Job.objects.bulk_create`` while a controller manager runs the
   dependency, hook and transfer reconcilers (default batch size and gathering window); the
   clock runs from the first create to the moment every job has passed STAGED_IN (it is then
   PREPROCESSED: the App has no preprocess hook);
3. how many TransferTasks were made (batching: a handful, not N), and jobs/s end to end;
4. for context, the same jobs without a stage-in slot (the control plane's own cost).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import store as st
from apis import App, Job, JobState, Registry, Site, TransferTask
from apis._client import BULK_BATCH

from ._harness import Context, Result, StoreTarget, scenario

FILE_BYTES = 4096


def _plot(result: Result, fig: Any) -> None:
    ax1, ax2 = fig.subplots(1, 2)
    backends = result.backends or [None]
    for b in backends:
        series = result.series.get(f"{b}.progress", [])
        if series:
            ax1.plot([p[0] for p in series], [p[1] for p in series], label=f"{b}: jobs past STAGED_IN")
    ax1.set_xlabel("seconds since the first create")
    ax1.set_ylabel("jobs")
    ax1.set_title("apply → STAGED_IN")
    ax1.legend(fontsize=8)
    labels, vals, colors = [], [], []
    for b in backends:
        for name, color in (("copy_loop_s", "#999999"), ("apply_to_staged_in_s", "#3b75af")):
            v = result.value(name, b)
            if v is not None:
                labels.append(f"{b}: {name}")
                vals.append(v)
                colors.append(color)
    ax2.barh(range(len(vals)), vals, color=colors)
    ax2.set_yticks(range(len(vals)), labels, fontsize=8)
    ax2.invert_yaxis()
    ax2.set_xlabel("seconds")
    ax2.set_title("the same copies: shutil.copy loop vs balsamctl")


def copy_loop(sources: list[Path], dest: Path) -> float:
    dest.mkdir(parents=True)
    t0 = time.perf_counter()
    for i, src in enumerate(sources):
        shutil.copy(src, dest / f"in{i}.dat")
    return time.perf_counter() - t0


def run_system(ctx: Context, target: StoreTarget, root: Path, sources: list[Path],
               transfers: bool = True) -> dict[str, Any]:
    """Create one job per source and time until all are PREPROCESSED. ``transfers=False``: the
    same jobs without a stage-in slot (CREATED → PREPROCESSED in one write), for comparison."""
    from controllers import ControllerManager
    from controllers.dependency import DependencyReconciler
    from controllers.hook import HookReconciler
    from controllers.hooks import NoHooks
    from controllers.transfer import TransferBatcher, transfer_reconcilers

    n = len(sources)
    ns = f"{'transfers' if transfers else 'plain'}-{uuid.uuid4().hex[:8]}"  # each run its own namespace
    site_path = root / ("site" if transfers else "site-plain")
    (site_path / "data").mkdir(parents=True)
    store = st.open_store(target.url)
    registry = Registry(store)
    registry.create(Site(metadata={"name": "bench", "namespace": ns},  # type: ignore[arg-type]
                         spec={"path": str(site_path), "transferLocations": {"remote": "file://"}}))
    registry.create(App(metadata={"name": "reader", "namespace": ns}, spec={  # type: ignore[arg-type]
        "command": "cat in.dat",
        "transfers": {"inp": {"direction": "in", "localPath": "in.dat"}} if transfers else {}}))
    hooks = NoHooks()
    reconcilers = [DependencyReconciler(hooks), HookReconciler(hooks), *transfer_reconcilers(hooks)]
    batcher = next(r for r in reconcilers if isinstance(r, TransferBatcher))
    mgr = ControllerManager(registry, ns, lease_ttl=10, reconcilers=reconcilers)
    stop = threading.Event()
    thread = threading.Thread(target=mgr.run, args=(stop,), daemon=True)
    thread.start()
    if not mgr.leading.wait(30):
        raise RuntimeError("the controller manager did not start leading")
    jobs = [Job(metadata={"name": f"t{i}", "namespace": ns},  # type: ignore[arg-type]
                spec={"app": "reader", "workdir": f"w/{i}", "transfers": {"inp": f"remote:{src}"} if transfers else {}})
            for i, src in enumerate(sources)]
    progress: list[tuple[float, int]] = []
    try:
        t0 = time.perf_counter()
        for i in range(0, n, BULK_BATCH):
            registry.create_many(jobs[i: i + BULK_BATCH])
        t_create = time.perf_counter() - t0
        deadline = t0 + max(120.0, n / 50)
        last = -1
        while True:
            done = registry.index_count(Job, "state", JobState.PREPROCESSED.value, ns)
            now = time.perf_counter()
            if done != last:
                progress.append((round(now - t0, 3), done))
                last = done
            if done >= n:
                break
            failed = registry.index_count(Job, "state", JobState.FAILED.value, ns)
            if failed or now > deadline:
                raise RuntimeError(f"{done}/{n} jobs staged in, {failed} failed after {now - t0:.1f}s")
            time.sleep(0.02)
        t_all = time.perf_counter() - t0
    finally:
        stop.set()
        thread.join(30)
    tasks = registry.list(TransferTask, ns)[0]
    for i in [0, n // 2, n - 1] if transfers else []:
        got = (site_path / "data" / "w" / str(i) / "in.dat").read_bytes()
        if got != sources[i].read_bytes():
            raise RuntimeError(f"job t{i}'s copy differs from its source")
    store.close()
    return {"t_create": t_create, "t_all": t_all, "tasks": len(tasks), "made": batcher.tasks_created,
            "items_per_task": sorted(len(t.spec.items) for t in tasks), "progress": progress,
            "batch_size": batcher.batch_size, "window": batcher.window, "max_wait": batcher.max_wait}


@scenario("transfers", help="N jobs with one file:// stage-in: TransferTasks made, apply → all STAGED_IN, "
                            "vs a shutil.copy loop", backends=("sqlite", "etcd"), default_backend="sqlite",
          plot=_plot, in_default_run=False)
def run_transfers(ctx: Context) -> Result:
    n = ctx.pick(tiny=200, small=2000, default=10000, large=50000)
    res = Result("transfers", inputs={"jobs": n, "file_bytes": FILE_BYTES, "stage_ins_per_job": 1,
                                      "method": "bulk_create with a controller manager running (dependency, hook, "
                                                "transfer); clock from the first create until every job is "
                                                "PREPROCESSED; baseline: shutil.copy of the same files in a loop"})

    def one(target: StoreTarget) -> None:
        b = target.backend
        root = Path(tempfile.mkdtemp(prefix="balsam-bench-transfers-"))
        try:
            src_dir = root / "remote"
            src_dir.mkdir()
            payload = bytes(range(256)) * (FILE_BYTES // 256)
            sources = []
            for i in range(n):
                p = src_dir / f"in{i}.dat"
                p.write_bytes(payload)
                sources.append(p)
            t_base = copy_loop(sources, root / "baseline")
            ctx.log(f"{b}: shutil.copy loop of {n} files: {t_base:.2f}s")
            plain = run_system(ctx, target, root, sources, transfers=False)
            ctx.log(f"{b}: the same {n} jobs without a stage-in reach PREPROCESSED in {plain['t_all']:.2f}s")
            out = run_system(ctx, target, root, sources)
            ctx.log(f"{b}: {n} jobs staged in {out['t_all']:.2f}s with {out['tasks']} TransferTasks")
            res.add("copy_loop_s", t_base, "s", f"shutil.copy loop, {n} files", backend=b, baseline=True)
            res.add("apply_to_staged_in_s", out["t_all"], "s", "create → every job past STAGED_IN", backend=b,
                    ratio_to="copy_loop_s", ratio_unit="× the copy loop")
            res.add("no_transfer_s", plain["t_all"], "s", "the same jobs without a stage-in → PREPROCESSED",
                    backend=b)
            res.add("create_s", out["t_create"], "s", "bulk_create of the jobs (inside the above)", backend=b)
            res.add("transfer_tasks", out["tasks"], "tasks", f"TransferTasks for {n} jobs", backend=b,
                    target=f"<= {max(1, -(-n // out['batch_size'])) + 2}", items_per_task=out["items_per_task"])
            res.add("jobs_per_s", n / out["t_all"], "jobs/s", "staged-in jobs per second, end to end", backend=b)
            res.series[f"{b}.progress"] = out["progress"]
            res.inputs.update(batch_size=out["batch_size"], window_s=out["window"], max_wait_s=out["max_wait"])
        finally:
            shutil.rmtree(root, ignore_errors=True)

    ctx.per_backend(res, one)
    return res
