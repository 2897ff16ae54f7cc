"""Scenario ``placement_writes`` (issue 19, seventh round): the CPU of placement's two writes
per waiting job, in-process on a real SQLite store.

A trivial job queued behind a full node is written twice by placement: its release
(CREATED → READY → STAGED_IN → PREPROCESSED, every step in its history, ``by: placement``)
together with its ``Waiting`` condition, then its binding. This scenario builds those patches
as a pass does (``controllers._steps.collapsed_fields``, one condition shared by the pass) and
writes them with ``Registry.write_status_patches`` in batches of 15 (the e2e bench's mean
batch), asking for the written objects as placement does; it reports thread CPU per job for
the build, each write, and the store transaction inside it.

Baseline: the store's own work — the same batches of compare-and-put transactions of the
same bytes straight to ``store.txn`` (no patch built, no encode, no index key). The ratio is
what the registry's patch path costs on top of the store.
"""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path
from typing import Any

import store as st
from apis import App, Condition, Job, JobState, Placement, Registry, utcnow
from apis._codec import encode_stored
from controllers._steps import collapsed_fields
from store.process import tune_gc

from ._harness import Context, Result, scenario

S = JobState
BATCH = 15
STEPS = [(S.READY, "no parents"), (S.STAGED_IN, "no stage-in transfers"), (S.PREPROCESSED, "no preprocess hook")]


def _timed_txn(store: Any, acc: list[float]) -> Any:
    txn = store.txn

    def timed(*a: Any, **k: Any) -> Any:
        t = time.thread_time()
        try:
            return txn(*a, **k)
        finally:
            acc[0] += time.thread_time() - t
    return timed


def _write_in_batches(reg: Registry, patches: list[Any], acc: list[float], per: dict[str, list[float]],
                      what: str) -> list[Job]:
    """Write ``patches`` as a pass would, BATCH per transaction; records CPU µs per job of the
    whole write (``per[what]``) and of its store transactions (``per[what + "_txn"]``)."""
    written: list[Job] = []
    n = len(patches)
    acc[0] = 0.0
    t = time.thread_time()
    for i in range(0, n, BATCH):
        reg.write_status_patches(patches[i:i + BATCH], written=written)
    per[what].append((time.thread_time() - t) / n * 1e6)
    per[what + "_txn"].append(acc[0] / n * 1e6)
    acc[0] = 0.0
    return written


def _round(n: int, per: dict[str, list[float]]) -> None:
    with tempfile.TemporaryDirectory(prefix="balsam-pwrites-") as d:
        reg = Registry(st.open_store(f"sqlite:///{Path(d) / 'store.db'}"))
        reg.create(App(metadata={"name": "true"}, spec={"command": "/bin/true"}))  # type: ignore[arg-type]
        jobs = reg.create_many([Job(metadata={"name": f"j{i}"},  # type: ignore[arg-type]
                                    spec={"app": "true", "workdir": f"w/{i // 1000}/{i}",  # type: ignore[arg-type]
                                          "resources": {"nodePackingCount": 64}}) for i in range(n)])
        acc = [0.0]
        reg.store.txn = _timed_txn(reg.store, acc)  # type: ignore[method-assign]
        gc.collect()
        gc.freeze()
        try:
            now = utcnow()
            t = time.thread_time()
            cond = Condition(type="Waiting", status="True", reason="WaitingForCapacity", message="no room",
                             last_transition_time=now)
            waits = [(j, {"conditions": [cond], **collapsed_fields(j, STEPS, now, "placement")}) for j in jobs]
            per["build"].append((time.thread_time() - t) / n * 1e6)
            written = _write_in_batches(reg, waits, acc, per, "waiting")
            room = Placement(nodes=["n1"], cpus=[0], occupancy=1 / 64)
            binds = [(j, {"placement": room, "observed_generation": j.metadata.generation, "conditions": []})
                     for j in written]
            bound = _write_in_batches(reg, binds, acc, per, "bind")
            # The baseline: the same bytes again, compare-and-put batches straight to the store
            # (its own txn, not the timing wrapper).
            del reg.store.txn
            blobs = [(f"/registry/jobs/default/{j.name}", int(j.metadata.resource_version or 0), encode_stored(j))
                     for j in bound]
            t = time.thread_time()
            for i in range(0, n, BATCH):
                chunk = blobs[i:i + BATCH]
                res = reg.store.txn([st.Compare(k, "mod", "==", rv) for k, rv, _ in chunk],
                                    [st.Put(k, v) for k, _, v in chunk])
                if not res.succeeded:
                    raise RuntimeError("baseline transaction conflicted")
            per["store"].append((time.thread_time() - t) / n * 1e6)
        finally:
            gc.unfreeze()
            reg.store.close()


@scenario("placement_writes", help="placement's release+Waiting patch and binding per job through "
          "write_status_patches on SQLite, in-process (÷ the same bytes as bare store transactions)")
def run_placement_writes(ctx: Context) -> Result:
    n = ctx.pick(tiny=300, small=3_000, default=10_000, large=30_000)
    rounds = 3
    res = Result("placement_writes", inputs={
        "jobs": n, "rounds": rounds, "batch": BATCH, "backend": "sqlite (in-process)",
        "patches": "release steps + Waiting condition, then the binding; written objects asked for",
        "gc": "the manager's thresholds; the created jobs frozen",
        "baseline": "the bound jobs' bytes rewritten as compare-and-put batches straight to store.txn",
    })
    per: dict[str, list[float]] = {k: [] for k in ("build", "waiting", "waiting_txn", "bind", "bind_txn", "store")}
    thresholds = gc.get_threshold()
    tune_gc("manager")
    try:
        for r in range(rounds):
            _round(n, per)
            ctx.log(f"round {r + 1}: µs/job build {per['build'][-1]:.1f}, Waiting {per['waiting'][-1]:.1f} "
                    f"(txn {per['waiting_txn'][-1]:.1f}), bind {per['bind'][-1]:.1f} (txn {per['bind_txn'][-1]:.1f}); "
                    f"store alone {per['store'][-1]:.1f}")
    finally:
        gc.set_threshold(*thresholds)
    med = {k: sorted(vs)[len(vs) // 2] for k, vs in per.items()}
    res.add("store_us", med["store"], "µs/job", "the same bytes as bare compare-and-put txns", baseline=True,
            rounds=per["store"])
    labels = {"build": "the release+Waiting patches built (collapsed_fields)",
              "waiting": "release+Waiting write (write_status_patches)", "waiting_txn": "… of it the store txn",
              "bind": "binding write (write_status_patches)", "bind_txn": "… of it the store txn"}
    for k, label in labels.items():
        res.add(f"{k}_us", med[k], "µs/job", label, ratio_to="store_us", ratio_unit="× the store alone", rounds=per[k])
    total = med["build"] + med["waiting"] + med["bind"]
    res.add("per_job_us", total, "µs/job", "build + both writes", ratio_to="store_us", ratio_unit="× the store alone")
    return res
