"""Scenario ``informer`` (issue 19, sixth round): the controller manager's Job cache per event.

A trivial job reaches the manager's Job informer as four watch events: its create (decoded),
placement's Waiting condition and its binding (the manager's own writes, announced with
``expect`` and never decoded), and the node agent's finishing write (the fast path; the job
leaves the cache). This scenario feeds those four events, in that order, to a ``JobInformer``
with every handler the manager registers (the default reconcilers' ``register``), in-process
and on one thread, and reports the CPU per event (``time.thread_time``) and per job.

The informer's watch thread is stopped after its first list: the events are the stored
key-values of real writes, handed to the informer's own ``_decode`` and ``_apply`` as the
reflector would hand them, so what is measured is the cache and its handlers, not the store
poll (see ``bench e2e`` for the whole process). GC thresholds are the manager's
(``store.process.tune_gc("manager")``), the listed cache frozen as the manager freezes it.

Baseline: one pydantic decode of a created job (``apis._codec.decode``), the one step a
job's events cannot avoid (the cache keeps live jobs as models).
"""

from __future__ import annotations

import gc
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import store as st
from apis import App, Job, JobState, Placement, Registry, advance
from apis._codec import decode
from controllers._manager import ControllerManager
from store.process import tune_gc
from store.reflector import Delta

from ._harness import Context, Result, scenario

S = JobState


def _versions(reg: Registry, n: int, prefix: str) -> dict[str, list[Any]]:
    """The stored key-values (and written objects) of ``n`` jobs' four events."""
    key = f"/registry/jobs/default/{prefix}"
    created = reg.create_many([Job(metadata={"name": f"{prefix}{i}"},  # type: ignore[arg-type]
                                   spec={"app": "true", "workdir": f"w/{i}",  # type: ignore[arg-type]
                                         "resources": {"nodePackingCount": 64}}) for i in range(n)])
    out: dict[str, list[Any]] = {"created": [reg.store.get(f"{key}{i}") for i in range(n)]}
    steps: list[tuple[str, Callable[[Job], object]]] = [
        ("waiting", lambda j: advance(j, [S.READY, S.STAGED_IN, S.PREPROCESSED])),
        ("bound", lambda j: setattr(j.status, "placement", Placement(nodes=["n1"], cpus=[0], occupancy=1 / 64))),
        ("finished", lambda j: advance(j, [S.RUNNING, S.RUN_DONE, S.POSTPROCESSED, S.STAGED_OUT, S.JOB_FINISHED])),
    ]
    prev = created
    for name, edit in steps:
        pairs = []
        for j in prev:
            new = j.model_copy(deep=True)
            edit(new)
            pairs.append((j, new))
        prev = reg.update_many(pairs)
        out[name] = [reg.store.get(f"{key}{i}") for i in range(n)]
        out[name + "_objs"] = prev
    return out


def _feed(jobs: Any, kvs: list[st.KeyValue], typ: str, expect: list[Job] | None = None) -> float:
    """CPU µs per event to hand ``kvs`` to the informer as its watch would."""
    known = jobs._reflector.known
    t = time.thread_time()
    for i, kv in enumerate(kvs):
        if expect is not None:
            jobs.expect([expect[i]])
        obj = jobs._decode(kv)
        known[kv.key] = kv.mod_revision
        jobs._apply(Delta(typ, kv.key, obj, kv.mod_revision, kv))  # type: ignore[arg-type]
    return (time.thread_time() - t) / len(kvs) * 1e6


def _rounds(ctx: Context, n: int, rounds: int, per: dict[str, list[float]]) -> None:
    with tempfile.TemporaryDirectory(prefix="balsam-informer-") as d:
        reg = Registry(st.open_store(f"sqlite:///{Path(d) / 'store.db'}"))
        try:
            reg.create(App(metadata={"name": "true"}, spec={"command": "/bin/true"}))  # type: ignore[arg-type]
            for r in range(rounds):
                mgr = ControllerManager(reg)
                mgr.wire()
                for inf in mgr.informers.values():
                    inf.stop()  # the events are handed over below, on this thread
                jobs = mgr.informers["Job"]
                v = _versions(reg, n, f"r{r}-")
                gc.collect()
                gc.freeze()
                try:
                    kv0 = v["created"][0]
                    t = time.thread_time()
                    for _ in range(1000):
                        decode(Job, kv0)
                    per["decode"].append((time.thread_time() - t) / 1000 * 1e6)
                    per["create"].append(_feed(jobs, v["created"], "ADDED"))
                    per["waiting"].append(_feed(jobs, v["waiting"], "MODIFIED", v["waiting_objs"]))
                    per["bind"].append(_feed(jobs, v["bound"], "MODIFIED", v["bound_objs"]))
                    per["finish"].append(_feed(jobs, v["finished"], "MODIFIED"))
                finally:
                    gc.unfreeze()
                if len(jobs) != 0:
                    raise RuntimeError(f"{len(jobs)} finished jobs still in the cache")
                ctx.log(f"round {r + 1}: µs/event create {per['create'][-1]:.1f}, waiting {per['waiting'][-1]:.1f}, "
                        f"bind {per['bind'][-1]:.1f}, finish {per['finish'][-1]:.1f}; decode {per['decode'][-1]:.1f}")
        finally:
            reg.store.close()


@scenario("informer", help="the manager's Job cache per trivial job: create, own Waiting, own bind, finish events "
          "through every handler, in-process (÷ one pydantic decode)")
def run_informer(ctx: Context) -> Result:
    n = ctx.pick(tiny=200, small=3_000, default=10_000, large=50_000)
    rounds = ctx.pick(tiny=1, small=3, default=3, large=3)
    res = Result("informer", inputs={
        "jobs": n, "rounds": rounds, "events": "create (decoded), placement's Waiting and bind (expected: not "
        "decoded), the agent's finish (fast path, leaves the cache)",
        "handlers": "every reconciler of the manager's default set, registered as the manager does",
        "gc": "the manager's thresholds; the listed cache frozen",
        "baseline": "apis._codec.decode of one created job (median of the rounds)",
    })
    per: dict[str, list[float]] = {"create": [], "waiting": [], "bind": [], "finish": [], "decode": []}
    thresholds = gc.get_threshold()
    tune_gc("manager")  # (the bench's own thresholds come back below, for the scenarios after this one)
    try:
        _rounds(ctx, n, rounds, per)
    finally:
        gc.set_threshold(*thresholds)
    med = {k: sorted(vs)[len(vs) // 2] for k, vs in per.items()}
    res.add("decode", med["decode"], "µs", "one pydantic decode of a created job", baseline=True, rounds=per["decode"])
    labels = {"create": "create event (decode + handlers)", "waiting": "own Waiting patch event (expected)",
              "bind": "own bind event (expected)", "finish": "finishing event (fast path, leaves the cache)"}
    for k, label in labels.items():
        res.add(f"{k}_us", med[k], "µs/event", label, ratio_to="decode", ratio_unit="× a decode", rounds=per[k])
    total = sum(med[k] for k in labels)
    res.add("per_job_us", total, "µs/job", "the four events of a trivial job", ratio_to="decode",
            ratio_unit="× a decode")
    return res
