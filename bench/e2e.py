"""Scenario ``e2e`` (issue 4 "Measure", issue 5 #2): N trivial jobs through ``balsamctl up``.

Per backend, on a fresh store and site:

1. ``balsamctl up --nodes 1 --cpus 64`` runs (controller manager + one node agent, child
   processes); 20 warm-up jobs go through first.
2. **Throughput** — N ``/bin/true`` jobs (``nodePackingCount: 64``) are created with the
   Python client (``create_many``, 5,000 per transaction) and the clock runs from just before
   the first create to the moment all N are ``JOB_FINISHED`` (an index count read every
   10 ms). jobs/s is divided by the raw ``subprocess.Popen(["/bin/true"])`` + wait rate
   (``spawn``), measured in the same run, before and after the backends (their median is
   the baseline). Also: CPU milliseconds per job of the controller manager, the agent, the
   jobs themselves and ``up``, from /proc (robust to other load on the machine), and store
   revisions per job (how well writes batch).
3. **Utilization** — ``balsamctl up --nodes 2 --cpus 64``; jobs of ``sleep 1`` with
   ``nodePackingCount`` P fill both nodes for R rounds. Busy node-seconds = Σ over jobs of
   (RUN_DONE − RUNNING, from the jobs' history) × 1/P; allocated node-seconds = nodes × (last
   RUN_DONE − the moment the jobs were created). The baseline is the ideal: R seconds.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from apis import Job, JobState, ObjectMeta

from ._harness import Context, Result, StoreTarget, scenario
from ._up import UpSite, site_parent, up_site, warm_up
from .spawn import measure_spawn_rate

# "ratio": issue 4/5's, against sequential launches; "ratio_2": issue 19's, against the 2-in-flight
# limit of the same run (per backend); "control_plane": issue 19's CPU of manager + agent + store server.
TARGETS = {"ratio": ">= 0.5", "utilization": ">= 0.95", "control_plane": "<= 0.3"}
TARGETS_RATIO_2 = {"sqlite": ">= 0.8", "etcd": ">= 0.6"}
CPUS = 64
PACKING = 64


def spawn_rounds(rounds: int, seconds: float, in_flight: int = 1) -> list[float]:
    return [measure_spawn_rate(seconds, in_flight) for _ in range(rounds)]


def run_true_jobs(site: UpSite, n: int, prefix: str = "e", app: str = "true",
                  packing: int = PACKING) -> dict[str, Any]:
    """N jobs of ``app`` (an App already made) through a running site; returns the figures."""
    ns = site.namespace
    jobs = [Job(metadata=ObjectMeta(name=f"{prefix}{i}", namespace=ns),
                spec={"app": app, "workdir": f"{prefix}/{i // 1000}/{i}",  # type: ignore[arg-type]
                      "resources": {"nodePackingCount": packing}})
            for i in range(n)]
    before = site.count(JobState.JOB_FINISHED)
    rev0 = site.registry.store.current_revision()
    cpu0 = site.cpu()
    t0 = time.perf_counter()
    site.create_jobs(jobs)
    t_created = time.perf_counter()
    t1 = site.wait_finished(before + n, timeout=max(120.0, n / 20))
    cpu1 = site.cpu()
    revs = site.registry.store.current_revision() - rev0
    secs = t1 - t0
    cpu_ms = {}
    for name in cpu1:
        cpu_ms[name] = (cpu1[name]["self"] - cpu0[name]["self"]) * 1000 / n
        if name.startswith("agent"):
            cpu_ms["jobs"] = cpu_ms.get("jobs", 0.0) + (cpu1[name]["children"] - cpu0[name]["children"]) * 1000 / n
    return {"jobs": n, "seconds": secs, "jobs_per_s": n / secs, "create_seconds": t_created - t0,
            "revisions": revs, "revisions_per_job": revs / n, "cpu_ms_per_job": cpu_ms}


def _throughput(ctx: Context, res: Result, target: StoreTarget, n: int) -> dict[str, Any]:
    b = target.backend
    with tempfile.TemporaryDirectory(prefix="balsam-e2e-", dir=site_parent()) as d, \
            up_site(Path(d) / "site", target, nodes=1, cpus=CPUS) as site:
        site.create_app("true", "/bin/true")
        warm_up(site, "true", resources={"nodePackingCount": PACKING})
        ctx.log(f"{b}: {n:,} /bin/true jobs through up (1 node, {CPUS} CPUs, nodePackingCount {PACKING})")
        out = run_true_jobs(site, n)
        ctx.log(f"{b}: {out['jobs_per_s']:,.0f} jobs/s, {out['revisions_per_job']:.2f} revisions/job, "
                f"CPU ms/job {', '.join(f'{k} {v:.2f}' for k, v in out['cpu_ms_per_job'].items())}")
    return out


def _utilization(ctx: Context, target: StoreTarget, nodes: int, packing: int, rounds: int) -> dict[str, Any]:
    b = target.backend
    n = nodes * packing * rounds
    with tempfile.TemporaryDirectory(prefix="balsam-util-", dir=site_parent()) as d, \
            up_site(Path(d) / "site", target, nodes=nodes, cpus=CPUS, namespace=f"util-{packing}") as site:
        site.create_app("sleep", "sleep 1")
        site.create_app("true", "/bin/true")
        warm_up(site, "true", n=10)
        ns = site.namespace
        jobs = [Job(metadata=ObjectMeta(name=f"s{i}", namespace=ns),
                    spec={"app": "sleep", "workdir": f"s/{i}",  # type: ignore[arg-type]
                          "resources": {"nodePackingCount": packing}})
                for i in range(n)]
        before = site.count(JobState.JOB_FINISHED)
        ctx.log(f"{b}: {n} 'sleep 1' jobs on {nodes} nodes × {packing} slots ({rounds} rounds)")
        t0_wall = time.time()
        site.create_jobs(jobs)
        site.wait_finished(before + n, timeout=rounds * 10 + 60)
        done = site.registry.get_many(Job, [j.name for j in jobs], ns)
    busy = 0.0
    starts, ends = [], []
    slots: dict[tuple[str, tuple[int, ...]], list[tuple[float, float]]] = {}
    for j in done:
        assert j is not None and j.status.placement is not None
        run = next(h.time for h in reversed(j.status.history) if h.to_state is JobState.RUNNING)
        end = next(h.time for h in reversed(j.status.history) if h.to_state is JobState.RUN_DONE)
        starts.append(run.timestamp())
        ends.append(end.timestamp())
        busy += (end - run).total_seconds() / packing
        p = j.status.placement
        slots.setdefault((p.nodes[0], tuple(p.cpus)), []).append((run.timestamp(), end.timestamp()))
    # Turnover: a slot's previous job ends → its next job runs (exit → RUN_DONE → placement → start).
    turnover: list[float] = []
    for runs in slots.values():
        runs.sort()
        turnover += [(runs[i + 1][0] - runs[i][1]) * 1000 for i in range(len(runs) - 1)]
    span = max(ends) - t0_wall
    allocated = nodes * span
    return {"jobs": n, "nodes": nodes, "packing": packing, "rounds": rounds, "busy_node_s": busy,
            "allocated_node_s": allocated, "utilization": busy / allocated, "makespan_s": span,
            "first_start_s": min(starts) - t0_wall, "nominal_utilization": n * 1.0 / packing / allocated,
            "mean_job_s": statistics.mean(e - s for s, e in zip(starts, ends, strict=True)),
            "turnover_p50_ms": statistics.median(turnover) if turnover else None,
            "turnover_p99_ms": sorted(turnover)[int(0.99 * (len(turnover) - 1))] if turnover else None}


def _plot(result: Result, fig: Any) -> None:
    ax1, ax2 = fig.subplots(1, 2)
    backends = result.backends
    colors = {"sqlite": "#3b75af", "etcd": "#e1812c"}
    spawn = result.value("spawn") or 0
    labels = ["spawn limit\n(baseline)"] + [f"e2e\n{b}" for b in backends]
    vals = [spawn] + [result.value("jobs_per_s", b) or 0 for b in backends]
    ax1.bar(labels, vals, color=["#999999"] + [colors.get(b, "#3b75af") for b in backends])
    ax1.axhline(spawn * 0.5, color="red", ls="--", lw=1.2, label="goal: 0.5 × spawn")
    for i, v in enumerate(vals):
        ratio = "" if i == 0 or not spawn else f"\n({v / spawn:.2f}×)"
        ax1.annotate(f"{v:,.0f}{ratio}", (i, v), ha="center", va="bottom", fontsize=8)
    ax1.set_ylabel("jobs / s")
    ax1.set_title(f"{result.inputs.get('jobs', 0):,} /bin/true jobs through up")
    ax1.legend(fontsize=8)
    keys = [("utilization", "inputs_key"), ("utilization_small", "inputs_key")]
    width = 0.8 / max(1, len(backends))
    for j, b in enumerate(backends):
        xs = [i + (j - (len(backends) - 1) / 2) * width for i in range(len(keys))]
        vals = [result.value(k, b) or 0 for k, _ in keys]
        ax2.bar(xs, vals, width, color=colors.get(b, "#3b75af"), label=b)
        for x, v in zip(xs, vals, strict=True):
            ax2.annotate(f"{v:.3f}", (x, v), ha="center", va="bottom", fontsize=7)
    for i, (k, _) in enumerate(keys):
        bound = result.value(f"{k}_bound")
        if bound:
            ax2.plot([i - 0.45, i + 0.45], [bound] * 2, color="gray", ls=":", lw=1.5)
    labels = []
    for k, _ in keys:
        f = result.find(k, backends[0]) if backends else None
        labels.append(f"{f.extra.get('nodes', 0) * f.extra.get('packing', 0)} slots" if f else k)
    ax2.set_xticks(range(len(keys)), labels)
    ax2.axhline(0.95, color="red", ls="--", lw=1.2, label="goal 0.95")
    ax2.set_ylim(0.5, 1.05)
    ax2.set_ylabel("busy / allocated node-seconds")
    ax2.set_title("'sleep 1' jobs on 2 nodes (gray: back-to-back relaunch bound)", fontsize=9)
    ax2.legend(fontsize=8, loc="lower right")


@scenario("e2e", help="N /bin/true jobs through balsamctl up (÷ spawn limit), and node utilization with sleep jobs",
          backends=("sqlite", "etcd"), default_backend="both", plot=_plot)
def run_e2e(ctx: Context) -> Result:
    n = ctx.pick(tiny=30, small=2_000, default=6_000, large=50_000)
    nodes = 2
    packing = ctx.pick(tiny=4, small=16, default=32, large=32)
    small_packing = ctx.pick(tiny=2, small=4, default=8, large=8)
    rounds = ctx.pick(tiny=2, small=5, default=10, large=20)
    spawn_s = ctx.pick(tiny=0.1, small=0.5, default=1.0, large=1.0)
    res = Result("e2e", inputs={
        "site_dir": site_parent() or tempfile.gettempdir(),
        "jobs": n, "command": "/bin/true", "node": f"1 node agent, {CPUS} CPUs, nodePackingCount {PACKING}",
        "create": "Python client create_many, 5,000 jobs per transaction, inside the clock",
        "utilization": {"jobs": nodes * packing * rounds, "command": "sleep 1", "nodes": nodes,
                        "cpus": CPUS, "nodePackingCount": packing, "rounds": rounds},
        "utilization_small": {"jobs": nodes * small_packing * rounds, "nodePackingCount": small_packing},
        "utilization_bound": "a launcher that relaunches every slot of a round one after another at the "
                             "spawn limit: 1 / (1 + slots / spawn) per 1-s round",
        "baseline": "subprocess.Popen(['/bin/true']) + wait, sequential and with 2 in flight: medians of 3 "
                    "rounds each before and 3 after the backends",
    })
    before = spawn_rounds(3, spawn_s)
    before_2 = spawn_rounds(3, spawn_s, 2)
    ctx.log(f"spawn before: {', '.join(f'{r:,.0f}' for r in before)}/s; 2 in flight "
            f"{', '.join(f'{r:,.0f}' for r in before_2)}/s")
    per_backend: dict[str, dict[str, Any]] = {}

    def one(target: StoreTarget) -> None:
        b = target.backend
        per_backend[b] = {"throughput": _throughput(ctx, res, target, n)}
        for key, npc in (("utilization", packing), ("utilization_small", small_packing)):
            u = per_backend[b][key] = _utilization(ctx, target, nodes, npc, rounds)
            ctx.log(f"{b}: {nodes * npc} slots: utilization {u['utilization']:.3f} (makespan {u['makespan_s']:.2f}s "
                    f"for {rounds} rounds, slot turnover p50 {u['turnover_p50_ms']:.0f} ms)")

    ctx.per_backend(res, one)
    after = spawn_rounds(3, spawn_s)
    after_2 = spawn_rounds(3, spawn_s, 2)
    ctx.log(f"spawn after: {', '.join(f'{r:,.0f}' for r in after)}/s; 2 in flight "
            f"{', '.join(f'{r:,.0f}' for r in after_2)}/s")
    spawn = statistics.median(before + after)
    spawn_2 = statistics.median(before_2 + after_2)
    res.add("spawn", spawn, "launches/s", "Popen(/bin/true)+wait, sequential", baseline=True,
            before=before, after=after)
    res.add("spawn_2", spawn_2, "launches/s", "Popen(/bin/true)+wait, 2 in flight", baseline=True,
            before=before_2, after=after_2)
    res.add("ideal_makespan", float(rounds), "s", f"ideal makespan ({rounds} rounds of 1 s)", baseline=True)
    for key, npc in (("utilization", packing), ("utilization_small", small_packing)):
        slots = nodes * npc
        res.add(f"{key}_bound", 1 / (1 + slots / spawn), "busy/allocated",
                f"{slots} slots relaunched back to back at the spawn limit", baseline=True)
    for b, d in per_backend.items():
        t = d["throughput"]
        res.add("jobs_per_s", t["jobs_per_s"], "jobs/s", f"{n:,} /bin/true jobs through up", backend=b,
                ratio_to="spawn", ratio_unit="of spawn limit",
                seconds=round(t["seconds"], 3), create_seconds=round(t["create_seconds"], 3))
        res.add("spawn_ratio", t["jobs_per_s"] / spawn, "× spawn", "e2e jobs/s ÷ sequential spawn limit (same run)",
                backend=b, target=TARGETS["ratio"])
        res.add("spawn_2_ratio", t["jobs_per_s"] / spawn_2, "× spawn (2)",
                "e2e jobs/s ÷ 2-in-flight spawn limit (same run; issue 19)", backend=b,
                target=TARGETS_RATIO_2.get(b))
        res.add("revisions_per_job", t["revisions_per_job"], "revisions/job", "store revisions per job",
                backend=b, revisions=t["revisions"])
        for who, ms in t["cpu_ms_per_job"].items():
            res.add(f"cpu_ms_{who.replace('-', '_')}", ms, "CPU ms/job", f"CPU per job: {who}", backend=b)
        plane = sum(ms for who, ms in t["cpu_ms_per_job"].items() if who not in ("jobs", "up"))
        res.add("cpu_ms_control_plane", plane, "CPU ms/job",
                "control-plane CPU per job: manager + agents + store server (issue 19)", backend=b,
                target=TARGETS["control_plane"])
        for key in ("utilization", "utilization_small"):
            u = d[key]
            slots = u["nodes"] * u["packing"]
            res.add(key, u["utilization"], "busy/allocated", f"node utilization, 'sleep 1' on {slots} slots",
                    backend=b, target=TARGETS["utilization"], ratio_to=f"{key}_bound", ratio_unit="of the bound",
                    **{k: round(v, 4) if isinstance(v, float) else v for k, v in u.items()})
        u = d["utilization"]
        res.add("makespan", u["makespan_s"], "s", f"makespan, 'sleep 1' on {u['nodes'] * u['packing']} slots",
                backend=b, ratio_to="ideal_makespan", ratio_unit="× ideal")
        res.add("turnover_p50_ms", u["turnover_p50_ms"], "ms", "slot turnover p50 (job exit → next job runs)",
                backend=b)
        res.series[b] = d
    res.series["spawn_rounds"] = {"before": before, "after": after, "before_2": before_2, "after_2": after_2}
    return res
