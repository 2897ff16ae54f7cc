"""BatchJobs on a ``scheduler: pbs`` site, against the PBS emulator (tests/batch/pbs_emulator:
``qsub``/``qstat``/``qselect``/``qdel`` and PALS ``mpiexec`` first on PATH, a job table on disk,
PBS Pro's output formats; the batch script really runs here, its node agents really run the
jobs). PBS Pro itself cannot be installed on this machine: nothing here ran against it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from apis import BatchJob, ElasticQueue, Job, JobState, Node, Registry, Site, get_condition
from apis._config import SiteConfig
from controllers.batch.pbs import PBSScheduler
from controllers.batch.scheduler import SchedulerError, SubmitRequest
from tests._deadline import DEADLINE

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
EMULATOR = Path(__file__).resolve().parent / "pbs_emulator"
NODES = ["x3005c0s7b0n0", "x3005c0s13b0n0", "x3005c0s19b0n0", "x3005c0s25b0n0"]


@dataclass
class Pbs:
    home: Path

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=60)

    def job(self, job_id: str) -> dict[str, Any]:
        """The job as ``qstat -x -f -F json`` prints it."""
        res = self.run("qstat", "-x", "-f", "-F", "json", job_id)
        assert res.returncode == 0, res.stderr
        return next(iter(json.loads(res.stdout.replace("\\", "\\\\"))["Jobs"].values()))

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in (self.home / "jobs").glob("*.json")]


def _kill(pid: int | None, group: bool) -> None:
    if not pid:
        return
    try:
        (os.killpg if group else os.kill)(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture
def pbs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Pbs]:
    """The emulator on PATH with queues debug (2 nodes, 1 h) and prod (4 nodes) and four
    Polaris-named nodes; a 2 s kill_delay. Whatever is left of its jobs is killed after."""
    home = tmp_path / "pbs"
    home.mkdir()
    (home / "queues.json").write_text(json.dumps({"debug": {"max_nodes": 2, "max_walltime": 3600},
                                                  "prod": {"max_nodes": 4, "max_walltime": 86400}}))
    (home / "nodes.json").write_text(json.dumps(NODES))
    monkeypatch.setenv("PBS_EMULATOR_HOME", str(home))
    monkeypatch.setenv("PBS_EMULATOR_KILL_DELAY", "2")
    monkeypatch.setenv("PATH", f"{EMULATOR / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("PBS_EMULATOR_QSUB_FAIL", raising=False)
    monkeypatch.delenv("PBS_EMULATOR_QSTAT_FAULT", raising=False)
    emu = Pbs(home)
    yield emu
    for rec in emu.records():
        if rec.get("state") != "F":
            _kill(rec.get("session_id"), group=True)
            _kill(rec.get("runner_pid"), group=False)


def submit_request(tmp_path: Path, script: str, name: str = "t", **kw: Any) -> SubmitRequest:
    path = tmp_path / f"{name}.sh"
    path.write_text(script)
    return SubmitRequest(**{"job_name": name, "script": path, "output": tmp_path / f"{name}.out",
                            "num_nodes": 1, "wall_time_min": 5, **kw})


# --- the plugin against the emulator ------------------------------------------------------------


def test_submit_runs_the_script_with_the_pbs_environment_and_ends_with_its_exit_status(
        pbs: Pbs, tmp_path: Path) -> None:
    plugin = PBSScheduler(system="polaris", filesystems="home:eagle")
    req = submit_request(tmp_path, '#!/bin/bash\ncat "$PBS_NODEFILE"; echo "id=$PBS_JOBID q=$PBS_QUEUE"; exit 3\n',
                         num_nodes=2, queue="debug", project="datascience")
    sid = plugin.submit(req)
    assert sid.endswith(".pbs-emu")
    assert plugin.submit(req) == sid  # the same name again (job history included): no second job
    done = wait_until(lambda: (i := plugin.status([sid]).get(sid)) and i.phase == "finished" and i, DEADLINE,
                      "the job to finish")
    assert (done.state, done.exit_code) == ("FAILED", "3")
    assert done.start_time is not None and done.end_time is not None
    out = (tmp_path / "t.out").read_text().splitlines()
    assert out == NODES[:2] + [f"id={sid} q=debug"]
    attrs = pbs.job(sid)
    assert attrs["Resource_List"]["select"] == "2:system=polaris"
    assert attrs["Resource_List"]["filesystems"] == "home:eagle" and attrs["project"] == "datascience"
    assert len(pbs.records()) == 1


def test_status_asks_the_history_only_for_finished_jobs_and_leaves_unknown_ones_out(
        pbs: Pbs, tmp_path: Path) -> None:
    plugin = PBSScheduler()
    ok = plugin.submit(submit_request(tmp_path, "#!/bin/bash\ntrue\n", "ok"))
    long = plugin.submit(submit_request(tmp_path, "#!/bin/bash\nexec sleep 60\n", "long"))
    wait_until(lambda: plugin.status([ok])[ok].phase == "finished", DEADLINE, "ok to finish")
    wait_until(lambda: plugin.status([long])[long].phase == "running", DEADLINE, "long to run")
    plain = pbs.run("qstat", "-f", "-F", "json", ok)
    assert plain.returncode == 35 and "Job has finished, use -x" in plain.stderr
    got = plugin.status([ok, long, "99999.pbs-emu"])
    assert set(got) == {ok, long}  # 99999 is vanished: PBS does not know it
    assert (got[ok].state, got[ok].exit_code) == ("COMPLETED", "0")
    assert (got[long].phase, got[long].state) == ("running", "R")
    plugin.cancel(long)
    ended = wait_until(lambda: (i := plugin.status([long])[long]).phase == "finished" and i, DEADLINE, "long to end")
    assert (ended.state, ended.exit_code) == ("CANCELLED", "271")
    plugin.cancel(long)  # finished already: not an error
    plugin.cancel("99999.pbs-emu")  # unknown: not an error


def test_qsub_refusals_keep_pbs_own_words(pbs: Pbs, tmp_path: Path) -> None:
    plugin = PBSScheduler()
    with pytest.raises(SchedulerError) as e:
        plugin.submit(submit_request(tmp_path, "#!/bin/bash\n", queue="nosuch"))
    assert (e.value.kind, e.value.message) == ("rejected", "qsub: Unknown queue")
    with pytest.raises(SchedulerError) as e:
        plugin.submit(submit_request(tmp_path, "#!/bin/bash\n", "big", queue="debug", num_nodes=3))
    assert (e.value.kind, e.value.message) == ("rejected", "qsub: Job exceeds queue resource limits")
    assert [p.name for p in plugin.partitions()] == ["debug", "prod"]


def test_without_pbs_installed_every_call_is_a_failed_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SchedulerError) as e:
        PBSScheduler().status(["1.s"])
    assert e.value.kind == "failed" and "qstat: cannot run" in e.value.message


# --- BatchJobs through the controller manager ---------------------------------------------------


def test_pbs_batchjob_queues_runs_its_jobs_on_the_nodefile_nodes_and_qdel_ends_it(
        pbs: Pbs, registry: Registry, site: SiteConfig, manager: Manager) -> None:
    make_site(registry, site, "pbs", nodeDefaults={"cpus": 2},
              pbs={"system": "polaris", "place": "scatter", "filesystems": "home:grand:eagle"})
    make_app(registry, "hello", "echo hello from $BALSAM_JOB_ID on $(hostname)")
    names = [f"j{i}" for i in range(4)]
    make_jobs(registry, "hello", names)
    make_batchjob(registry, "first", nodes=3, wall_time_min=30, queue="prod", project="datascience")
    first = wait_batchjob(registry, "first", ["running"], timeout=DEADLINE)
    assert first.status.scheduler_state == "R"
    nodes = wait_until(lambda: len(ns := [n for n in registry.list(Node)[0] if n.spec.batch_job == "first"]) == 3
                       and ns, DEADLINE, "one Node per line of PBS_NODEFILE")
    assert sorted(n.spec.hostname for n in nodes) == sorted(NODES[:3])
    assert sorted(n.name for n in nodes) == sorted(f"first-{h}" for h in NODES[:3])
    done = wait_jobs(registry, names, timeout=DEADLINE)
    assert {j.status.state for j in done} == {S.JOB_FINISHED}
    assert {j.status.placement.batch_job for j in done if j.status.placement} == {"first"}
    sid = first.status.scheduler_id or ""
    attrs = pbs.job(sid)
    assert attrs["Resource_List"]["select"] == "3:system=polaris" and attrs["queue"] == "prod"
    assert attrs["Resource_List"]["filesystems"] == "home:grand:eagle" and attrs["project"] == "datascience"

    # Two more nodes than are free: queued, with PBS's comment, until the first one goes.
    make_batchjob(registry, "second", nodes=2, wall_time_min=30, queue="debug")
    second = wait_until(lambda: (b := registry.try_get(BatchJob, "second")) and b.status.scheduler_state == "Q"
                        and b, DEADLINE, "second to be queued in PBS")
    assert second.status.state == "queued" and "Not Running" in second.status.message
    registry.delete(BatchJob, "first")  # finalizer: the reconciler runs qdel
    wait_until(lambda: registry.try_get(BatchJob, "first") is None, DEADLINE, "first to go")
    gone = wait_until(lambda: (a := pbs.job(sid))["job_state"] == "F" and a, DEADLINE, "PBS to end the deleted job")
    assert gone["Exit_status"] == 271  # 256 + SIGTERM: qdel of a running job
    wait_batchjob(registry, "second", ["running"], timeout=DEADLINE)
    wait_until(lambda: {n.spec.batch_job for n in registry.list(Node)[0]} == {"second"}, DEADLINE,
               "first's agents to end and second's to register")
    registry.delete(BatchJob, "second")
    wait_until(lambda: registry.try_get(BatchJob, "second") is None, DEADLINE, "second to go")
    wait_until(lambda: not agent_pids(site.path), DEADLINE, "every agent to end")


def test_walltime_ends_the_allocation_and_the_elastic_queue_runs_the_rest_in_the_next_one(
        pbs: Pbs, registry: Registry, site: SiteConfig, manager: Manager) -> None:
    make_site(registry, site, "pbs", nodeDefaults={"cpus": 2}, pbs={"system": "polaris"})
    # First attempt leaves a mark and outlives the allocation; the second finishes at once.
    make_app(registry, "twice", "if [ -e mark ]; then echo second; else touch mark; exec sleep 120; fi")
    names = ["a", "b"]
    make_jobs(registry, "twice", names, resources={"nodePackingCount": 2})
    # walltime=0:00:24: time for the agent to start and both jobs to run on a busy machine
    make_batchjob(registry, "short", nodes=1, wall_time_min=0.4, queue="debug")
    wait_until(lambda: all(j.status.state is S.RUNNING for j in registry.get_many(Job, names) if j), DEADLINE,
               "both jobs running")
    ended = wait_batchjob(registry, "short", ["finished"], timeout=DEADLINE)
    assert ended.status.scheduler_state == "TIMEOUT"
    assert "Exit_status -29: job killed: walltime" in ended.status.message
    assert pbs.job(ended.status.scheduler_id or "")["Resource_List"]["walltime"] == "00:00:24"
    # The agents got SIGTERM from PBS: their jobs timed out and wait for another allocation,
    wait_until(lambda: all(j.status.state is S.RESTART_READY for j in registry.get_many(Job, names) if j), DEADLINE,
               "jobs requeued")
    # which the elastic queue asks PBS for.
    current = registry.get(Site, site.name)
    registry.update(current, current.model_copy(update={"spec": current.spec.model_copy(update={
        "elastic_queue": ElasticQueue.model_validate({"minNodes": 1, "maxNodes": 1, "queue": "debug"})})}))
    done = wait_jobs(registry, names, timeout=DEADLINE)
    for j in done:
        assert j.status.state is S.JOB_FINISHED, (j.name, j.status.message)
        moves = [h.to_state for h in j.status.history]
        assert S.RUN_TIMEOUT in moves and moves.count(S.RUNNING) == 2
        assert j.status.placement is not None and j.status.placement.batch_job != "short"
        assert (site.data_path / "work" / j.name / "job.out").read_text().strip() == "second"
    [elastic] = [b for b in registry.list(BatchJob)[0] if b.name != "short"]
    assert elastic.metadata.labels.get("balsam.io/elastic-queue") == site.name
    assert pbs.job(elastic.status.scheduler_id or "")["queue"] == "debug"


def test_a_refused_qsub_shows_pbs_message_as_a_condition(
        pbs: Pbs, registry: Registry, site: SiteConfig, manager: Manager, monkeypatch: pytest.MonkeyPatch) -> None:
    make_site(registry, site, "pbs")
    make_batchjob(registry, "wrong", nodes=1, queue="nosuch")
    bj = wait_batchjob(registry, "wrong", ["submit_failed"], timeout=DEADLINE)
    cond = get_condition(bj.status.conditions, "SchedulerError")
    assert cond is not None and cond.reason == "SubmitRejected" and cond.message == "qsub: Unknown queue"
    assert bj.status.message == "qsub: Unknown queue"

    # A server that does not answer: the condition says so in PBS's words, and it is retried.
    monkeypatch.setenv("PBS_EMULATOR_QSUB_FAIL", "Connection refused")
    make_batchjob(registry, "later", nodes=1, queue="debug")
    wait_until(lambda: (b := registry.try_get(BatchJob, "later"))
               and (c := get_condition(b.status.conditions, "SchedulerError"))
               and c.message.startswith("qsub: Connection refused") and c.reason == "SchedulerCommandFailed",
               DEADLINE, "the condition with qsub's message")
    assert registry.get(BatchJob, "later").status.state == "pending_submission"
    monkeypatch.delenv("PBS_EMULATOR_QSUB_FAIL")
    ok = wait_batchjob(registry, "later", ["queued", "running"], timeout=DEADLINE)
    assert get_condition(ok.status.conditions, "SchedulerError") is None


def test_a_qstat_that_prints_garbage_or_hangs_is_a_condition_and_the_reconciler_carries_on(
        pbs: Pbs, registry: Registry, site: SiteConfig, manager: Manager, monkeypatch: pytest.MonkeyPatch) -> None:
    make_site(registry, site, "pbs", nodeDefaults={"cpus": 1})
    make_batchjob(registry, "alloc", nodes=1, queue="debug")
    wait_batchjob(registry, "alloc", ["running"], timeout=DEADLINE)

    def condition(reason: str, text: str) -> Any:
        b = registry.try_get(BatchJob, "alloc")
        c = get_condition(b.status.conditions, "SchedulerError") if b else None
        return c if c is not None and c.reason == reason and text in c.message else None

    monkeypatch.setenv("PBS_EMULATOR_QSTAT_FAULT", "qstat: cannot connect to server pbs-emu (errno=15010)")
    wait_until(lambda: condition("SchedulerGarbage", "qstat printed something that is not JSON"), DEADLINE,
               "the garbage condition")
    monkeypatch.setenv("BALSAM_SCHEDULER_TIMEOUT", "1")
    monkeypatch.setenv("PBS_EMULATOR_QSTAT_FAULT", "hang")
    wait_until(lambda: condition("SchedulerTimeout", "qstat did not answer within 1s"), DEADLINE, "the timeout condition")
    monkeypatch.delenv("PBS_EMULATOR_QSTAT_FAULT")
    monkeypatch.delenv("BALSAM_SCHEDULER_TIMEOUT")  # a second may not be enough for a qstat of a busy machine
    wait_until(lambda: (b := registry.try_get(BatchJob, "alloc")) and b.status.state == "running"
               and get_condition(b.status.conditions, "SchedulerError") is None, DEADLINE, "the condition to clear")
    assert manager.thread.is_alive()
