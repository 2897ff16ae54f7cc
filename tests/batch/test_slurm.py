"""BatchJobs on a real Slurm 22.05 (4 nodes on 127.0.0.1, started by scripts/slurm-up): the
allocation's node agents run the jobs; deleting, scancel, the time limit and a broken
``squeue`` all end in a state the user can see, with no job lost or stuck in RUNNING."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from apis import BatchJob, ElasticQueue, Job, JobState, Node, Registry, Site, get_condition
from apis._config import SiteConfig
from controllers.batch.elastic import LABEL
from controllers.batch.scheduler import SchedulerError, SubmitRequest
from controllers.batch.slurm import SlurmScheduler
from tests._deadline import DEADLINE

from .conftest import (
    Manager,
    Slurm,
    make_app,
    make_batchjob,
    make_jobs,
    make_site,
    wait_batchjob,
    wait_jobs,
    wait_until,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
S = JobState


def _nodes_of(registry: Registry, bj: str) -> list[Node]:
    return [n for n in registry.list(Node)[0] if n.spec.batch_job == bj]


def test_batchjob_runs_jobs_in_a_slurm_allocation_and_ends_with_it(
        registry: Registry, site: SiteConfig, manager: Manager, slurm: Slurm) -> None:
    make_site(registry, site, "slurm", nodeDefaults={"cpus": 2})
    make_app(registry, "hello", "echo hello from $BALSAM_JOB_ID on $SLURMD_NODENAME")
    names = [f"j{i}" for i in range(8)]
    make_jobs(registry, "hello", names, resources={"nodePackingCount": 2})
    make_batchjob(registry, "alloc", nodes=2, wall_time_min=5)
    queued = wait_batchjob(registry, "alloc", ["queued", "running"], timeout=DEADLINE)
    sid = queued.status.scheduler_id
    assert sid and sid.isdigit()
    wait_batchjob(registry, "alloc", ["running"], timeout=DEADLINE)
    assert slurm.state(sid) == "RUNNING"
    nodes = wait_until(lambda: len(_nodes_of(registry, "alloc")) == 2 and _nodes_of(registry, "alloc"), DEADLINE,
                       "two Nodes of the allocation")
    assert sorted(n.name for n in nodes) == ["alloc-n1", "alloc-n2"]
    assert sorted(n.spec.hostname for n in nodes) == ["n1", "n2"]
    done = wait_jobs(registry, names, timeout=DEADLINE)
    assert {j.status.state for j in done} == {S.JOB_FINISHED}
    assert {j.status.placement.batch_job for j in done if j.status.placement} == {"alloc"}
    assert {j.status.placement.nodes[0] for j in done if j.status.placement} <= {"alloc-n1", "alloc-n2"}
    out = (site.data_path / "work" / "j0" / "job.out").read_text()
    assert out.startswith("hello from j0 on n")

    # scancel from outside: Slurm ends the allocation, the agents stop, the BatchJob is finished.
    subprocess.run(["scancel", sid], check=True, timeout=30)
    ended = wait_batchjob(registry, "alloc", ["finished"], timeout=DEADLINE)
    assert "CANCELLED" in ended.status.message and ended.status.end_time is not None
    wait_until(lambda: not _nodes_of(registry, "alloc"), DEADLINE, "the Nodes to go with the allocation")
    bj = wait_until(lambda: (b := registry.try_get(BatchJob, "alloc")) and not b.metadata.finalizers and b, DEADLINE,
                    "the finalizer to be dropped")
    assert bj.status.state == "finished"


def test_selector_keeps_unmatched_jobs_out_and_delete_cancels_in_slurm(
        registry: Registry, site: SiteConfig, manager: Manager, slurm: Slurm) -> None:
    make_site(registry, site, "slurm", nodeDefaults={"cpus": 2})
    make_app(registry, "hello", "echo hi")
    make_app(registry, "long", "exec sleep 300")
    make_jobs(registry, "hello", ["a1", "a2"], labels={"group": "a"}, resources={"nodePackingCount": 2})
    make_jobs(registry, "hello", ["b1"], labels={"group": "b"})
    make_jobs(registry, "long", ["a-long"], labels={"group": "a"}, resources={"nodePackingCount": 2})
    make_batchjob(registry, "only-a", nodes=1, wall_time_min=5, selector={"group": "a"})
    wait_jobs(registry, ["a1", "a2"], timeout=DEADLINE)
    wait_until(lambda: (j := registry.try_get(Job, "a-long")) and j.status.state is S.RUNNING, DEADLINE, "a-long running")
    # Every queue idle: placement has been through every event since a-long started, b1's too.
    assert manager.mgr.wait_idle(DEADLINE), "the reconcilers did not go idle"
    b1 = registry.get(Job, "b1")
    assert b1.status.state is S.PREPROCESSED and b1.status.placement is None

    sid = registry.get(BatchJob, "only-a").status.scheduler_id or ""
    from kubectl_like.cli import cli

    rc = cli.main(["delete", "batchjob", "only-a", "--site", str(site.path)], standalone_mode=False)
    assert rc == 0
    wait_until(lambda: registry.try_get(BatchJob, "only-a") is None, DEADLINE, "the BatchJob to be deleted")
    wait_until(lambda: slurm.state(sid) == "CANCELLED", DEADLINE, f"Slurm job {sid} CANCELLED")
    # The job that was running is not lost: timed out by its agent, ready for the next allocation.
    long = wait_until(lambda: (j := registry.try_get(Job, "a-long")) and j.status.state is S.RESTART_READY and j,
                      DEADLINE, "a-long requeued")
    assert S.RUN_TIMEOUT in [h.to_state for h in long.status.history]


def test_time_limit_ends_the_allocation_and_its_running_jobs_finish_in_the_next_one(
        registry: Registry, site: SiteConfig, manager: Manager, slurm: Slurm) -> None:
    """A real --time=1 allocation (Slurm checks limits about every 30 s: 60-90 s)."""
    make_site(registry, site, "slurm", nodeDefaults={"cpus": 2})
    make_app(registry, "twice", "if [ -e mark ]; then echo second; else touch mark; exec sleep 600; fi")
    names = ["t1", "t2"]
    make_jobs(registry, "twice", names, resources={"nodePackingCount": 2})
    make_batchjob(registry, "minute", nodes=1, wall_time_min=1)
    wait_until(lambda: all(j and j.status.state is S.RUNNING for j in registry.get_many(Job, names)), DEADLINE,
               "both jobs running")
    ended = wait_batchjob(registry, "minute", ["finished"], timeout=180)
    assert "TIMEOUT" in ended.status.message, ended.status.message
    # Slurm's KillWait, then the agents' lease TTL and the guardian's fencing may all lie between
    # the allocation's end and the requeue: a generous deadline, polled.
    wait_until(lambda: all(j and j.status.state is S.RESTART_READY for j in registry.get_many(Job, names)), 120,
               "jobs requeued, none stuck in RUNNING")
    make_batchjob(registry, "next", nodes=1, wall_time_min=5)
    for j in wait_jobs(registry, names, timeout=DEADLINE):
        assert j.status.state is S.JOB_FINISHED, j.status.message
        assert [h.to_state for h in j.status.history].count(S.RUNNING) == 2
        assert j.status.placement is not None and j.status.placement.batch_job == "next"


def test_elastic_queue_requests_what_the_backlog_needs_and_no_more(
        registry: Registry, site: SiteConfig, manager: Manager, slurm: Slurm) -> None:
    make_site(registry, site, "slurm", nodeDefaults={"cpus": 4})  # agents offer 4 CPUs per node
    make_app(registry, "work", "sleep 2")
    names = [f"e{i}" for i in range(10)]
    make_jobs(registry, "work", names, resources={"nodePackingCount": 4})  # 4 per node: 3 nodes
    wait_until(lambda: all(j and j.status.state is S.PREPROCESSED for j in registry.get_many(Job, names)), DEADLINE,
               "the backlog to be runnable")
    eq = ElasticQueue(min_nodes=1, max_nodes=4, min_wall_time_min=5, max_wall_time_min=10, wall_time_pad_min=1,
                      max_queued_jobs=1, max_queue_wait_min=10)
    registry.mutate(Site, site.name, lambda s: setattr(s.spec, "elastic_queue", eq))
    done = wait_jobs(registry, names, timeout=DEADLINE)
    assert {j.status.state for j in done} == {S.JOB_FINISHED}
    mine = [b for b in registry.list(BatchJob)[0] if b.metadata.labels.get(LABEL) == site.name]
    assert [b.spec.num_nodes for b in mine] == [3], [(b.name, b.spec.num_nodes) for b in mine]
    assert mine[0].spec.wall_time_min == 5 and mine[0].spec.site == site.name
    # The elastic queue looked again once the backlog was empty, and asked for nothing more.
    wait_until(lambda: "no runnable job" in manager.elastic.last_decision.get(site.name, ""), DEADLINE,
               "the elastic queue to find no runnable job")
    assert len([b for b in registry.list(BatchJob)[0] if b.metadata.labels.get(LABEL) == site.name]) == 1
    assert "no runnable job" in manager.elastic.last_decision[site.name]


BROKEN_SQUEUE = """#!/bin/bash
mode=$(cat "{mode}")
case "$mode" in
  fail) echo "squeue: error: slurm_load_jobs error: Unable to contact slurm controller" >&2; exit 1 ;;
  hang) exec sleep 60 ;;
  garbage) echo "<html><body>502 Bad Gateway</body></html>"; exit 0 ;;
  *) exec /usr/bin/squeue "$@" ;;
