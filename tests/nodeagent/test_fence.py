"""At most one live run of a job: an agent's jobs die with it (kill -9) or before its lease
can expire (SIGSTOP); a re-run first fences an earlier run still alive on the host; an agent
whose supervisor (its allocation's runner) is gone stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import nodeagent._supervisor as supervisor_module
from apis import Job, JobState, Registry
from apis._config import SiteConfig
from nodeagent._fence import JOB_KEY_ENV, Guardian, process_start_ticks
from tests._deadline import DEADLINE

from .conftest import (
    AgentFactory,
    agent_process,
    bind,
    make_app,
    make_job,
    node_of,
    process_alive,
    read_pid,
    wait_state,
    wait_until,
)

S = JobState

# A job that says who it is, then runs until killed (its child ``sleep`` too).
LONG = "echo $$ > pid; sleep 300 & echo $! > child; wait"


def _workdir(site: SiteConfig, name: str) -> Path:
    return site.data_path / "work" / name


def test_kill_9_of_the_agent_kills_its_running_jobs_with_their_process_groups(registry: Registry,
                                                                              site: SiteConfig) -> None:
    make_app(registry, "long", LONG)
    job = make_job(registry, "long", "j1")
    with agent_process(registry, site, "--name", "n1", "--lease-ttl", "30") as proc:
        bind(registry, [job], ["n1"])
        pid = read_pid(_workdir(site, "j1") / "pid")
        child = read_pid(_workdir(site, "j1") / "child")
        assert process_alive(pid) and process_alive(child)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(DEADLINE)
        # Long before the 30 s lease expires: the guardian saw the agent go.
        wait_until(lambda: not process_alive(pid) and not process_alive(child), DEADLINE, "the orphaned job to die")
    assert node_of(registry, "n1") is not None  # its lease has not even expired yet


def test_a_stopped_agents_jobs_die_before_its_lease_expires_and_end_run_timeout(registry: Registry,
                                                                                site: SiteConfig) -> None:
    make_app(registry, "long", LONG)
    job = make_job(registry, "long", "j1")
    with agent_process(registry, site, "--name", "n1", "--lease-ttl", "3") as proc:
        bind(registry, [job], ["n1"])
        wait_state(registry, "j1", [S.RUNNING])
        pid = read_pid(_workdir(site, "j1") / "pid")
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            # The job dies while the Node is still there: no re-run could have been placed yet.
            # The fence leaves under a second between the kill and the lease's end, so the order
            # is checked without a window: the Node is read BEFORE the process, so a Node seen
            # gone beside a live job proves the wrong order whenever the test thread runs.
            deadline = time.monotonic() + DEADLINE
            while True:
                gone = node_of(registry, "n1") is None
                dead = not process_alive(pid)
                assert dead or not gone, "the Node vanished while the stopped agent's job still ran"
                if dead:
                    break
                assert time.monotonic() < deadline, "the stopped agent's job was not killed"
                time.sleep(0.02)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        done = wait_state(registry, "j1", [S.RUN_TIMEOUT, S.RUN_ERROR, S.JOB_FINISHED])
    assert done.status.state is S.RUN_TIMEOUT, done.status.message
    assert "lease was about to expire" in done.status.message


def test_a_re_run_first_kills_an_earlier_run_of_the_job_still_alive_on_the_host(registry: Registry,
                                                                                 site: SiteConfig,
                                                                                 agent: AgentFactory) -> None:
    # An orphan of a run whose agent and guardian were both killed: same job, same workdir.
    wd = _workdir(site, "j1")
    wd.mkdir(parents=True)
    (wd / "job.out").write_text("an earlier run\n")
    env = dict(os.environ, **{JOB_KEY_ENV: "default/j1", "BALSAM_SITE_PATH": str(site.path)})
    orphan = subprocess.Popen(["/bin/sh", "-c", "while :; do echo orphan >> marker; sleep 0.02; done"],
                              cwd=wd, env=env, start_new_session=True)
    try:
        wait_until(lambda: (wd / "marker").exists(), DEADLINE, "the orphan to run")
        # An unrelated process of another job of the site is left alone.
        other_env = dict(env, **{JOB_KEY_ENV: "default/j10"})
        other = subprocess.Popen(["sleep", "300"], env=other_env, start_new_session=True)
        make_app(registry, "mark", "echo new >> marker")
        job = make_job(registry, "mark", "j1")
        a = agent("n1")
        bind(registry, [job], ["n1"])
        done = wait_state(registry, "j1", [S.JOB_FINISHED, S.RUN_ERROR, S.RUN_TIMEOUT, S.FAILED])
        assert done.status.state is S.JOB_FINISHED, done.status.message
        assert orphan.wait(DEADLINE) == -signal.SIGKILL
        # The orphan was dead before the new run wrote a line: nothing of it follows "new".
        assert (wd / "marker").read_text().splitlines()[-1] == "new"
        assert a.stats["fenced"] >= 1  # the shell, and its sleep if caught alive
        assert process_start_ticks(other.pid) is not None
    finally:
        for p in (orphan, locals().get("other")):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


def test_an_agent_stops_when_its_supervisor_is_gone(registry: Registry, site: SiteConfig,
                                                    agent: AgentFactory) -> None:
    make_app(registry, "long", LONG)
    runner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        ticks = process_start_ticks(runner.pid)
        assert ticks is not None
        # A TTL the test does not rely on: with 1 s a starved agent was fenced for its lease
        # (another message) before it saw its supervisor go.
        a = agent("n1", lease_ttl=5, supervisor=(runner.pid, ticks))
        bind(registry, [make_job(registry, "long", "j1")], ["n1"])
        wait_state(registry, "j1", [S.RUNNING])
        assert not a.wait(0)
        runner.kill()
        runner.wait()
        assert a.wait(DEADLINE), "the agent did not stop when its supervisor ended"
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    done = wait_state(registry, "j1", [S.RUN_TIMEOUT])
    assert "allocation runner" in done.status.message
    assert node_of(registry, "n1") is None


def test_the_guardian_fences_and_lives_on_when_its_log_disk_is_full() -> None:
    """Its stderr (the batch script's output, on the site's disk) refusing every write
    (``/dev/full``: ENOSPC) must not end the guardian: it used to die on its own message,
    and its agent then stopped because its jobs were no longer fenced."""
    job = subprocess.Popen(["sleep", "300"], start_new_session=True)
    with open("/dev/full", "wb") as full:
        guardian = Guardian(0.0, stderr=full.fileno())
    try:
        guardian.add(job.pid)
        guardian.lease_until(time.monotonic())  # the lease is about to expire: fence now
        assert job.wait(timeout=DEADLINE) == -signal.SIGKILL
        time.sleep(0.2)  # what the guardian does after its (failed) message
        assert guardian.alive(), "the guardian died writing to a full disk"
    finally:
        guardian.close()
        if job.poll() is None:
            job.kill()
            job.wait()
    assert guardian._proc.returncode == 0


def test_guardian_keeps_a_group_guarded_again_before_its_batched_removal_goes_out() -> None:
    # A warm worker's pid is reaped for one job (removal batched) and guarded for the next
    # before the loop turn flushes: the guardian must still kill it when the agent goes.
    kept = subprocess.Popen(["sleep", "60"], start_new_session=True)
    gone = subprocess.Popen(["sleep", "60"], start_new_session=True)
    g = Guardian(margin=0.5)
    try:
        g.add(kept.pid)
        g.add(gone.pid)
        g.remove_later(kept.pid)
        g.remove_later(gone.pid)
        g.add(kept.pid)
        g.flush_removals()
    finally:
        g.close()
    try:
        assert kept.wait(DEADLINE) == -signal.SIGKILL
        assert gone.poll() is None  # its removal went out: the guardian left it alone
    finally:
        for p in (kept, gone):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def test_a_job_unbound_and_bound_again_while_its_first_run_is_being_started_never_runs_twice_at_once(
        registry: Registry, site: SiteConfig, agent: AgentFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A spawner thread still starting a cancelled run is invisible to the fence's /proc scan
    (no process yet, or one not yet exec'd): the job's next run must wait until that run is
    gone. bench chaos found two runs alive at once after a node was taken over (its jobs
    unbound and bound again while the agent was starting them)."""
    entered, gate = threading.Event(), threading.Event()
    pids: list[int] = []
    first_gone_at_second_start: list[bool] = []
    real_spawn = supervisor_module.spawn

    def first_spawn_held(prepared: object, stdin: int) -> object:
        if not entered.is_set():
            entered.set()
            assert gate.wait(DEADLINE)
        else:  # the next run: the first must have started and be gone by now
            first_gone_at_second_start.append(bool(pids) and process_start_ticks(pids[0]) is None)
        proc = real_spawn(prepared, stdin)  # type: ignore[arg-type]
        pids.append(proc.pid)
        return proc

    monkeypatch.setattr(supervisor_module, "spawn", first_spawn_held)
    make_app(registry, "sleeper", "sleep 300")
    job = make_job(registry, "sleeper", "j1")
    a = agent("n1")
    bind(registry, [job], ["n1"])
    assert entered.wait(DEADLINE), "the agent did not start the first run"

    def unbind(j: Job) -> None:
        j.status.placement = None

    # unbound and bound again (other CPUs: the agent may read both writes as one)
    bind(registry, [registry.mutate(Job, "j1", unbind)], ["n1"], cpus=[1])
    # the agent has handled the binding again: the second run started, or was held back
    wait_until(lambda: first_gone_at_second_start or a.stats["held_back"] >= 1, DEADLINE,
               "the new binding to be handled")
    gate.set()
    wait_until(lambda: len(pids) == 2, DEADLINE, "the second run to start")
    assert first_gone_at_second_start == [True]


def test_the_guardian_applies_every_line_of_a_burst_taken_in_gulps() -> None:
    """The guardian reads its pipe in gulps (a pause after each read): registrations and
    removals written one by one, across several gulps, all count when the agent goes."""
    procs = [subprocess.Popen(["sleep", "60"], start_new_session=True) for _ in range(12)]
    g = Guardian(margin=0.5)
    try:
        for i, p in enumerate(procs):
            g.add(p.pid)
            if i % 4 == 0:
                time.sleep(0.006)  # a gulp boundary now and then
        for p in procs[::2]:
            g.remove(p.pid)
    finally:
        g.close()
    try:
        for p in procs[1::2]:
            assert p.wait(DEADLINE) == -signal.SIGKILL
        assert all(p.poll() is None for p in procs[::2])  # removed: left alone
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
