"""Scenario ``dag`` (issue 4 "Measure", issue 5 #3): how fast a DAG moves through ``balsamctl up``.

Per backend, on a fresh store and site run by ``balsamctl up --nodes 1 --cpus 64``:

* **Chain** — N jobs, each the only parent of the next. Every job runs
  ``bash -c 'echo $EPOCHREALTIME > start; echo $EPOCHREALTIME > end'`` (exec'ed directly: a
  plain word list), so each job stamps its own first and last moment with the machine's clock.
  Hop latency = child's ``start`` − parent's ``end``: parent exit → agent (RUN_DONE … JOB_FINISHED
  in one write when the App has no postprocess hook and nothing is staged out) → placement
  (child → READY … PREPROCESSED and bound, one write: issue 19) → agent → child process; the
  p50 of each of the three parts is reported too, from the jobs' history times. p50/p99/max over the N−1 hops. (The stamps are
  taken inside bash, so a hop also holds bash's exit and the next bash's start-up: ~1 ms
  more than the system's own latency.)
* **Fan-out / fan-in** — one root, M−2 children of the root (``nodePackingCount`` 64), one
  sink whose parents are all the children. Fan-out: every child's ``start`` − the root's
  ``end`` (first, p50, p99, last); fan-in: the sink's ``start`` − the last child's ``end``.

Baseline of the same run: the same command launched with ``subprocess.Popen`` + wait,
sequentially — ms per launch (what a hop cannot beat), and the time to launch the M−2
children back to back (what the fan-out cannot beat on this machine).
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from apis import Job, JobState, ObjectMeta

from ._harness import Context, Result, StoreTarget, scenario
from ._up import UpSite, site_parent, up_site, warm_up

STAMP = "bash -c 'echo $EPOCHREALTIME > start; echo $EPOCHREALTIME > end'"
# Issue 19's hop goals, per backend (issue 5's were p50 <= 20, p99 <= 100 ms on both).
TARGETS = {"sqlite": {"p50": "<= 5", "p99": "<= 20"}, "etcd": {"p50": None, "p99": "<= 100"}}
PACKING = 64


def pct(xs: list[float], q: float) -> float:
    """The q-quantile (0..1) of xs by the nearest-rank rule."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(q * len(s) + 0.5)) - 1))]


