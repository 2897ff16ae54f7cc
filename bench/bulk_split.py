"""Scenario ``bulk-split``: where the time of ``Job.objects.bulk_create`` goes, per job.

Runs the ``store`` scenario's bulk create once more with light timers around each phase of
``Registry.write`` (one ``perf_counter`` pair per call, ~0.3 µs) and a ``gc.callbacks``
clock, and reports µs per job for:

1. model work and ops: ``Registry._prepare_creates`` without its ``to_json`` calls (copies of
   the Job, its metadata and status; name, uid, timestamps; object keys, index entries
   grouped by value, compare and put objects: one pass since issue 13c) — the caller's own
   ``Job(...)`` construction is shown apart;
2. the admission checks (``ADMISSION_CHECKS``: parameters, site fit, transfers, cycles);
3. serialization: ``Resource.to_json``;
4. reference compares: ``Registry._admission``;
5. the store transaction: ``Store.txn`` / ``Store.txn_with_entries``;
and what is left (the client's ``bulk_create`` around ``write``: namespaces, binding the new
objects to the client). GC time is measured separately and overlaps the phases it
interrupts. Not in the default run.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import store as st
from apis import App, Job, _meta, _registry
from apis._client import BULK_BATCH

from ._harness import Context, Result, StoreTarget, scenario
from .store import make_jobs

PHASES = [
    ("prepare", "copies, identity, keys, ops (_prepare_creates less to_json)"),
    ("checks", "admission checks (ADMISSION_CHECKS)"),
    ("to_json", "serialization (Resource.to_json)"),
    ("admission", "reference compares (_admission)"),
    ("txn", "store txn (Store.txn)"),
]


@contextmanager
def _timers(store: st.Store, acc: dict[str, float]) -> Iterator[None]:
    """Wrap each phase with a timer adding to ``acc[phase]``; everything restored after."""

    def timing(phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def w(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                acc[phase] += time.perf_counter() - t

        return w

    saved = [
        (_registry.Registry, "_prepare_creates", "prepare", _registry.Registry.__dict__["_prepare_creates"]),
        (_meta.Resource, "to_json", "to_json", _meta.Resource.__dict__["to_json"]),
        (_registry.Registry, "_admission", "admission", _registry.Registry.__dict__["_admission"]),
    ]
    for owner, name, phase, fn in saved:
        setattr(owner, name, timing(phase, fn))
    checks = list(_registry.ADMISSION_CHECKS)
    _registry.ADMISSION_CHECKS[:] = [timing("checks", c) for c in checks]
    store.txn = timing("txn", store.txn)  # type: ignore[method-assign]
    # A store without its own txn_with_entries (etcd) runs Store's, which calls the timed
    # txn above: timing it too would count its transactions twice.
    own_entries = type(store).txn_with_entries is not st.Store.txn_with_entries
    if own_entries:
        store.txn_with_entries = timing("txn", store.txn_with_entries)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for owner, name, _, fn in saved:
            setattr(owner, name, fn)
        _registry.ADMISSION_CHECKS[:] = checks
        del store.txn
        if own_entries:
            del store.txn_with_entries
        acc["prepare"] -= acc["to_json"]  # to_json runs inside _prepare_creates


@contextmanager
def _gc_clock(acc: dict[str, float]) -> Iterator[None]:
    start = [0.0]

    def cb(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            start[0] = time.perf_counter()
        else:
            acc["gc"] += time.perf_counter() - start[0]
            acc["gc_collections"] += 1

    gc.callbacks.append(cb)
    try:
        yield
    finally:
        gc.callbacks.remove(cb)


def _run_backend(ctx: Context, res: Result, target: StoreTarget, n: int) -> None:
    b = target.backend
    store = st.open_store(target.url)
    try:
        reg = _registry.Registry(store)
        ns = "default" if not target.shared else f"bench-split-{time.monotonic_ns() % 10**8}"
        reg.create(App(metadata={"name": "hello", "namespace": ns}, spec={"command": "/bin/true", "parameters": {"x": {"required": False}}}))
        gc_acc = {"gc": 0.0, "gc_collections": 0.0}
        with _gc_clock(gc_acc):
            t0 = time.perf_counter()
            jobs = make_jobs(n, ns)
            construct = time.perf_counter() - t0
        construct_gc = gc_acc["gc"]
        acc = dict.fromkeys([p for p, _ in PHASES], 0.0)
        gc_acc = {"gc": 0.0, "gc_collections": 0.0}
        mgr = Job.objects.using(reg)
        ctx.log(f"{b}: bulk_create {n:,} jobs with phase timers")
        with _timers(store, acc), _gc_clock(gc_acc):
            t0, c0 = time.perf_counter(), time.process_time()
            for start in range(0, n, BULK_BATCH):
                mgr.bulk_create(jobs[start : start + BULK_BATCH])
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        del jobs
        us = 1e6 / n
        res.add("total", wall * us, "µs/job", "bulk_create, whole call (wall)", backend=b, baseline=True,
                jobs_per_s=n / wall, cpu_us_per_job=cpu * us)
        for phase, label in PHASES:
            res.add(phase, acc[phase] * us, "µs/job", label, backend=b, ratio_to="total", ratio_unit="of total")
        res.add("rest", (wall - sum(acc.values())) * us, "µs/job", "rest (client bulk_create around write)",
                backend=b, ratio_to="total", ratio_unit="of total")
        res.add("gc", gc_acc["gc"] * us, "µs/job", "GC (overlaps the phases above)", backend=b,
                ratio_to="total", ratio_unit="of total", collections=int(gc_acc["gc_collections"]))
        res.add("construct", construct * us, "µs/job", "caller's Job(...) construction (not in total)",
                backend=b, gc_us_per_job=construct_gc * us)
    finally:
        store.close()


def _plot(result: Result, fig: Any) -> None:
    ax = fig.subplots(1, 1)
    names = [p for p, _ in PHASES] + ["rest"]
    labels = [lbl for _, lbl in PHASES] + ["rest"]
    backends = result.backends
    colors = ["#3b75af", "#e1812c", "#519e3e", "#8d69b8", "#c53a32", "#d4a72c", "#999999"]
    for j, b in enumerate(backends):
        left = 0.0
        for i, n in enumerate(names):
            v = result.value(n, b) or 0.0
            ax.barh(j, v, left=left, color=colors[i], label=labels[i] if j == 0 else None)
            left += v
        gcv = result.value("gc", b) or 0.0
        ax.plot([gcv, gcv], [j - 0.4, j + 0.4], "k:", lw=1.5, label="GC time (overlaps)" if j == 0 else None)
    ax.set_yticks(range(len(backends)), backends)
    ax.set_xlabel("µs per job")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(f"bulk_create of {result.inputs.get('jobs', 0):,} jobs: where the time goes")


@scenario("bulk-split", help="bulk_create time per job split into model work, checks, ops, to_json, store txn",
          backends=("sqlite", "etcd"), default_backend="sqlite", plot=_plot, in_default_run=False)
def run_bulk_split(ctx: Context) -> Result:
    n = ctx.pick(tiny=200, small=10_000, default=100_000, large=300_000)
    res = Result("bulk-split", inputs={"jobs": n, "bulk_batch": BULK_BATCH,
                                       "timers": "perf_counter around each phase; gc.callbacks for GC"})
    ctx.per_backend(res, lambda target: _run_backend(ctx, res, target, n))
    return res
