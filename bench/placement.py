"""Scenario ``placement`` (issue 5 #6): N pending jobs of mixed shapes onto M simulated nodes
(64 CPUs, 8 GPUs): placements per second, and packing efficiency against a lower bound.

Driven through the real code path: the controller manager's Job/Node/BatchJob informers
(filled with real ``Job`` and ``Node`` objects through ``apply_local``, exactly as the
controller writes its results through), the :class:`PlacementReconciler` registered on them
(its event handlers keep its dirty set and backlog) and ``reconcile()`` called as the
controller calls it, recording one binding step per job. Only the store write is left out
(its cost is in scenarios ``e2e`` and ``store``).

The run drains the whole backlog in **rounds** of unit duration: a pass binds what fits; then
every bound job finishes (its JOB_FINISHED version is written through to the informer, which
tells the reconciler) and the next pass fills the freed room — the incremental path of a
running site. Figures:

* placements/s over all passes: jobs bound ÷ seconds inside ``reconcile()``; also counting
  the informer events that drive it (the write-through of binds and finishes);
* the first pass alone (an empty allocation meets the whole backlog);
* **baseline** of the same run: the bare packing engine (``Packer.place`` / ``release``) on
  the same requests in the same rounds, offered the same way (priority order, ``chunk_sizes()``
  at a time while a node has room) — the reconciler's ratio to it is its overhead;
* **packing efficiency** = lower bound ÷ rounds used, where the lower bound is
  ``ceil(max(Σ CPUs / cluster CPUs, Σ GPUs / cluster GPUs, Σ occupancy / nodes))`` over the
  jobs that fit (a multi-node job counts its whole nodes); also the CPU/GPU/occupancy fill of
  the cluster after the first pass.

Jobs that no node could ever hold (a few needing 16 GPUs per node) must come out
``Unschedulable``: their count is checked and reported.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from apis import BatchJob, Job, JobState, Node, NodeSpec, ObjectMeta, get_condition, utcnow
from apis._codec import shallow_copy
from controllers._controller import Context as ReconcileContext
from controllers._controller import Request
from controllers._informer import Informer
from controllers._manager import job_indexers
from controllers.placement.packing import Decision, JobShape, NodeOccupancy, Packer, PlacementRequest
from controllers.placement.reconciler import KEY, PlacementReconciler, patched
from controllers.placement.scheduler import chunk_sizes
from store.process import freeze_long_lived

from ._harness import Context, Result, scenario

NODE_CPUS, NODE_GPUS = 64, 8
# (weight, resources): a mix of serial, small MPI, GPU, whole-node and multi-node jobs
MIX: list[tuple[float, dict[str, Any]]] = [
    (0.40, {"nodePackingCount": 64}),
    (0.20, {"ranksPerNode": 8, "nodePackingCount": 8}),
    (0.15, {"gpusPerRank": 1, "nodePackingCount": 8}),
    (0.10, {"ranksPerNode": 4, "threadsPerRank": 4, "gpusPerRank": 1, "nodePackingCount": 2}),
    (0.10, {"ranksPerNode": 8, "threadsPerRank": 8, "gpusPerRank": 1}),
    (0.04, {"numNodes": 2, "ranksPerNode": 64}),
    (0.01, {"numNodes": 8, "ranksPerNode": 8, "threadsPerRank": 8, "gpusPerRank": 1}),
]
NEVER = {"gpusPerRank": 16}  # 16 GPUs on one node: no node has them
TARGETS = {"placements": ">= 50000"}


class _NoStore:
    """Informers here are filled by hand; nothing may reach for a store. The scheduler writes
    its bindings and Waiting conditions as status patches (``write_status_patches``): each
    call is one transaction at the next revision; the patches are kept for the bench, which
    turns them into the objects the watch would deliver (outside the timed passes: that is
    the informer's decoding, as before). The store write itself (encode, txn) is left out,
    as it always was here: its cost is in scenarios ``e2e`` and ``store``."""

    def __init__(self) -> None:
        self.rv = 2
        self.patches: list[tuple[list[Any], int]] = []
        self.transactions = 0

    def write_status_patches(self, patches: Any, **_: Any) -> int:
        rv = self.rv
        self.rv += 1
        self.transactions += 1
        self.patches.append((list(patches), rv))
        return rv

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"the placement bench has no store (informer called {name})")


def delivered(patches: list[tuple[list[Any], int]]) -> tuple[list[Job], list[Job]]:
    """(bindings, other patched jobs) as their watch events would carry them."""
    binds: list[Job] = []
    others: list[Job] = []
    for batch, rv in patches:
        for job, fields in batch:
            new = patched(job, fields)
            new.__dict__["metadata"] = shallow_copy(job.metadata, {"resource_version": str(rv)})
            (binds if "placement" in fields else others).append(new)
    return binds, others


def make_jobs(n: int, never: int, seed: int = 5) -> list[Job]:
    rng = random.Random(seed)
    weights = [w for w, _ in MIX]
    t0 = utcnow()
    jobs = []
    for i in range(n):
        res = NEVER if i < never else rng.choices(MIX, weights)[0][1]
        j = Job(metadata=ObjectMeta(name=f"p{i:07d}", namespace="default", resourceVersion="1",
                                    creationTimestamp=t0 + timedelta(microseconds=i)),
                spec={"app": "a", "workdir": f"p/{i}", "resources": res, "priority": rng.randint(0, 2)})  # type: ignore[arg-type]
        j.status.state = JobState.PREPROCESSED
        jobs.append(j)
    return jobs


def demand(shape: JobShape) -> tuple[float, float, float]:
    """(CPU, GPU, occupancy) in node units a job takes while it runs."""
    k = shape.num_nodes
    return k * shape.cpus_per_node / NODE_CPUS, k * shape.gpus_per_node / NODE_GPUS, k * shape.occupancy


def lower_bound(shapes: list[JobShape], nodes: int) -> int:
    """Rounds no packer can beat: the busiest dimension's total demand over the cluster."""
    tot = [0.0, 0.0, 0.0]
    for s in shapes:
        for d, v in enumerate(demand(s)):
            tot[d] += v
    return max(1, math.ceil(max(tot) / nodes - 1e-9))


def _fill(shapes: list[JobShape], nodes: int) -> dict[str, float]:
    tot = [0.0, 0.0, 0.0]
    for s in shapes:
        for d, v in enumerate(demand(s)):
            tot[d] += v
    return {"cpu": tot[0] / nodes, "gpu": tot[1] / nodes, "occupancy": tot[2] / nodes}


def engine_drain(jobs: list[Job], nodes: int) -> dict[str, Any]:
    """The bare packing engine on the same requests, round by round (the baseline): each round
    offers the pending requests in priority order, in the scheduler's chunks while some node
    has room (as the reconciler's incremental passes do), then releases what it bound."""
    packer = Packer(NodeOccupancy(f"n{i:04d}", NODE_CPUS, NODE_GPUS) for i in range(nodes))
    order = sorted(jobs, key=lambda j: (-j.spec.priority, j.metadata.creation_timestamp, j.name))
    # (job, request of its packing group): the form the scheduler's queue holds, built before
    # the timing as the scheduler builds its entries when a job is queued
    templates: dict[JobShape, PlacementRequest] = {}
    pending: list[tuple[str, PlacementRequest]] = []
    for j in order:
        shape = JobShape.from_resources(j.spec.resources)
        t = templates.get(shape)
        if t is None:
            t = templates[shape] = PlacementRequest("", shape)
        pending.append((j.name, t))
    rounds = placed = 0
    secs = cpu = 0.0
    first: dict[str, Any] = {}
    while pending:
        t0, c0 = time.perf_counter(), time.process_time()
        decided: list[Decision] = []
        i = 0
        sizes = chunk_sizes()
        while i < len(pending) and packer.has_room():
            size = next(sizes)
            decided.extend(packer.place_pairs(pending[i : i + size]))
            i += size
        bound = [d.job for d in decided if d.bound]
        gone = {d.job for d in decided if d.bound or d.never_fits}
        pending = [r for r in pending if r[0] not in gone]
        for name in bound:
            packer.release(name)
        dt = time.perf_counter() - t0
        secs += dt
        cpu += time.process_time() - c0
        if not first:
            first = {"seconds": dt, "bound": len(bound)}
        if not bound:
            break
        rounds += 1
        placed += len(bound)
    return {"rounds": rounds, "placed": placed, "seconds": secs, "cpu_s": cpu, "first": first}


def _informers() -> tuple[_NoStore, dict[str, Any]]:
    """A registry that writes nothing (see the module doc) and the scheduler's informers on it."""
    reg = _NoStore()
    return reg, {
        "Job": Informer(reg, Job, "default", job_indexers()),
        "Node": Informer(reg, Node, "default"),
        "BatchJob": Informer(reg, BatchJob, "default"),
    }


def reconciler_drain(jobs: list[Job], nodes: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Drain the backlog through PlacementReconciler on real informers (see the module doc)."""
    reg, informers = _informers()
    rec = PlacementReconciler()
    queued: list[Request] = []
    rec.register(informers, queued.append)
    for i in range(nodes):
        informers["Node"].apply_local(Node(metadata=ObjectMeta(name=f"n{i:04d}", namespace="default",
                                                               resourceVersion="1"),
                                           spec=NodeSpec(hostname=f"n{i:04d}", cpus=NODE_CPUS, gpus=NODE_GPUS)))
    jobs_inf: Informer[Job] = informers["Job"]
    t0 = time.perf_counter()
    for j in jobs:
        jobs_inf.apply_local(j)
    load_s = time.perf_counter() - t0
    freeze_long_lived()  # as the controller manager does once its informers have listed
    rounds = placed = passes = 0
    reconcile_s = events_s = reconcile_cpu = 0.0
    first: dict[str, Any] = {}
    first_fill: list[JobShape] = []
    unschedulable: set[str] = set()
    while True:
        queued.clear()
        ctx = ReconcileContext(reg, informers)
        t0, c0 = time.perf_counter(), time.process_time()
        rec.reconcile(Request(KEY, "default"), ctx)
        dt = time.perf_counter() - t0
        reconcile_s += dt
        reconcile_cpu += time.process_time() - c0
        passes += 1
        t0 = time.perf_counter()
        binds, waits = delivered(reg.patches)  # the scheduler's own writes (bindings, Waiting conditions)
        reg.patches = []
        events_s += time.perf_counter() - t0
        for _, new in ctx.writes.updates:
            c = get_condition(new.status.conditions, "Unschedulable")
            if c is not None and c.status == "True":
                unschedulable.add(new.name)
        if not first:
            first = {"seconds": dt, "bound": len(binds)}
            first_fill = [JobShape.from_resources(b.spec.resources) for b in binds]
        # Write-through of the steps (as the controller does after its transaction), the
        # bindings' watch events (the scheduler does not write them through: they confirm its
        # assumed bindings), then every bound job runs and finishes before the next pass: one round.
        t0 = time.perf_counter()
        for _, new in ctx.writes.updates:
            new.metadata.resource_version = str(reg.rv)
            jobs_inf.apply_local(new)
        reg.rv += 1
        for w in waits:
            jobs_inf.apply_local(w)
        for b in binds:
            jobs_inf.apply_local(b)
        for b in binds:
            fin = b.status_copy()
            fin.status.state = JobState.JOB_FINISHED
            fin.metadata = b.metadata.model_copy(update={"resource_version": str(reg.rv)})
            jobs_inf.apply_local(fin)
        reg.rv += 1
        events_s += time.perf_counter() - t0
        if not binds:
            break
        rounds += 1
        placed += len(binds)
        if rounds % 10 == 0:
            log(f"  round {rounds}: {placed:,} placed")
    return {"rounds": rounds, "placed": placed, "passes": passes, "reconcile_s": reconcile_s,
            "reconcile_cpu_s": reconcile_cpu,
            "events_s": events_s, "load_s": load_s, "first": first, "first_fill": _fill(first_fill, nodes),
            "unschedulable": len(unschedulable)}


TRICKLE_SLOTS = 8


def trickle(waiting: int, passes: int) -> dict[str, Any]:
    """The running site's regime (issue 14's Python apps): one node of ``TRICKLE_SLOTS`` CPUs,
    ``waiting`` one-CPU jobs queued; each pass follows one job ending and one new job
    arriving. CPU per pass of ``reconcile()``: it should not grow with ``waiting``."""
    reg, informers = _informers()
    rec = PlacementReconciler()
    rec.register(informers, lambda req: None)
    informers["Node"].apply_local(Node(metadata=ObjectMeta(name="t0", namespace="default", resourceVersion="1"),
                                       spec=NodeSpec(hostname="t0", cpus=TRICKLE_SLOTS, gpus=0)))
    jobs_inf: Informer[Job] = informers["Job"]
    t0 = utcnow()

    def job(i: int) -> Job:
        j = Job(metadata=ObjectMeta(name=f"t{i:07d}", namespace="default", resourceVersion="1",
                                    creationTimestamp=t0 + timedelta(microseconds=i)),
                spec={"app": "a", "workdir": f"t/{i}", "resources": {"nodePackingCount": TRICKLE_SLOTS}})  # type: ignore[arg-type]
        j.status.state = JobState.PREPROCESSED
        return j

    for i in range(waiting):
        jobs_inf.apply_local(job(i))

    def run() -> tuple[float, list[Job]]:
        c0 = time.process_time()
        rec.reconcile(Request(KEY, "default"), ReconcileContext(reg, informers))
        cpu = time.process_time() - c0
        binds, waits = delivered(reg.patches)
        reg.patches = []
        for w in waits:
            jobs_inf.apply_local(w)
        for b in binds:
            jobs_inf.apply_local(b)
        return cpu, binds

    _, running = run()
    cpu = 0.0
    placed = 0
    for p in range(passes):
        done = running.pop(0)
        fin = done.status_copy()
        fin.status.state = JobState.JOB_FINISHED
        reg.rv += 1
        fin.metadata = done.metadata.model_copy(update={"resource_version": str(reg.rv)})
        jobs_inf.apply_local(fin)
        jobs_inf.apply_local(job(waiting + p))
        c, bound = run()
        cpu += c
        placed += len(bound)
        running.extend(bound)
    return {"waiting": waiting, "passes": passes, "placed": placed, "cpu_ms_per_pass": cpu * 1000 / passes}


def _plot(result: Result, fig: Any) -> None:
    ax1, ax2 = fig.subplots(1, 2)
    names = [("engine", "packing engine\n(baseline)"), ("placements", "PlacementReconciler\n(reconcile only)"),
             ("placements_with_events", "reconciler +\ninformer events"), ("first_pass", "first pass\n(reconciler)")]
    vals = [result.value(n) or 0 for n, _ in names]
    ax1.bar([lbl for _, lbl in names], vals, color=["#999999", "#3b75af", "#3b75af", "#7aa6d6"])
    ax1.axhline(50_000, color="red", ls="--", lw=1.2, label="goal 50k/s")
    for i, v in enumerate(vals):
        ax1.annotate(f"{v:,.0f}", (i, v), ha="center", va="bottom", fontsize=8)
    ax1.set_ylabel("placements / s")
    ax1.tick_params(axis="x", labelsize=7)
    ax1.legend(fontsize=8)
    ax1.set_title(f"{result.inputs.get('jobs', 0):,} jobs on {result.inputs.get('nodes', 0):,} nodes")
    lb = result.value("lower_bound_rounds") or 0
    r_eng = result.find("engine")
    eng_rounds = r_eng.extra.get("rounds", 0) if r_eng else 0
    rec = result.value("rounds") or 0
    ax2.bar(["lower bound", "engine", "reconciler"], [lb, eng_rounds, rec], color=["#999999", "#999999", "#3b75af"])
    for i, v in enumerate([lb, eng_rounds, rec]):
        ax2.annotate(f"{v:.0f}", (i, v), ha="center", va="bottom", fontsize=8)
    ax2.set_ylabel("rounds to drain the backlog")
    eff = result.value("efficiency") or 0
    ax2.set_title(f"packing efficiency {eff:.3f} (lower bound ÷ rounds)")


@scenario("placement", help="N pending jobs of mixed shapes onto M 64-CPU 8-GPU nodes through PlacementReconciler: "
          "placements/s and packing efficiency", plot=_plot)
def run_placement(ctx: Context) -> Result:
    n = ctx.pick(tiny=2_000, small=20_000, default=100_000, large=300_000)
    nodes = ctx.pick(tiny=20, small=200, default=1_000, large=3_000)
    never = max(5, n // 2000)
    res = Result("placement", inputs={
        "jobs": n, "nodes": nodes, "node": f"{NODE_CPUS} CPUs, {NODE_GPUS} GPUs",
        "mix": [{"weight": w, "resources": r} for w, r in MIX], "never_fits": {"count": never, "resources": NEVER},
        "priorities": "uniform 0..2, then age",
        "rounds": "bind what fits, then every bound job finishes; repeat until the backlog is empty",
        "path": "PlacementReconciler.reconcile on the controller manager's informers (apply_local write-through); "
                "no store",
    })
    ctx.log(f"making {n:,} jobs")
    jobs = make_jobs(n, never)
    shapes = [JobShape.from_resources(j.spec.resources) for j in jobs[never:]]
    lb = lower_bound(shapes, nodes)
    ctx.log(f"engine: draining {n:,} jobs on {nodes:,} nodes")
    eng = engine_drain(jobs, nodes)
    ctx.log(f"engine: {eng['placed']:,} placed in {eng['rounds']} rounds, {eng['seconds']:.2f}s")
    ctx.log("PlacementReconciler: the same, through the informers")
    rec = reconciler_drain(jobs, nodes, ctx.log)
    ctx.log(f"reconciler: {rec['placed']:,} placed in {rec['rounds']} rounds, reconcile {rec['reconcile_s']:.2f}s, "
            f"events {rec['events_s']:.2f}s")
    res.add("engine", eng["placed"] / eng["seconds"], "placements/s", "packing engine alone (Packer.place/release)",
            baseline=True, rounds=eng["rounds"], seconds=round(eng["seconds"], 3))
    res.add("placements", rec["placed"] / rec["reconcile_s"], "placements/s",
            "PlacementReconciler (reconcile passes)", ratio_to="engine", ratio_unit="of the engine's rate",
            target=TARGETS["placements"], seconds=round(rec["reconcile_s"], 3), passes=rec["passes"])
    # The same figures per CPU-second of this process (time.process_time): on a loaded machine
    # the wall-clock ones measure the machine's queue as much as the code.
    res.add("engine_cpu", eng["placed"] / eng["cpu_s"], "placements/cpu-s", "packing engine alone, per CPU-second",
            baseline=True, cpu_seconds=round(eng["cpu_s"], 3))
    res.add("placements_cpu", rec["placed"] / rec["reconcile_cpu_s"], "placements/cpu-s",
            "PlacementReconciler (reconcile passes), per CPU-second", ratio_to="engine_cpu",
            ratio_unit="of the engine's rate", cpu_seconds=round(rec["reconcile_cpu_s"], 3))
    res.add("placements_with_events", rec["placed"] / (rec["reconcile_s"] + rec["events_s"]), "placements/s",
            "reconciler + the informer events that drive it", ratio_to="engine", ratio_unit="of the engine's rate",
            events_s=round(rec["events_s"], 3))
    res.add("first_pass", rec["first"]["bound"] / rec["first"]["seconds"], "placements/s",
            f"first pass: {rec['first']['bound']:,} bound of {n:,} pending", bound=rec["first"]["bound"],
            seconds=round(rec["first"]["seconds"], 3))
    res.add("lower_bound_rounds", float(lb), "rounds", "lower bound on rounds (busiest resource)", baseline=True)
    res.add("rounds", float(rec["rounds"]), "rounds", "rounds the reconciler used", ratio_to="lower_bound_rounds",
            ratio_unit="× lower bound")
    res.add("efficiency", lb / rec["rounds"] if rec["rounds"] else None, "LB/rounds",
            "packing efficiency (lower bound ÷ rounds)")
    for dim, v in rec["first_fill"].items():
        res.add(f"first_fill_{dim}", v, "fraction", f"cluster {dim} in use after the first pass")
    res.add("unschedulable", float(rec["unschedulable"]), "jobs", f"marked Unschedulable (expected {never})")
    if rec["unschedulable"] != never:
        res.note(f"{rec['unschedulable']} jobs marked Unschedulable, expected {never}")
    if rec["placed"] != n - never:
        res.note(f"the reconciler placed {rec['placed']:,} jobs, expected {n - never:,}")
    small, big = ctx.pick(tiny=200, small=1_000, default=5_000, large=5_000), ctx.pick(
        tiny=800, small=4_000, default=20_000, large=20_000)
    ctx.log(f"trickle: {TRICKLE_SLOTS} slots, {small:,} then {big:,} waiting, one ends and one arrives per pass")
    tr = [trickle(w, 200) for w in (small, big)]
    res.add("trickle_small", tr[0]["cpu_ms_per_pass"], "CPU ms/pass",
            f"trickle pass: {TRICKLE_SLOTS} slots, {small:,} waiting (one ends, one arrives)", baseline=True,
            placed=tr[0]["placed"])
    res.add("trickle_big", tr[1]["cpu_ms_per_pass"], "CPU ms/pass",
            f"trickle pass: {TRICKLE_SLOTS} slots, {big:,} waiting (a pass should cost what changed)",
            ratio_to="trickle_small", ratio_unit=f"× the pass at {small:,} waiting", placed=tr[1]["placed"])
    for t in tr:
        if t["placed"] != t["passes"]:
            res.note(f"trickle at {t['waiting']:,} waiting placed {t['placed']} in {t['passes']} passes")
    res.series = {"trickle": tr, "engine": eng, "reconciler": {k: v for k, v in rec.items()}, "load_s": rec["load_s"]}
    return res