def stamp_launch_rate(n: int, workdir: Path) -> float:
    """Launches/s of the stamp command itself (Popen + wait, sequential) in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    argv = ["bash", "-c", "echo $EPOCHREALTIME > start; echo $EPOCHREALTIME > end"]
    t0 = time.perf_counter()
    for _ in range(n):
        subprocess.Popen(argv, cwd=workdir).wait()
    return n / (time.perf_counter() - t0)


def _stamps(site: UpSite, workdir: str) -> tuple[float, float]:
    d = site.cfg.data_path / workdir
    return float((d / "start").read_text()), float((d / "end").read_text())


def _chain(site: UpSite, n: int) -> dict[str, Any]:
    ns = site.namespace
    names = [f"c{i:05d}" for i in range(n)]
    jobs = [Job(metadata=ObjectMeta(name=name, namespace=ns),
                spec={"app": "stamp", "workdir": f"chain/{name}",  # type: ignore[arg-type]
                      "parents": [names[i - 1]] if i else []})
            for i, name in enumerate(names)]
    before = site.count(JobState.JOB_FINISHED)
    t0 = time.perf_counter()
    site.create_jobs(jobs)
    site.wait_finished(before + n, timeout=60 + n)
    secs = time.perf_counter() - t0
    stamps = [_stamps(site, f"chain/{name}") for name in names]
    hops = [(stamps[i][0] - stamps[i - 1][1]) * 1000 for i in range(1, n)]
    # Where a hop goes, from the jobs' own history times (each process's clock at its write):
    # parent exit → its JOB_FINISHED write (node agent) → the child's READY (placement's write
    # that releases and binds it; the dependency reconciler's for a child with work before it
    # runs) → the child's start (the agent's watch and launch).
    done = site.registry.get_many(Job, names, ns)
    finished = [_entered(j, JobState.JOB_FINISHED) for j in done]
    ready = [_entered(j, JobState.READY) for j in done]
    parts = {"exit_to_finished_ms": [(finished[i - 1] - stamps[i - 1][1]) * 1000 for i in range(1, n)],
             "finished_to_ready_ms": [(ready[i] - finished[i - 1]) * 1000 for i in range(1, n)],
             "ready_to_start_ms": [(stamps[i][0] - ready[i]) * 1000 for i in range(1, n)]}
    return {"jobs": n, "seconds": secs, "hops_ms": hops, "p50_ms": pct(hops, 0.5), "p99_ms": pct(hops, 0.99),
            "max_ms": max(hops), "mean_ms": statistics.mean(hops),
            **{f"{k[:-3]}_p50_ms": pct(v, 0.5) for k, v in parts.items()}}


def _entered(job: Job | None, state: JobState) -> float:
    """When ``job`` last entered ``state`` (its history's time, epoch seconds)."""
    assert job is not None
    return next(h.time for h in reversed(job.status.history) if h.to_state is state).timestamp()


def _fan(site: UpSite, m: int) -> dict[str, Any]:
    ns = site.namespace
    kids = [f"f{i:05d}" for i in range(m - 2)]
    res = {"nodePackingCount": PACKING}
    jobs = [Job(metadata=ObjectMeta(name="froot", namespace=ns),
                spec={"app": "stamp", "workdir": "fan/root", "resources": res})]  # type: ignore[arg-type]
    jobs += [Job(metadata=ObjectMeta(name=k, namespace=ns),
                 spec={"app": "stamp", "workdir": f"fan/{k}", "parents": ["froot"],  # type: ignore[arg-type]
                       "resources": res})
             for k in kids]
    jobs.append(Job(metadata=ObjectMeta(name="fsink", namespace=ns),
                    spec={"app": "stamp", "workdir": "fan/sink", "parents": kids,  # type: ignore[arg-type]
                          "resources": res}))
    before = site.count(JobState.JOB_FINISHED)
    t0 = time.perf_counter()
    site.create_jobs(jobs)
    site.wait_finished(before + m, timeout=60 + m)
    secs = time.perf_counter() - t0
    root = _stamps(site, "fan/root")
    kid = [_stamps(site, f"fan/{k}") for k in kids]
    sink = _stamps(site, "fan/sink")
    out_ms = sorted((s - root[1]) * 1000 for s, _ in kid)
    last_end = max(e for _, e in kid)
    return {"jobs": m, "seconds": secs, "fanout_ms": out_ms, "fanout_first_ms": out_ms[0],
            "fanout_p50_ms": pct(out_ms, 0.5), "fanout_p99_ms": pct(out_ms, 0.99), "fanout_last_ms": out_ms[-1],
            "fanin_ms": (sink[0] - last_end) * 1000, "makespan_s": sink[1] - root[0]}


def _run_backend(ctx: Context, target: StoreTarget, n: int, m: int) -> dict[str, Any]:
    b = target.backend
    with tempfile.TemporaryDirectory(prefix="balsam-dag-", dir=site_parent()) as d, \
            up_site(Path(d) / "site", target, nodes=1, cpus=64) as site:
        site.create_app("stamp", STAMP)
        warm_up(site, "stamp", n=10)
        ctx.log(f"{b}: chain of {n} jobs")
        chain = _chain(site, n)
        ctx.log(f"{b}: chain hop p50 {chain['p50_ms']:.1f} ms, p99 {chain['p99_ms']:.1f} ms, "
                f"max {chain['max_ms']:.1f} ms")
        ctx.log(f"{b}: hop p50 parts: exit → JOB_FINISHED written {chain['exit_to_finished_p50_ms']:.1f} ms, "
                f"→ child READY {chain['finished_to_ready_p50_ms']:.1f} ms, → child start "
                f"{chain['ready_to_start_p50_ms']:.1f} ms")
        ctx.log(f"{b}: fan-out/fan-in of {m} jobs")
        fan = _fan(site, m)
        ctx.log(f"{b}: fan-out first {fan['fanout_first_ms']:.1f} ms, last {fan['fanout_last_ms']:.0f} ms; "
                f"fan-in {fan['fanin_ms']:.1f} ms")
    return {"chain": chain, "fan": fan}


def _plot(result: Result, fig: Any) -> None:
    ax1, ax2 = fig.subplots(1, 2)
    colors = {"sqlite": "#3b75af", "etcd": "#e1812c"}
    for b in result.backends:
        s = result.series.get(b, {})
        hops = sorted(s.get("chain_hops_ms", []))
        if hops:
            ax1.plot(hops, [(i + 1) / len(hops) for i in range(len(hops))], label=b, color=colors.get(b))
        fo = s.get("fanout_ms", [])
        if fo:
            ax2.plot(fo, [(i + 1) / len(fo) for i in range(len(fo))], label=f"{b}: children start", color=colors.get(b))
    base = result.value("stamp_launch_ms")
    if base:
        ax1.axvline(base, color="gray", ls=":", lw=1.2, label=f"one launch ({base:.1f} ms, baseline)")
    ax1.axvline(20, color="red", ls="--", lw=1, label="p50 goal 20 ms")
    ax1.axvline(100, color="red", ls="-.", lw=1, label="p99 goal 100 ms")
    ax1.set_xscale("log")
    ax1.set_xlabel("parent exit → child start (ms, log)")
    ax1.set_ylabel("fraction of hops")
    ax1.set_title(f"chain of {result.inputs.get('chain_jobs', '?')} jobs: hop latency CDF")
    ax1.legend(fontsize=7)
    direct = result.value("fanout_direct_ms")
    if direct:
        ax2.axvline(direct, color="gray", ls=":", lw=1.2, label=f"launching them back to back ({direct:.0f} ms)")
    ax2.set_xlabel("root exit → child start (ms)")
    ax2.set_ylabel("fraction of children")
    ax2.set_title(f"fan-out/fan-in of {result.inputs.get('fan_jobs', '?')} jobs")
    ax2.legend(fontsize=7)


@scenario("dag", help="DAG hop latency (parent exit → child start) on a chain and a fan-out/fan-in, through up",
          backends=("sqlite", "etcd"), default_backend="both", plot=_plot)
def run_dag(ctx: Context) -> Result:
    n = ctx.pick(tiny=6, small=50, default=200, large=1_000)
    m = ctx.pick(tiny=8, small=200, default=1_000, large=5_000)
    res = Result("dag", inputs={
        "site_dir": site_parent() or tempfile.gettempdir(),
        "chain_jobs": n, "fan_jobs": m, "command": STAMP,
        "node": f"1 node agent (balsamctl up --cpus 64); fan children nodePackingCount {PACKING}",
        "hop": "child's own start stamp − parent's own end stamp (bash $EPOCHREALTIME)",
        "baseline": "the same command by subprocess.Popen + wait, sequential, in the same run",
    })
    with tempfile.TemporaryDirectory(prefix="balsam-dag-base-", dir=site_parent()) as d:
        rate = stamp_launch_rate(ctx.pick(tiny=20, small=200, default=500, large=500), Path(d))
    res.add("stamp_launch_ms", 1000 / rate, "ms", "one launch of the stamp command (Popen+wait)", baseline=True)
    res.add("fanout_direct_ms", (m - 2) * 1000 / rate, "ms", f"{m - 2} launches back to back (Popen+wait)",
            baseline=True)
    per: dict[str, dict[str, Any]] = {}
    ctx.per_backend(res, lambda t: per.__setitem__(t.backend, _run_backend(ctx, t, n, m)))
    for b, d in per.items():
        c, f = d["chain"], d["fan"]
        res.add("chain_p50_ms", c["p50_ms"], "ms", f"chain hop p50 ({n} jobs)", backend=b, target=TARGETS.get(b, {}).get("p50"),
                ratio_to="stamp_launch_ms", ratio_unit="× one launch")
        res.add("chain_p99_ms", c["p99_ms"], "ms", "chain hop p99", backend=b, target=TARGETS.get(b, {}).get("p99"),
                ratio_to="stamp_launch_ms", ratio_unit="× one launch")
        res.add("chain_max_ms", c["max_ms"], "ms", "chain hop max", backend=b)
        for part, words in (("exit_to_finished", "parent exit → its JOB_FINISHED write (agent)"),
                            ("finished_to_ready", "→ child READY (placement's releasing bind, or the claim in the parent's end write)"),
                            ("ready_to_start", "→ child start (agent watch, launch)")):
            res.add(f"chain_{part}_p50_ms", c[f"{part}_p50_ms"], "ms", f"hop p50 part: {words}", backend=b)
        res.add("chain_seconds", c["seconds"], "s", f"chain of {n}: create → last finished", backend=b)
        res.add("fanout_first_ms", f["fanout_first_ms"], "ms", "fan-out: root exit → first child start", backend=b)
        res.add("fanout_p50_ms", f["fanout_p50_ms"], "ms", "fan-out: root exit → child start p50", backend=b)
        res.add("fanout_p99_ms", f["fanout_p99_ms"], "ms", "fan-out: root exit → child start p99", backend=b)
        res.add("fanout_last_ms", f["fanout_last_ms"], "ms", f"fan-out: root exit → last of {m - 2} children",
                backend=b, ratio_to="fanout_direct_ms", ratio_unit="× back-to-back launches")
        res.add("fanin_ms", f["fanin_ms"], "ms", "fan-in: last child exit → sink start", backend=b,
                ratio_to="stamp_launch_ms", ratio_unit="× one launch")
        res.add("fan_makespan_s", f["makespan_s"], "s", f"fan-out/fan-in of {m}: root start → sink end", backend=b)
        res.series[b] = {"chain_hops_ms": c["hops_ms"], "fanout_ms": f["fanout_ms"]}
    return res
