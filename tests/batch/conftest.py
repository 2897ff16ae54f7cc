"""Fixtures of the batch suite: a site directory, a store, a controller manager running the
lifecycle, placement, batch and elastic-queue reconcilers, and (``slurm``) a real Slurm
cluster started by ``scripts/slurm-up`` for the session."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from apis import App, BatchJob, Job, JobState, Node, Registry, Site
from apis._config import SiteConfig
from controllers import ControllerManager
from controllers.batch.elastic import ElasticQueueReconciler
from controllers.batch.reconciler import BatchJobReconciler
from controllers.batch.testing import SlurmCluster, SlurmUpFailed
from controllers.dependency import DependencyReconciler
from controllers.hook import HookReconciler
from controllers.hooks import NoHooks
from controllers.placement.reconciler import PlacementReconciler
from tests._deadline import DEADLINE
from tests._support import poll_until, running_manager, skip_or_fail

REPO = Path(__file__).resolve().parents[2]
FINAL = (JobState.JOB_FINISHED, JobState.FAILED)


def make_site(registry: Registry, cfg: SiteConfig, scheduler: str = "local", **spec: Any) -> Site:
    return registry.create(Site(metadata={"name": cfg.name, "namespace": cfg.namespace},  # type: ignore[arg-type]
                                spec={"path": str(cfg.path), "scheduler": scheduler, **spec}))


def make_app(registry: Registry, name: str, command: str, **spec: Any) -> App:
    return registry.create(App(metadata={"name": name}, spec={"command": command, **spec}))  # type: ignore[arg-type]


def make_jobs(registry: Registry, app: str, names: Iterable[str], labels: dict[str, str] | None = None,
              **spec: Any) -> list[Job]:
    return registry.create_many([
        Job(metadata={"name": n, "labels": labels or {}}, spec={"app": app, "workdir": f"work/{n}", **spec})  # type: ignore[arg-type]
        for n in names
    ])


def make_batchjob(registry: Registry, name: str, nodes: int = 1, wall_time_min: float = 5, **spec: Any) -> BatchJob:
    return registry.create(BatchJob(metadata={"name": name},  # type: ignore[arg-type]
                                    spec={"numNodes": nodes, "wallTimeMin": wall_time_min, **spec}))


@dataclass
class Manager:
    mgr: ControllerManager
    thread: threading.Thread
    batch: BatchJobReconciler
    elastic: ElasticQueueReconciler


@pytest.fixture
def manager(registry: Registry, site: SiteConfig) -> Iterator[Manager]:
    """The controller manager (in a thread of this process) with the reconcilers a batch
    allocation needs; the node agents are real processes started by the batch scripts."""
    hooks = NoHooks()
    batch = BatchJobReconciler(poll_queued=0.5, poll_running=1.0, node_grace=5.0, max_backoff=4.0)
    elastic = ElasticQueueReconciler(min_interval=0.3)
    recs = [DependencyReconciler(hooks), HookReconciler(hooks), PlacementReconciler(), batch, elastic]
    with running_manager(registry, recs, lease_ttl=5, lead_timeout=DEADLINE, join_timeout=DEADLINE,
                         name="test-controller-manager") as (mgr, t):
        yield Manager(mgr, t, batch, elastic)
        # Cancel what is still allocated, so no agent outlives the test.
        for bj, _ in [(b, None) for b in registry.list(BatchJob)[0]]:
            if bj.status.state in ("queued", "running") and bj.metadata.deletion_timestamp is None:
                try:
                    registry.delete(BatchJob, bj.name)
                except Exception:  # noqa: BLE001 - best effort cleanup
                    pass
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            live = [b for b in registry.list(BatchJob)[0]
                    if b.status.state in ("queued", "running", "pending_deletion")]
            if not live and not registry.list(Node)[0]:
                break
            time.sleep(0.2)
    kill_agents(site.path)  # a test that broke an allocation on purpose may leave some


def agent_pids(site_path: Path) -> list[int]:
    """Node agents of this test's site still running (started by its batch scripts)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"nodeagent" in argv and str(site_path).encode() in argv:
            pids.append(int(proc.name))
    return pids


def kill_agents(site_path: Path) -> None:
    for pid in agent_pids(site_path):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_until(pred: Callable[[], Any], timeout: float = DEADLINE, what: str = "condition",
               interval: float = 0.05) -> Any:
    return poll_until(pred, timeout, what, interval)


def batchjob(registry: Registry, name: str) -> BatchJob | None:
    return registry.try_get(BatchJob, name)


def wait_batchjob(registry: Registry, name: str, states: Iterable[str], timeout: float = DEADLINE) -> BatchJob:
    want = set(states)
    last: list[BatchJob | None] = [None]

    def check() -> BatchJob | None:
        last[0] = b = registry.try_get(BatchJob, name)
        return b if b is not None and b.status.state in want else None

    try:
        return wait_until(check, timeout, f"batchjob {name} to reach {sorted(want)}")
    except pytest.fail.Exception:
        b = last[0]
        raise AssertionError(f"batchjob {name} is {b.status.state if b else 'gone'}: "
                             f"{b.status.message if b else ''} {b.status.conditions if b else ''}") from None


def jobs_in(registry: Registry, names: Iterable[str]) -> dict[str, JobState]:
    return {j.name: j.status.state for j in registry.get_many(Job, list(names)) if j is not None}


def wait_jobs(registry: Registry, names: list[str], states: Iterable[JobState] = FINAL,
              timeout: float = DEADLINE) -> list[Job]:
    want = set(states)

    def check() -> list[Job] | None:
        got = registry.get_many(Job, names)
        return [j for j in got if j is not None] if all(j is not None and j.status.state in want for j in got) else None

    try:
        return wait_until(check, timeout, f"jobs {names[:3]}... to reach {sorted(s.value for s in want)}")
    except pytest.fail.Exception:
        raise AssertionError(f"jobs not done: {jobs_in(registry, names)}") from None


# --- a real Slurm -------------------------------------------------------------------------


@dataclass
class Slurm:
    conf: str
    dir: Path
    nodes: int
    cpus: int

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": self.conf}

    def squeue(self, *args: str) -> str:
        return subprocess.run(["squeue", "-h", *args], env={**os.environ, **self.env}, capture_output=True,
                              text=True, timeout=30).stdout

    def state(self, job_id: str) -> str:
        return self.squeue("-t", "all", "-j", job_id, "-o", "%T").strip()


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slurm]:
    """A 4-node (n1..n4, 2 CPUs each) Slurm 22.05 on 127.0.0.1 for the session, started by
    scripts/slurm-up and stopped by scripts/slurm-down. SLURM_CONF is exported for the
    scheduler plugin and everything it starts. Skipped only when the daemons cannot start
    (not installed, not root), and never under CI."""
    if not shutil.which("slurmctld") or not shutil.which("sbatch") or not shutil.which("munged"):
        skip_or_fail("Slurm is not installed (apt-get install slurm-wlm munge; see scripts/install)")
    if os.geteuid() != 0:
        skip_or_fail("the Slurm daemons need root")
    try:
        cluster = SlurmCluster.start(Path(f"/tmp/balsam-slurm-test-{uuid.uuid4().hex[:8]}"), nodes=4, cpus=2)
    except SlurmUpFailed as e:
        skip_or_fail(str(e))
    with cluster:
        yield Slurm(cluster.conf, cluster.dir, cluster.nodes, cluster.cpus)
