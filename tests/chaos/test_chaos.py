"""Fault injection (marker ``chaos``): a few hundred jobs and a chain through ``balsamctl up``
while every component is killed outright in turn — controller manager, a node agent, ``up``,
the manager with its allocation's runner, every process of the site at once (the jobs
excepted: orphans) — an agent is SIGSTOPped, the store goes away (an etcd member of the
test's own stopped and started again; on SQLite another process holding its write lock) and
the site's disk (a small tmpfs holding the site and a SQLite store) is filled; on SQLite and
on etcd.

Asserts what must hold whatever the timing: every job JOB_FINISHED, none lost or FAILED, no
two runs of a job alive at the same time (each run's marker lines), extra runs only with a
RUN_TIMEOUT in the job's history (or a start its agent never recorded: killed between the
spawn and the ``→ RUNNING`` write, the job is only unbound — reported, allowed), no traceback in any log, the store's indexes matching its
objects, no job process left behind, ``up`` riding out the store outage and the full disk,
and the site moving again after every fault. No duration is asserted (recovery times are
``python -m bench chaos``'s). The seed is printed; ``BALSAM_CHAOS_SEED=N`` replays a run.
"""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path

import pytest

from bench._chaos import (
    FAULT_KINDS,
    ChaosConfig,
    EtcdMemberOutage,
    Run,
    StoreOutage,
    overlapping,
    read_runs,
    run_chaos,
)
from bench._harness import StoreTarget
from store.testing import EtcdCluster, etcd_available
from tests._fulldisk import small_tmpfs
from tests._support import skip_or_fail

pytestmark = pytest.mark.chaos

BACKENDS = [pytest.param("sqlite", id="sqlite"), pytest.param("etcd", id="etcd", marks=pytest.mark.etcd)]


def _seed() -> int:
    env = os.environ.get("BALSAM_CHAOS_SEED")
    return int(env) if env else random.SystemRandom().randrange(1 << 30)


@pytest.mark.timeout(1200)  # a whole site restarted six times, two outages; minutes on a busy 2-core machine
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_fault_kind_loses_nothing_and_never_runs_a_job_twice_at_once(backend: str, tmp_path: Path) -> None:
    _run_and_check(backend, tmp_path, FAULT_KINDS)


@pytest.mark.etcd
@pytest.mark.timeout(900)
def test_an_etcd_outage_longer_than_the_store_timeout_is_ridden_out(tmp_path: Path) -> None:
    _run_and_check("etcd", tmp_path, ("store", "store"), timeout=300.0)


def _run_and_check(backend: str, tmp_path: Path, kinds: tuple[str, ...], timeout: float = 600.0) -> None:
    seed = _seed()
    print(f"chaos seed {seed} (replay: BALSAM_CHAOS_SEED={seed})")
    cfg = ChaosConfig(jobs=120, chain=6, faults=len(kinds), kinds=kinds, seed=seed, nodes=2, cpus=4,
                      ticks=2, long_every=10, long_ticks=40, lease_ttl=4.0, gap=(0.5, 1.5), timeout=timeout,
                      outage=(6.0, 10.0), backlog=40)
    with contextlib.ExitStack() as stack:
        # The site (and a SQLite store) on a filesystem of its own, to be filled; the
        # markers (the verdict's evidence) off it.
        disk = stack.enter_context(small_tmpfs(tmp_path / "disk", size="96m", inodes=30000))
        outage: StoreOutage | None = None
        if backend == "sqlite":
            target = StoreTarget("sqlite", f"sqlite:///{disk / 'store.db'}", path=disk / "store.db")
        else:
            if not etcd_available():
                skip_or_fail("etcd is not installed")
            # A member of the test's own: the session's shared one must not go away.
            cluster = stack.enter_context(EtcdCluster.start(members=1, prefix="balsam-chaos-etcd."))
            target, outage = StoreTarget("etcd", cluster.plain_url), EtcdMemberOutage(cluster.members[0])
        report = run_chaos(disk / "site", target, cfg, markers=tmp_path / "markers", outage=outage, disk=disk)
    print(report.summary())
    assert sorted(f.kind for f in report.faults) == sorted(kinds), report.summary()
    assert [f.note for f in report.faults if f.note.startswith("skipped")] == []
    assert report.lost == [] and report.failed == [], report.summary()
    assert report.finished == report.jobs >= cfg.jobs + cfg.chain
    assert report.overlaps == [], report.overlaps
    assert report.unexplained_extra_runs == [], report.unexplained_extra_runs
    assert report.tracebacks == [], report.tracebacks
    assert report.index_problems == [], report.index_problems
    assert report.leftover_processes == []
    assert report.outage_exits == [], "up did not ride out an outage"
    assert [f.kind for f in report.faults if f.recovery_s is None] == [], "the site did not move after a fault"


def test_marker_runs_and_overlap_detection(tmp_path: Path) -> None:
    """What the suite's verdict rests on: runs read from a marker, and overlap found."""
    marker = tmp_path / "marker"
    marker.write_text("start 10 1.0\ntick 10 1.1\nstart 11 1.05\ntick 11 1.2\nend 11 1.3\nstart 12 1.4\ntick 12\n")
    runs = read_runs(marker)
    assert [(r.pid, r.start, r.last, r.ended) for r in runs] == [
        ("10", 1.0, 1.1, False), ("11", 1.05, 1.3, True), ("12", 1.4, 1.4, False)]
    found = overlapping(runs)
    assert len(found) == 1 and "run 11 started at 1.050 while run 10 was alive until 1.100" in found[0]
    assert overlapping([Run("1", 0.0, 1.0, True), Run("2", 1.5, 2.0, True)]) == []
