"""BatchJobs on the ``local`` scheduler: the allocation is node agents started as processes
here, by the same reconciler and the same kind of batch script as on Slurm."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from apis import BatchJob, Job, JobState, Node, Registry
from apis._config import SiteConfig
from controllers.batch.reconciler import BatchJobReconciler
from controllers.dependency import DependencyReconciler
from controllers.hook import HookReconciler
from controllers.hooks import NoHooks
from controllers.placement.reconciler import PlacementReconciler
from tests._deadline import DEADLINE
from tests._support import running_manager

from .conftest import (
    Manager,
    agent_pids,
    make_app,
    make_batchjob,
    make_jobs,
    make_site,
    wait_batchjob,
    wait_jobs,
    wait_until,
)

S = JobState


def _pid_of(sid: str) -> int:
    return int(sid.split("-", 1)[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_local_batchjob_runs_jobs_on_its_own_nodes_then_delete_cancels_it(
        registry: Registry, site: SiteConfig, manager: Manager) -> None:
    make_site(registry, site, "local", nodeDefaults={"cpus": 2})
    make_app(registry, "hello", "echo hello from $BALSAM_JOB_ID")
    names = [f"j{i}" for i in range(6)]
    make_jobs(registry, "hello", names)
    make_batchjob(registry, "alloc", nodes=2, wall_time_min=5)
    bj = wait_batchjob(registry, "alloc", ["running"], timeout=DEADLINE)
    assert bj.status.scheduler_id and bj.status.scheduler_id.startswith("local-")
    assert "balsam.io/scheduler" in bj.metadata.finalizers
    nodes = wait_until(lambda: [n for n in registry.list(Node)[0] if n.spec.batch_job == "alloc"], DEADLINE,
                       "the allocation's nodes")
    assert {n.spec.cpus for n in nodes} == {2}
    done = wait_jobs(registry, names, timeout=DEADLINE)
    assert {j.status.state for j in done} == {S.JOB_FINISHED}
    assert {j.status.placement.batch_job for j in done if j.status.placement} == {"alloc"}
    script = (site.path / "batch" / "alloc.sh").read_text()
    assert "--batch-job alloc" in script

    pid = _pid_of(bj.status.scheduler_id)
    registry.delete(BatchJob, "alloc")  # finalizer: only marked, the reconciler cancels
    marked = registry.try_get(BatchJob, "alloc")
    assert marked is not None and marked.metadata.deletion_timestamp is not None
    wait_until(lambda: registry.try_get(BatchJob, "alloc") is None, DEADLINE, "the BatchJob to go")
    wait_until(lambda: not _alive(pid), DEADLINE, "the allocation's processes to end")
    wait_until(lambda: not registry.list(Node)[0], DEADLINE, "its Nodes to vanish")


def test_wall_time_ends_the_allocation_and_running_jobs_finish_in_the_next_one(
        registry: Registry, site: SiteConfig, manager: Manager) -> None:
    make_site(registry, site, "local", nodeDefaults={"cpus": 2})
    # First attempt leaves a mark and outlives the allocation; the second finishes at once.
    make_app(registry, "twice", "if [ -e mark ]; then echo second; else touch mark; exec sleep 120; fi")
    names = ["a", "b"]
    make_jobs(registry, "twice", names, resources={"nodePackingCount": 2})
    # 30 s (local honors seconds): time for the agent to start and both jobs to run on a loaded
    # machine (6 s was not: the allocation could end before either job ran).
    make_batchjob(registry, "short", nodes=1, wall_time_min=0.5)
    wait_until(lambda: all(j.status.state is S.RUNNING for j in registry.get_many(Job, names) if j), DEADLINE,
               "both jobs running")
    ended = wait_batchjob(registry, "short", ["finished"], timeout=DEADLINE)
    assert "TIMEOUT" in ended.status.message and ended.status.scheduler_state == "TIMEOUT"
    # Nothing stuck in RUNNING: the agent timed them out, the hook reconciler made them RESTART_READY.
    wait_until(lambda: all(j.status.state is S.RESTART_READY for j in registry.get_many(Job, names) if j), DEADLINE,
               "jobs requeued")
    make_batchjob(registry, "second", nodes=1, wall_time_min=5)
    done = wait_jobs(registry, names, timeout=DEADLINE)
    for j in done:
        assert j.status.state is S.JOB_FINISHED, (j.name, j.status.message)
        moves = [h.to_state for h in j.status.history]
        assert S.RUN_TIMEOUT in moves and moves.count(S.RUNNING) == 2
        assert j.status.placement is not None and j.status.placement.batch_job == "second"
        assert (site.data_path / "work" / j.name / "job.out").read_text().strip() == "second"


def test_allocation_killed_outright_is_reconciled_to_finished_and_its_jobs_requeued(
        registry: Registry, site: SiteConfig, manager: Manager) -> None:
    make_site(registry, site, "local", nodeDefaults={"cpus": 1})
    make_app(registry, "long", "exec sleep 120")
    make_jobs(registry, "long", ["x"])
    make_batchjob(registry, "doomed", nodes=1, wall_time_min=5)
    bj = wait_batchjob(registry, "doomed", ["running"], timeout=DEADLINE)
    wait_until(lambda: (j := registry.try_get(Job, "x")) and j.status.state is S.RUNNING, DEADLINE, "x running")
    runner = _pid_of(bj.status.scheduler_id or "")
    os.killpg(runner, signal.SIGKILL)  # the runner, and nothing else: its agents live on in their own group
    # The scheduler no longer knows the allocation: finished, with a message saying so ...
    gone = wait_batchjob(registry, "doomed", ["finished"], timeout=DEADLINE)
    assert "vanished" in gone.status.message and gone.status.scheduler_state is None
    # ... its agents, still alive, see that and stop (their job → RUN_TIMEOUT, requeued, not
    # stuck) instead of registering again each time the batch reconciler removes their Nodes.
    # (the agent's RUN_TIMEOUT, then the retry, then placement unbinding the vanished node:
    # three writers, so the state is polled for where it settles, not read as it passes)
    x = wait_until(lambda: (j := registry.try_get(Job, "x")) and j.status.state is not S.RUNNING and j, DEADLINE,
                   "x to leave RUNNING")
    assert x.status.state in (S.RUN_TIMEOUT, S.RESTART_READY), x.status.state
    wait_until(lambda: (j := registry.try_get(Job, "x")) and j.status.state is S.RESTART_READY
               and j.status.placement is None, DEADLINE, "x requeued and unbound")
    wait_until(lambda: not agent_pids(site.path), DEADLINE, "the agents to end by themselves")
    assert not registry.list(Node)[0]


def test_agents_stop_when_their_runner_dies_with_the_manager_and_the_next_manager_reconciles(
        registry: Registry, site: SiteConfig) -> None:
    make_site(registry, site, "local", nodeDefaults={"cpus": 1})
    make_app(registry, "long", "exec sleep 120")
    make_jobs(registry, "long", ["x"])

    def reconcilers() -> list[object]:
        hooks = NoHooks()
        return [DependencyReconciler(hooks), HookReconciler(hooks), PlacementReconciler(),
                BatchJobReconciler(poll_queued=0.5, poll_running=1.0, node_grace=5.0, max_backoff=4.0)]

    with running_manager(registry, reconcilers(), lease_ttl=5, lead_timeout=DEADLINE, join_timeout=DEADLINE):
        make_batchjob(registry, "orphaned", nodes=1, wall_time_min=5)
        bj = wait_batchjob(registry, "orphaned", ["running"], timeout=DEADLINE)
        wait_until(lambda: (j := registry.try_get(Job, "x")) and j.status.state is S.RUNNING, DEADLINE, "x running")
    # The controller manager is gone; now its allocation's runner dies outright too.
    os.killpg(_pid_of(bj.status.scheduler_id or ""), signal.SIGKILL)
    # Nobody is left to cancel the allocation: its agents see their runner gone and stop,
    # their running job → RUN_TIMEOUT (written by the agent itself).
    wait_until(lambda: not agent_pids(site.path), DEADLINE, "the agents to end by themselves")
    x = registry.get(Job, "x")
    assert x.status.state is S.RUN_TIMEOUT and "allocation runner" in x.status.message, x.status
    assert registry.get(BatchJob, "orphaned").status.state == "running"  # what nobody could record
    # The next controller manager reconciles the BatchJob's real state.
    with running_manager(registry, reconcilers(), lease_ttl=5, lead_timeout=DEADLINE, join_timeout=DEADLINE):
        gone = wait_batchjob(registry, "orphaned", ["finished"], timeout=DEADLINE)
        assert "vanished" in gone.status.message
        wait_until(lambda: (j := registry.try_get(Job, "x")) and j.status.state is S.RESTART_READY, DEADLINE,
                   "x requeued")
