"""Scenario ``chaos`` (issue 12): thousands of jobs through ``balsamctl up`` while random
``kill -9``s of the controller manager, node agents, ``up``, the manager with its runner and
whole process trees, SIGSTOPped agents, store outages and a full disk hit it (engine and fault
kinds: ``_chaos.py``; the disk is a tmpfs mounted for the run, as root only).

Figures per backend: jobs lost, overlapping runs of a job (marker files), extra runs and
those without a RUN_TIMEOUT in their history, tracebacks in the site's logs, store index
problems, job processes left alive after ``up`` stopped, the number of faults, and the
recovery after each fault (first job state change after the component restarts) — worst and
median, as a ratio to the **baseline** of the same run, the lease TTL (goal: ≤ 2 × TTL).
The seed is printed and recorded (``--size`` picks the rest; ``BALSAM_CHAOS_SEED`` fixes it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path

from store.testing import EtcdCluster, etcd_available

from ._chaos import FAULT_KINDS, ChaosConfig, EtcdMemberOutage, StoreOutage, run_chaos
from ._harness import Context, Result, StoreTarget, scenario
from ._up import site_parent

SEED_ENV = "BALSAM_CHAOS_SEED"


def config(ctx: Context) -> ChaosConfig:
    seed = int(os.environ[SEED_ENV]) if os.environ.get(SEED_ENV) else None
    return ctx.pick(
        tiny=ChaosConfig(jobs=30, chain=3, faults=1, kinds=("tree",), seed=seed if seed is not None else 12,
                         nodes=1, cpus=4, lease_ttl=3.0, gap=(0.5, 1.0), timeout=300.0),
        small=ChaosConfig(jobs=300, chain=10, faults=6, seed=seed, lease_ttl=3.0, gap=(1.0, 3.0)),
        default=ChaosConfig(jobs=2000, chain=20, faults=20, seed=seed, nodes=2, cpus=8, ticks=3,
                            lease_ttl=5.0, gap=(1.0, 3.0), timeout=2400.0),
        large=ChaosConfig(jobs=10000, chain=50, faults=40, seed=seed, nodes=4, cpus=16, ticks=5,
                          lease_ttl=5.0, gap=(2.0, 6.0), timeout=3600.0),
    )


@scenario("chaos", backends=("sqlite", "etcd"), default_backend="sqlite", in_default_run=False,
          help="jobs through up under random kill -9s and SIGSTOPs: lost, overlapping runs, recovery")
def chaos(ctx: Context) -> Result:
    cfg = config(ctx)
    result = Result("chaos", inputs={"jobs": cfg.jobs, "chain": cfg.chain, "faults": cfg.faults,
                                     "kinds": list(cfg.kinds), "nodes": cfg.nodes, "cpus": cfg.cpus,
                                     "job_seconds": cfg.ticks * 0.1, "long_every": cfg.long_every,
                                     "long_job_seconds": cfg.long_ticks * 0.1, "lease_ttl_s": cfg.lease_ttl})
    for backend in ctx.backends:
        kinds = cfg.kinds
        with contextlib.ExitStack() as stack:
            outage: StoreOutage | None = None
            if backend == "etcd" and not ctx.etcd_url and etcd_available():
                # An etcd member of the run's own, so that store outages can stop and start it
                # (as tests/chaos does); the harness's own etcd is not ours to stop.
                cluster = stack.enter_context(EtcdCluster.start(members=1, prefix="balsam-chaos-etcd."))
                target = StoreTarget("etcd", cluster.plain_url)
                outage = EtcdMemberOutage(cluster.members[0])
            else:
                target = stack.enter_context(ctx.fresh_store(backend))
            if backend == "etcd" and outage is None and "store" in kinds:
                kinds = tuple(k for k in kinds if k != "store")
                result.note("etcd: store outages left out (a shared etcd given by --etcd-url is not ours to stop; "
                            "tests/chaos covers them)")
            ns = f"chaos-{uuid.uuid4().hex[:8]}" if target.shared else "default"
            root = Path(tempfile.mkdtemp(prefix="balsam-chaos-", dir=site_parent()))
            markers = Path(tempfile.mkdtemp(prefix="balsam-chaos-markers-"))  # off the disk that is filled
            mounted = False
            try:
                if "disk" in kinds and os.geteuid() == 0:  # a small filesystem of its own to fill
                    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m,nr_inodes=200000,mode=0700", "tmpfs",
                                    str(root)], check=True)
                    mounted = True
                elif "disk" in kinds:
                    result.note(f"{backend}: disk faults skipped (mounting a tmpfs to fill needs root)")
                report = run_chaos(root / "site", target, replace(cfg, kinds=kinds), namespace=ns, log=ctx.log,
                                   markers=markers, outage=outage,
                                   disk=root if mounted else None)
            finally:
                if mounted:
                    subprocess.run(["umount", "-l", str(root)], check=False)
                shutil.rmtree(root, ignore_errors=True)
                shutil.rmtree(markers, ignore_errors=True)
        b = backend
        rec = report.recoveries
        result.add("lease_ttl", cfg.lease_ttl, "s", "lease TTL of agents and manager", backend=b, baseline=True)
        result.add("lost", len(report.lost) + len(report.failed), "jobs", "jobs lost or FAILED", backend=b,
                   target="<= 0")
        result.add("overlapping_runs", len(report.overlaps), "pairs", "runs of one job alive at once", backend=b,
                   target="<= 0")
        result.add("tracebacks", len(report.tracebacks), "", "Traceback lines in the site's logs", backend=b,
                   target="<= 0")
        result.add("faults", len(report.faults), "", "faults injected", backend=b,
                   target=f">= {min(20, cfg.faults)}")
        result.add("recovery_worst", max(rec) if rec else None, "s", "worst recovery after a fault", backend=b,
                   ratio_to="lease_ttl", ratio_unit="lease TTLs", target=f"<= {2 * cfg.lease_ttl:g}")
        result.add("recovery_median", statistics.median(rec) if rec else None, "s", "median recovery", backend=b,
                   ratio_to="lease_ttl", ratio_unit="lease TTLs")
        result.add("no_recovery", sum(1 for f in report.faults if f.recovery_s is None), "faults",
                   "faults with no job change seen after them", backend=b, target="<= 0")
        result.add("jobs_finished", report.finished, "jobs", f"JOB_FINISHED of {report.jobs}", backend=b)
        result.add("runs", report.runs, "runs", "runs recorded by marker files", backend=b)
        result.add("extra_runs", report.extra_runs, "runs", "runs beyond one per job", backend=b)
        result.add("extra_runs_without_timeout", len(report.unexplained_extra_runs), "jobs",
                   "jobs run again without a RUN_TIMEOUT in history", backend=b, target="<= 0")
        result.add("unrecorded_starts", len(report.unrecorded_starts), "jobs",
                   "jobs with a run no history entry records (agent killed before → RUNNING)", backend=b)
        result.add("index_problems", len(report.index_problems), "", "store index keys wrong or missing",
                   backend=b, target="<= 0")
        result.add("leftover_processes", len(report.leftover_processes), "", "job processes alive after up stopped",
                   backend=b, target="<= 0")
        result.add("restarts", report.restarts, "", "restarts of up", backend=b)
        result.add("elapsed", report.elapsed_s, "s", "wall time of the run", backend=b)
        result.series[f"{b}.faults"] = [f.to_dict() for f in report.faults]
        result.series[f"{b}.seed"] = report.seed
        result.series[f"{b}.spontaneous_restarts"] = report.spontaneous_restarts
        for p in report.problems():
            result.note(f"{b}: {p}")
        result.note(f"{b}: {report.summary()}")
    return result


__all__ = ["FAULT_KINDS", "chaos", "config"]