esac
"""


def test_broken_squeue_sets_a_condition_and_the_controller_keeps_going(
        registry: Registry, site: SiteConfig, manager: Manager, slurm: Slurm, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    bindir, mode = tmp_path / "bin", tmp_path / "squeue-mode"
    bindir.mkdir()
    mode.write_text("ok")
    (bindir / "squeue").write_text(BROKEN_SQUEUE.format(mode=mode))
    (bindir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    make_site(registry, site, "slurm", nodeDefaults={"cpus": 2})
    make_app(registry, "hello", "echo hi")
    make_batchjob(registry, "steady", nodes=1, wall_time_min=5)
    wait_batchjob(registry, "steady", ["running"], timeout=DEADLINE)

    def condition() -> tuple[str, str] | None:
        b = registry.try_get(BatchJob, "steady")
        c = get_condition(b.status.conditions, "SchedulerError") if b else None
        return (c.reason, c.message) if c is not None else None

    for broken, reason in (("fail", "SchedulerCommandFailed"), ("hang", "SchedulerTimeout"),
                           ("garbage", "SchedulerGarbage")):
        # A 2 s limit only while squeue hangs: a loaded machine's real (or failing) squeue may
        # take longer than that, and would read as a timeout.
        if broken == "hang":
            monkeypatch.setenv("BALSAM_SCHEDULER_TIMEOUT", "2")
        else:
            monkeypatch.delenv("BALSAM_SCHEDULER_TIMEOUT", raising=False)
        mode.write_text(broken)
        got = wait_until(lambda r=reason: (c := condition()) and c[0] == r and c, DEADLINE, f"condition {reason}")
        assert "retrying with backoff" in got[1]
        bj = registry.get(BatchJob, "steady")
        assert bj.status.state == "running", "a scheduler fault must not end the BatchJob"
        assert manager.thread.is_alive()
        # The rest of the control plane still works: a new job runs in the allocation.
        make_jobs(registry, "hello", [f"during-{broken}"], resources={"nodePackingCount": 2})
        wait_jobs(registry, [f"during-{broken}"], timeout=DEADLINE)

    mode.write_text("ok")
    wait_until(lambda: condition() is None, DEADLINE, "the condition to clear")
    assert registry.get(BatchJob, "steady").status.state == "running"


def test_slurm_plugin_submit_is_idempotent_status_is_one_call_and_rejects_are_permanent(
        slurm: Slurm, tmp_path: Path) -> None:
    plugin = SlurmScheduler(timeout=30)
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/bash\nexec sleep 60\n")
    req = SubmitRequest(job_name=f"balsam-plugin-{uuid.uuid4().hex[:8]}", script=script, output=tmp_path / "o.out",
                        num_nodes=1, wall_time_min=1)
    first = plugin.submit(req)
    assert plugin.submit(req) == first  # the same name is the same allocation, never a second one
    seen = plugin.status([first, "999999"])
    assert set(seen) == {first} and seen[first].phase in ("queued", "running")
    plugin.cancel(first)
    plugin.cancel("999999")  # unknown or finished: not an error
    done = wait_until(lambda: (i := plugin.status([first]).get(first)) and i.phase == "finished" and i, DEADLINE,
                      "the cancel to land")
    assert done.state == "CANCELLED"
    [debug] = plugin.partitions()
    assert (debug.name, debug.nodes, debug.cpus_per_node, debug.default) == ("debug", slurm.nodes, slurm.cpus, True)
    with pytest.raises(SchedulerError) as e:
        plugin.submit(SubmitRequest(job_name=f"{req.job_name}-big", script=script, output=tmp_path / "o.out",
                                    num_nodes=slurm.nodes + 1, wall_time_min=1))
    assert e.value.kind == "rejected" and e.value.permanent


def test_elastic_batchjob_that_waits_too_long_is_deleted_and_cancelled(
        registry: Registry, site: SiteConfig, manager: Manager, slurm: Slurm) -> None:
    make_site(registry, site, "slurm", nodeDefaults={"cpus": 2})
    make_app(registry, "hello", "echo hi")
    make_batchjob(registry, "hog", nodes=slurm.nodes, wall_time_min=5, selector={"pool": "hog"})
    wait_batchjob(registry, "hog", ["running"], timeout=DEADLINE)
    make_jobs(registry, "hello", ["q1", "q2"], labels={"pool": "eq"}, resources={"nodePackingCount": 2})
    eq = ElasticQueue(min_nodes=1, max_nodes=2, min_wall_time_min=5, max_wall_time_min=10, wall_time_pad_min=1,
                      max_queued_jobs=1, max_queue_wait_min=0.05, selector={"pool": "eq"})  # 3 s
    registry.mutate(Site, site.name, lambda s: setattr(s.spec, "elastic_queue", eq))

    def elastic() -> list[BatchJob]:
        return [b for b in registry.list(BatchJob)[0] if b.metadata.labels.get(LABEL) == site.name]

    # Queued once submitted; PENDING once the reconciler has looked at it in Slurm (a moment later).
    first = wait_until(lambda: [b for b in elastic() if b.status.state == "queued" and "PENDING" in b.status.message],
                       DEADLINE, "a queued elastic BatchJob seen pending in Slurm")[0]
    assert first.status.scheduler_state == "PENDING"
    assert first.spec.num_nodes == 1 and first.spec.selector == {"pool": "eq"}
    sid = first.status.scheduler_id or ""
    wait_until(lambda: registry.try_get(BatchJob, first.name) is None, DEADLINE, "the BatchJob that waited to be deleted")
    assert slurm.state(sid) == "CANCELLED"
    # The backlog is still there: the queue asks again, and once the nodes are free the jobs run.
    wait_until(lambda: [b for b in elastic() if b.name != first.name], DEADLINE, "a new request")
    registry.delete(BatchJob, "hog")
    done = wait_jobs(registry, ["q1", "q2"], timeout=DEADLINE)
    assert {j.status.state for j in done} == {S.JOB_FINISHED}
    assert {j.status.placement.batch_job for j in done if j.status.placement} != {"hog"}
