"""The node agent with real processes and a real store: what a user sees of a bound job."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from apis import AlreadyExists, App, AppParameter, BatchJob, Job, JobState, Node, Registry, Site, transition
from apis._config import SiteConfig
from apis._registry import object_key
from nodeagent import _agent as nodeagent_agent
from nodeagent._fence import process_start_ticks
from nodeagent._messages import LeaseLost
from nodeagent._reporter import HEARTBEAT_INTERVAL
from tests._deadline import DEADLINE

from .conftest import (
    AgentFactory,
    agent_process,
    bind,
    make_app,
    make_job,
    make_jobs,
    node_of,
    process_alive,
    read_pid,
    set_site_launcher,
    spawn_agent_process,
    wait_state,
    wait_until,
)
from .pyapps import Where

S = JobState
FINAL = (S.JOB_FINISHED, S.RUN_ERROR, S.RUN_TIMEOUT, S.FAILED)


def workdir(site: SiteConfig, name: str) -> Path:
    return site.data_path / "work" / name


# --- running a job ------------------------------------------------------------------------


def test_bound_job_runs_in_its_workdir_and_finishes_with_every_step_in_history(any_registry: Registry, any_site: SiteConfig,
                                                            any_agent: AgentFactory) -> None:
    reg, site, ns = any_registry, any_site, any_site.namespace
    make_app(reg, "hello", "echo hello {{ who }}; pwd", namespace=ns, parameters={"who": {}})
    job = make_job(reg, "hello", "j1", namespace=ns, parameters={"who": "world"})
    any_agent("n1")
    bind(reg, [job], ["n1"])
    done = wait_state(reg, "j1", FINAL, namespace=ns)
    assert done.status.state is S.JOB_FINISHED, done.status.message
    assert done.status.return_code == 0
    assert done.status.attempts == 1
    out = (workdir(site, "j1") / "job.out").read_text().splitlines()
    assert out == ["hello world", str(workdir(site, "j1"))]
    # No postprocess hook, nothing to stage out: the agent wrote the whole end with the exit,
    # and every step is in the history, with its time.
    moves = [(h.from_state, h.to_state) for h in done.status.history][-5:]
    assert moves == [(S.PREPROCESSED, S.RUNNING), (S.RUNNING, S.RUN_DONE), (S.RUN_DONE, S.POSTPROCESSED),
                     (S.POSTPROCESSED, S.STAGED_OUT), (S.STAGED_OUT, S.JOB_FINISHED)]
    assert all(h.time is not None for h in done.status.history)
    assert [h.message for h in done.status.history][-3:] == [
        "no postprocess hook", "no stage-out transfers", "no stage-out transfers"]
    assert done.status.start_time is not None and done.status.end_time is not None


def test_nonzero_exit_is_run_error_with_return_code_and_output_tail(any_registry: Registry,
                                                                   any_site: SiteConfig,
                                                                   any_agent: AgentFactory) -> None:
    reg, ns = any_registry, any_site.namespace
    make_app(reg, "fails", "for i in $(seq 1 30); do echo line $i; done; echo oops >&2; exit 3", namespace=ns)
    job = make_job(reg, "fails", "j1", namespace=ns)
    any_agent("n1")
    bind(reg, [job], ["n1"])
    done = wait_state(reg, "j1", FINAL, namespace=ns)
    assert done.status.state is S.RUN_ERROR
    assert done.status.return_code == 3
    assert "exited with code 3" in done.status.message
    tail = (done.status.output_tail or "").splitlines()
    assert len(tail) == 20
    assert tail[0] == "line 12" and tail[-2] == "line 30" and tail[-1] == "oops"


def test_killed_by_a_signal_reports_the_signal(registry: Registry, site: SiteConfig, agent: AgentFactory) -> None:
    make_app(registry, "segv", "kill -SEGV $$")
    job = make_job(registry, "segv", "j1")
    agent("n1")
    bind(registry, [job], ["n1"])
    done = wait_state(registry, "j1", FINAL)
    assert done.status.state is S.RUN_ERROR
    assert done.status.return_code == -signal.SIGSEGV
    assert "SIGSEGV" in done.status.message


def test_wall_time_kills_the_whole_process_group(registry: Registry, site: SiteConfig,
                                                 agent: AgentFactory) -> None:
    # The shell starts a background child and waits: both must die at the wall time.
    make_app(registry, "slow", "sleep 30 & echo $! > child.pid; echo $$ > shell.pid; wait")
    job = make_job(registry, "slow", "j1", resources={"wallTimeMin": 0.02})
    agent("n1")
    bind(registry, [job], ["n1"])
    child = read_pid(workdir(site, "j1") / "child.pid")
    shell = read_pid(workdir(site, "j1") / "shell.pid")
    assert process_alive(child)
    done = wait_state(registry, "j1", FINAL)
    assert done.status.state is S.RUN_TIMEOUT
    assert "wall time" in done.status.message
    wait_until(lambda: not process_alive(child) and not process_alive(shell), DEADLINE, "the job's processes to die")


def test_background_processes_end_with_the_job(registry: Registry, site: SiteConfig, agent: AgentFactory) -> None:
    make_app(registry, "leaky", "sleep 60 & echo $! > child.pid")
    job = make_job(registry, "leaky", "j1")
    agent("n1")
    bind(registry, [job], ["n1"])
    assert wait_state(registry, "j1", FINAL).status.state is S.JOB_FINISHED
    child = read_pid(workdir(site, "j1") / "child.pid")
    wait_until(lambda: not process_alive(child), DEADLINE, "the leftover child to be killed")


def test_environment_has_placed_gpus_threads_and_app_environment(registry: Registry, site: SiteConfig,
                                                                 agent: AgentFactory) -> None:
    make_app(registry, "env",
             'echo "cuda=${CUDA_VISIBLE_DEVICES-unset} omp=$OMP_NUM_THREADS job=$BALSAM_JOB_ID '
             'site=$BALSAM_SITE_PATH foo=$FOO"',
             environment={"FOO": "bar baz", "CUDA_VISIBLE_DEVICES": "9"})
    gpu_job = make_job(registry, "env", "gpu", resources={"threadsPerRank": 4, "gpusPerRank": 2})
    cpu_job = make_job(registry, "env", "cpu")
    agent("n1", cpus=8, gpus=4)
    bind(registry, [gpu_job], ["n1"], cpus=[0, 1, 2, 3], gpus=[1, 3])
    bind(registry, [cpu_job], ["n1"], cpus=[4])
    for name in ("gpu", "cpu"):
        assert wait_state(registry, name, FINAL).status.state is S.JOB_FINISHED
    assert (workdir(site, "gpu") / "job.out").read_text().strip() == (
        f"cuda=1,3 omp=4 job=gpu site={site.path} foo=bar baz")
    # No GPUs placed: CUDA_VISIBLE_DEVICES is set, and empty (the job sees no GPU).
    assert (workdir(site, "cpu") / "job.out").read_text().strip() == (
        f"cuda= omp=1 job=cpu site={site.path} foo=bar baz")


@pytest.mark.parametrize("value", ["; touch pwned", "$(touch pwned)", "`touch pwned`", "a' ; touch pwned; '"])
def test_parameter_values_are_passed_literally(registry: Registry, site: SiteConfig, agent: AgentFactory,
                                               value: str) -> None:
    make_app(registry, "echo", "printf '%s\\n' {{ msg }} && ls", parameters={"msg": {}})
    job = make_job(registry, "echo", "j1", parameters={"msg": value})
    agent("n1")
    bind(registry, [job], ["n1"])
    assert wait_state(registry, "j1", FINAL).status.state is S.JOB_FINISHED
    out = (workdir(site, "j1") / "job.out").read_text().splitlines()
    assert out[0] == value
    assert "pwned" not in out[1:]  # ls of the workdir
    assert not list(site.path.rglob("pwned")) and not Path("pwned").exists()


def test_undeclared_template_variable_fails_the_job_with_a_message(registry: Registry, site: SiteConfig,
                                                                  agent: AgentFactory) -> None:
    # Jobs are checked against their App when written; the App's command changes afterwards.
    app = make_app(registry, "typo", "echo {{ name }}", parameters={"name": {"required": False, "default": "x"}})
    job = make_job(registry, "typo", "j1")
    registry.mutate(App, app.name, lambda a: setattr(a.spec, "command", "echo {{ nmae }}"))
    agent("n1")
    bind(registry, [job], ["n1"])
    done = wait_state(registry, "j1", FINAL)
    assert done.status.state is S.FAILED
    assert '"nmae"' in done.status.message and "not a declared parameter" in done.status.message
    assert done.status.attempts == 0 and done.status.return_code is None
    assert done.status.history[-1].from_state is S.PREPROCESSED  # it never ran
    assert not (workdir(site, "j1") / "job.out").exists()


def test_missing_required_parameter_fails_the_job_with_a_message(registry: Registry, site: SiteConfig,
                                                                agent: AgentFactory) -> None:
    # Jobs are checked against their App when written; the App makes "x" required afterwards.
    app = make_app(registry, "needs", "echo {{ x }} {{ y }}",
                   parameters={"x": {"required": False, "default": "0"}, "y": {"required": False}})
    job = make_job(registry, "needs", "j1", parameters={"y": "1"})
    registry.mutate(App, app.name, lambda a: a.spec.parameters.update(x=AppParameter()))
    agent("n1")
    bind(registry, [job], ["n1"])
    done = wait_state(registry, "j1", FINAL)
    assert done.status.state is S.FAILED
    assert 'missing required parameter "x"' in done.status.message


def test_missing_app_fails_the_job(registry: Registry, site: SiteConfig, agent: AgentFactory) -> None:
    make_app(registry, "gone", "true")
    job = make_job(registry, "gone", "j1")
    registry.delete(App, "gone")
    agent("n1")
    bind(registry, [job], ["n1"])
    done = wait_state(registry, "j1", FINAL)
    assert done.status.state is S.FAILED and 'app "gone" not found' in done.status.message


def test_command_that_is_not_found_is_run_error_127(registry: Registry, site: SiteConfig,
                                                   agent: AgentFactory) -> None:
    make_app(registry, "nope", "/no/such/program --flag")
    job = make_job(registry, "nope", "j1")
    agent("n1")
    bind(registry, [job], ["n1"])
    done = wait_state(registry, "j1", FINAL)
    assert done.status.state is S.RUN_ERROR and done.status.return_code == 127
    assert "not found" in (done.status.output_tail or "")


def test_two_bound_jobs_run_concurrently(registry: Registry, site: SiteConfig, agent: AgentFactory,
                                         tmp_path: Path) -> None:
    # Each job announces itself, then waits for the other one: both succeed only if they
    # were running at the same time.
    meet = tmp_path / "meet"
    meet.mkdir()
    make_app(registry, "pair",
             "touch {{ dir }}/{{ me }}; for i in $(seq 1 300); do [ -e {{ dir }}/{{ other }} ] && exit 0; "
             "sleep 0.05; done; exit 1",
             parameters={"dir": {}, "me": {}, "other": {}})
    a = make_job(registry, "pair", "a", parameters={"dir": str(meet), "me": "a", "other": "b"})
    b = make_job(registry, "pair", "b", parameters={"dir": str(meet), "me": "b", "other": "a"})
    agent("n1", cpus=2)
    bind(registry, [a], ["n1"], cpus=[0], occupancy=0.5)
    bind(registry, [b], ["n1"], cpus=[1], occupancy=0.5)
    assert wait_state(registry, "a", FINAL).status.state is S.JOB_FINISHED
    assert wait_state(registry, "b", FINAL).status.state is S.JOB_FINISHED


def test_short_job_start_and_end_can_share_one_write(registry: Registry, site: SiteConfig,
                                                     agent: AgentFactory) -> None:
    make_app(registry, "t", "true")
    job = make_job(registry, "t", "j1")
    a = agent("n1")
    bind(registry, [job], ["n1"])
    done = wait_state(registry, "j1", FINAL)
    assert done.status.state is S.JOB_FINISHED
    assert [h.to_state for h in done.status.history][-5:] == [S.RUNNING, S.RUN_DONE, S.POSTPROCESSED,
                                                              S.STAGED_OUT, S.JOB_FINISHED]
    # counted once the write returns, which may be after the test reads it back
    wait_until(lambda: a.stats["job_writes"] >= 1, DEADLINE, "the agent to count its write")


# --- users and other writers --------------------------------------------------------------


def _user_sets(registry: Registry, name: str, to: JobState, namespace: str = "default") -> Job:
    def edit(j: Job) -> None:
        transition(j, to, "set by the user", by_user=True)

    return registry.mutate(Job, name, edit, namespace)


@pytest.mark.parametrize("to", [S.FAILED, S.RESTART_READY])
def test_user_moving_a_running_job_kills_it_and_keeps_the_users_state(
        any_registry: Registry, any_site: SiteConfig, any_agent: AgentFactory, to: JobState) -> None:
    reg, site, ns = any_registry, any_site, any_site.namespace
    make_app(reg, "sleeper", "echo $$ > pid; sleep 30", namespace=ns)
    job = make_job(reg, "sleeper", "j1", namespace=ns)
    a = any_agent("n1")
    bind(reg, [job], ["n1"])
    wait_state(reg, "j1", [S.RUNNING], namespace=ns)
    pid = read_pid(workdir(site, "j1") / "pid")
    wait_until(lambda: node_of(reg, "n1", ns).status.running_jobs == ["j1"], DEADLINE, "the Node to report j1")
    _user_sets(reg, "j1", to, ns)
    wait_until(lambda: not process_alive(pid), DEADLINE, "the job's process to be killed")
    # The agent has seen the exit and reported its Node idle: a wrong write (RUN_ERROR over
    # the user's state) would have gone out before that report (the loop writes jobs, then
    # the Node).
    wait_until(lambda: node_of(reg, "n1", ns).status.running_jobs == [], DEADLINE, "the Node to report no job")
    assert not a.usage()[3]
    j = reg.get(Job, "j1", ns)
    assert j.status.state is to and j.status.message == "set by the user"


def test_concurrent_metadata_edit_does_not_lose_the_result(registry: Registry, site: SiteConfig,
                                                            agent: AgentFactory) -> None:
    # A label edit while the job runs makes the agent's CAS fail once: it re-reads, sees
    # the job is still its own, and writes the result over the new version.
    # The job ends only once the edit is in (a "sleep 1" could end first on a loaded machine).
    make_app(registry, "short", "echo $$ > pid; while [ ! -e go ]; do sleep 0.05; done")
    job = make_job(registry, "short", "j1")
    a = agent("n1")
    bind(registry, [job], ["n1"])
    wait_state(registry, "j1", [S.RUNNING])

    def label(j: Job) -> None:
        j.metadata.labels["touched"] = "yes"

    registry.mutate(Job, "j1", label)
    (workdir(site, "j1") / "go").touch()
    done = wait_state(registry, "j1", FINAL)
    assert done.status.state is S.JOB_FINISHED
    assert done.metadata.labels == {"touched": "yes"}
    assert a.stats["conflicts"] >= 1


def test_job_running_here_under_a_previous_agent_is_timed_out(registry: Registry, site: SiteConfig,
                                                              agent: AgentFactory) -> None:
    make_app(registry, "t", "true")
    job = bind(registry, [make_job(registry, "t", "j1")], ["n1"])[0]
    running = job.model_copy(deep=True)
    transition(running, S.RUNNING, "started on n1")
    running.status.attempts = 1
    registry.update(job, running)
    agent("n1")
    done = wait_state(registry, "j1", FINAL)
    assert done.status.state is S.RUN_TIMEOUT
    assert "restarted" in done.status.message


def test_job_bound_to_another_node_does_not_run_here(registry: Registry, site: SiteConfig,
                                                     agent: AgentFactory) -> None:
    make_app(registry, "t", "true")
    bind(registry, [make_job(registry, "t", "j1")], ["n2"])
    agent("n1")
    # A job bound here after j1 runs to its end: the agent has been looking at the jobs.
    bind(registry, [make_job(registry, "t", "mine")], ["n1"])
    wait_state(registry, "mine", [S.JOB_FINISHED])
    assert registry.get(Job, "j1").status.state is S.PREPROCESSED
    assert not (workdir(site, "j1") / "job.out").exists()


# --- the Node -------------------------------------------------------------------------------


def test_node_lives_under_the_agents_lease_and_reports_occupancy(registry: Registry, site: SiteConfig,
                                                                 agent: AgentFactory) -> None:
    make_app(registry, "sleeper", "sleep 30")
    job = make_job(registry, "sleeper", "j1")
    a = agent("n1", cpus=16, gpus=2, report_interval=0.1)
    node = node_of(registry, "n1")
    assert node is not None and node.spec.cpus == 16 and node.spec.gpus == 2
    kv = registry.store.get(object_key(Node, "default", "n1"))
    assert kv is not None and kv.lease == a.lease != 0
    bind(registry, [job], ["n1"], cpus=[2, 3], gpus=[1], occupancy=0.25)
    wait_state(registry, "j1", [S.RUNNING])

    def busy() -> bool:
        n = node_of(registry, "n1")
        return n is not None and n.status.busy_cpus == [2, 3] and n.status.busy_gpus == [1] \
            and n.status.occupancy == 0.25 and n.status.running_jobs == ["j1"]

    wait_until(busy, DEADLINE, "the Node to report the running job")
    _user_sets(registry, "j1", S.FAILED)

    def idle() -> bool:
        n = node_of(registry, "n1")
        return n is not None and not n.status.busy_cpus and n.status.occupancy == 0 and not n.status.running_jobs

    wait_until(idle, DEADLINE, "the Node to report idle")
    kv = registry.store.get(object_key(Node, "default", "n1"))
    assert kv is not None and kv.lease == a.lease  # still under the lease after status writes


def test_multi_node_job_runs_once_on_the_first_node_and_holds_both(registry: Registry, site: SiteConfig,
                                                                   agent: AgentFactory) -> None:
    set_site_launcher(registry, site, "none")
    make_app(registry, "mpi", "echo ran on $BALSAM_JOB_ID >> {{ log }}; sleep 1", parameters={"log": {}})
    log = site.path / "runs.log"
    job = make_job(registry, "mpi", "j1", parameters={"log": str(log)}, resources={"numNodes": 2})
    a1 = agent("n1", cpus=4, report_interval=0.1)
    a2 = agent("n2", cpus=4, report_interval=0.1)
    bind(registry, [job], ["n1", "n2"], cpus=[0, 1, 2, 3])
    wait_state(registry, "j1", [S.RUNNING])
    wait_until(lambda: a2.usage()[3] == ["j1"], DEADLINE, "the second node to account the job")
    assert a1.usage()[3] == ["j1"]
    done = wait_state(registry, "j1", FINAL)
    assert done.status.state is S.JOB_FINISHED
    wait_until(lambda: not a2.usage()[3], DEADLINE, "the second node to release the job")
    assert log.read_text().splitlines() == ["ran on j1"]


def test_second_agent_with_the_same_name_is_refused(registry: Registry, site: SiteConfig,
                                                    agent: AgentFactory) -> None:
    agent("n1")
    with pytest.raises(AlreadyExists):
        agent("n1", register_timeout=0.5)


def test_stop_marks_running_jobs_run_timeout_and_deletes_the_node(registry: Registry, site: SiteConfig,
                                                                  agent: AgentFactory) -> None:
    make_app(registry, "sleeper", "echo $$ > pid; sleep 30")
    job = make_job(registry, "sleeper", "j1")
    a = agent("n1")
    bind(registry, [job], ["n1"])
    wait_state(registry, "j1", [S.RUNNING])
    pid = read_pid(workdir(site, "j1") / "pid")
    a.stop("stopped by the test")
    assert a.wait(DEADLINE)
    done = registry.get(Job, "j1")
    assert done.status.state is S.RUN_TIMEOUT and "stopped by the test" in done.status.message
    assert node_of(registry, "n1") is None
    assert not process_alive(pid)



def test_a_job_killed_with_its_agent_by_the_allocations_end_is_run_timeout_whichever_signal_lands_first(
        registry: Registry, site: SiteConfig, agent: AgentFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # Slurm's time limit sends SIGTERM to the agent and its jobs at once: the job's death may be
    # reaped before the agent's own stop is handled. It must still be the stop's (RUN_TIMEOUT,
    # requeued), not the job's failure (RUN_ERROR). A long hold keeps the test from racing.
    monkeypatch.setattr(nodeagent_agent, "HOLD_EXTERNAL_KILL_S", 120.0)
    make_app(registry, "sleeper", "echo $$ > pid; exec sleep 300")
    job = make_job(registry, "sleeper", "j1")
    a = agent("n1")
    bind(registry, [job], ["n1"])
    wait_state(registry, "j1", [S.RUNNING])
    os.kill(read_pid(workdir(site, "j1") / "pid"), signal.SIGTERM)  # the job first ...
    wait_until(lambda: a._held, DEADLINE, "the job's exit to be held for the agent's own stop")
    a.stop("stopped by SIGTERM")  # ... then its agent
    assert a.wait(DEADLINE)
    done = registry.get(Job, "j1")
    assert done.status.state is S.RUN_TIMEOUT, done.status.message
    assert "stopped by SIGTERM" in done.status.message


def test_a_job_killed_by_sigterm_while_its_agent_runs_on_is_its_own_failure(
        registry: Registry, site: SiteConfig, agent: AgentFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodeagent_agent, "HOLD_EXTERNAL_KILL_S", 0.2)
    make_app(registry, "sleeper", "echo $$ > pid; exec sleep 300")
    job = make_job(registry, "sleeper", "j1")
    agent("n1")
    bind(registry, [job], ["n1"])
    wait_state(registry, "j1", [S.RUNNING])
    os.kill(read_pid(workdir(site, "j1") / "pid"), signal.SIGTERM)
    done = wait_state(registry, "j1", [S.RUN_ERROR, S.FAILED, S.RESTART_READY], timeout=DEADLINE)
    assert S.RUN_ERROR in [h.to_state for h in done.status.history]


# --- the agent as a process -----------------------------------------------------------------


def test_sigterm_marks_running_jobs_run_timeout_and_removes_the_node(registry: Registry,
                                                                     site: SiteConfig) -> None:
    make_app(registry, "sleeper", "echo $$ > pid; sleep 30")
    job = make_job(registry, "sleeper", "j1")
    with agent_process(registry, site, "--name", "n1", "--cpus", "4", "--kill-grace", "1") as proc:
        bind(registry, [job], ["n1"])
        wait_state(registry, "j1", [S.RUNNING])
        pid = read_pid(workdir(site, "j1") / "pid")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 0, out.decode()
    done = registry.get(Job, "j1")
    assert done.status.state is S.RUN_TIMEOUT
    assert "SIGTERM" in done.status.message
    assert node_of(registry, "n1") is None
    assert not process_alive(pid)
    log = (site.logs_path / "nodeagent-n1.log").read_text()
    assert "registered node n1" in log and "stopping" in log


def _batchjob(registry: Registry, name: str, state: str = "running") -> BatchJob:
    bj = registry.create(BatchJob(metadata={"name": name}, spec={"numNodes": 1}))  # type: ignore[arg-type]
    return set_batchjob_state(registry, bj, state)


def set_batchjob_state(registry: Registry, bj: BatchJob, state: str) -> BatchJob:
    new = bj.model_copy(deep=True)
    new.status.state = state  # type: ignore[assignment]
    return registry.update_many([(bj, new)])[0]


def test_agent_of_an_allocation_stops_when_its_batchjob_is_finished(registry: Registry, site: SiteConfig) -> None:
    """A Slurm job that vanished leaves its agents alive: they end themselves when their
    BatchJob is finished, instead of re-registering each time the batch reconciler removes
    their Node."""
    make_app(registry, "sleeper", "echo $$ > pid; sleep 30")
    job = make_job(registry, "sleeper", "j1")
    bj = _batchjob(registry, "alloc")
    other = _batchjob(registry, "alloc-b")  # a name under ours in the store's key order
    with agent_process(registry, site, "--name", "n1", "--cpus", "4", "--kill-grace", "1", "--batch-job", "alloc") as proc:
        bind(registry, [job], ["n1"])
        wait_state(registry, "j1", [S.RUNNING])
        pid = read_pid(workdir(site, "j1") / "pid")
        set_batchjob_state(registry, other, "finished")  # not ours: nothing happens
        # A job bound after that starts: the agent has gone on working past that event.
        bind(registry, [make_job(registry, "sleeper", "j2")], ["n1"])
        wait_state(registry, "j2", [S.RUNNING])
        assert proc.poll() is None and registry.get(Job, "j1").status.state is S.RUNNING
        set_batchjob_state(registry, bj, "finished")
        out, _ = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 0, out.decode()
    done = registry.get(Job, "j1")
    assert done.status.state is S.RUN_TIMEOUT
    assert "BatchJob alloc is finished" in done.status.message
    assert node_of(registry, "n1") is None
    assert not process_alive(pid)


def test_agent_of_an_allocation_stops_when_its_batchjob_is_deleted_or_missing(registry: Registry,
                                                                            agent: AgentFactory) -> None:
    _batchjob(registry, "alloc", "queued")  # agents may start before the reconciler sees it running
    a = agent("n1", batch_job="alloc")
    # The agent has read its queued BatchJob and goes on: a job bound to it runs to its end.
    make_app(registry, "t", "true")
    bind(registry, [make_job(registry, "t", "j1")], ["n1"])
    wait_state(registry, "j1", [S.JOB_FINISHED])
    assert not a.wait(0) and node_of(registry, "n1") is not None
    registry.delete(BatchJob, "alloc")
    assert a.wait(DEADLINE)
    assert node_of(registry, "n1") is None
    late = agent("n2", batch_job="never-was")  # an allocation whose BatchJob is already gone
    assert late.wait(DEADLINE)
    assert node_of(registry, "n2") is None


def test_kill_9_leaves_the_node_to_vanish_when_its_lease_expires(registry: Registry, site: SiteConfig) -> None:
    with agent_process(registry, site, "--name", "n1", "--lease-ttl", "1") as proc:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(DEADLINE)
    # The Node outlives the agent until the lease's TTL passes, then vanishes on its own.
    wait_until(lambda: node_of(registry, "n1") is None, DEADLINE, "the Node to vanish with its lease")


def test_a_new_agent_takes_over_a_name_once_the_old_lease_expired(registry: Registry, site: SiteConfig,
                                                                   agent: AgentFactory) -> None:
    with agent_process(registry, site, "--name", "n1", "--lease-ttl", "1") as proc:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(DEADLINE)
    a = agent("n1", register_timeout=DEADLINE)  # waits for the dead agent's Node to vanish
    kv = registry.store.get(object_key(Node, "default", "n1"))
    assert kv is not None and kv.lease == a.lease


# --- throughput shape --------------------------------------------------------------------------


def test_200_jobs_bound_at_once_all_finish_with_batched_writes(registry: Registry, site: SiteConfig,
                                                               agent: AgentFactory) -> None:
    make_app(registry, "t", "/bin/true")
    jobs = make_jobs(registry, "t", [f"j{i:03d}" for i in range(200)])
    a = agent("n1", cpus=200)
    before = registry.store.current_revision()  # a Node report landing later counts: the bound has room
    t0 = time.monotonic()
    bind(registry, jobs, ["n1"], occupancy=1 / 200)
    wait_until(lambda: registry.index_count(Job, "state", "JOB_FINISHED") == 200, DEADLINE, "all 200 jobs to finish")
    elapsed = time.monotonic() - t0
    used = registry.store.current_revision() - before - 1  # minus the bind itself
    node_writes = a.stats["node_writes"]
    assert a.stats["launched"] == 200 and a.stats["finished"] == 200
    # Node status is coalesced by time (at most one write per report interval, plus heartbeats),
    # never per job: the bound scales with how long the machine took, so a slow run cannot fail it.
    interval = a.reporter.report_interval
    assert node_writes <= elapsed / interval + elapsed / HEARTBEAT_INTERVAL + 3, (node_writes, elapsed)
    # 200 jobs x 2 transitions, one write per transition at most, would take 400 revisions. How
    # far below that batching gets (~30 on a quiet machine, ~100 at load 4) depends on the
    # scheduler: that is measured in bench/, not asserted here.
    assert used - node_writes <= 400, f"{used} revisions for 200 jobs ({a.stats})"


def test_cli_errors_are_one_line_and_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nodeagent import main

    assert main(["--site", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "settings.yml" in err
    assert main(["--site", str(tmp_path), "--cpus", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --cpus must be at least 1"


def test_cli_agent_runs_jobs_of_the_namespace_it_is_given(registry: Registry, site: SiteConfig) -> None:
    make_app(registry, "t", "echo ok", namespace="team-a")
    job = make_job(registry, "t", "j1", namespace="team-a")
    proc = spawn_agent_process(site, "--name", "n1", "-n", "team-a")
    try:
        wait_until(lambda: node_of(registry, "n1", "team-a"), DEADLINE, "the agent to register in team-a")
        bind(registry, [job], ["n1"])
        assert wait_state(registry, "j1", FINAL, namespace="team-a").status.state is S.JOB_FINISHED
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0


def test_agent_registers_again_when_its_lease_is_lost(registry: Registry, site: SiteConfig,
                                                      agent: AgentFactory) -> None:
    # As if the store had expired the lease (the agent was frozen past its TTL): the Node
    # vanishes; the agent notices at its next keepalive and comes back under a new lease.
    make_app(registry, "t", "echo ok")
    a = agent("n1", lease_ttl=3)  # not 1 s: a starved agent would lose that lease by itself too
    old = a.lease
    registry.store.lease_revoke(old)
    # The revoke deleted the Node; the agent may already be back (a descheduled
    # test thread reads late): gone, or under a new lease, never still under the revoked one.
    kv = registry.store.get(object_key(Node, "default", "n1"))
    assert kv is None or kv.lease != old

    def back() -> bool:
        kv = registry.store.get(object_key(Node, "default", "n1"))
        return kv is not None and kv.lease == a.lease != old

    wait_until(back, DEADLINE, "the Node to come back under a new lease")
    job = make_job(registry, "t", "j1")
    bind(registry, [job], ["n1"])
    assert wait_state(registry, "j1", FINAL).status.state is S.JOB_FINISHED


# --- where the job's end is written ------------------------------------------------------


def test_job_of_an_app_with_a_postprocess_hook_stops_at_run_done_for_the_hook(
        registry: Registry, site: SiteConfig, agent: AgentFactory) -> None:
    app = Where.to_app(by_value=False)
    app.metadata.name = "hooked"
    assert app.spec.python is not None
    app.spec.python.hooks = ["postprocess"]
    registry.create(app)
    agent("n1")
    bind(registry, [make_job(registry, "hooked", "j1")], ["n1"])
    done = wait_state(registry, "j1", (*FINAL, S.RUN_DONE))
    assert done.status.state is S.RUN_DONE, done.status.message  # the hook reconciler takes it on
    assert [h.to_state for h in done.status.history][-2:] == [S.RUNNING, S.RUN_DONE]


def test_job_with_stage_out_transfers_stops_at_postprocessed_for_the_transfer(
        registry: Registry, site: SiteConfig, agent: AgentFactory) -> None:
    registry.create(Site(metadata={"name": site.name, "namespace": site.namespace},  # type: ignore[arg-type]
                         spec={"path": str(site.path), "transferLocations": {"remote": "file://"}}))
    make_app(registry, "t", "true", transfers={"result": {"direction": "out", "localPath": "r.txt"}})
    job = make_job(registry, "t", "j1", transfers={"result": "remote:/data/r.txt"})
    agent("n1")
    bind(registry, [job], ["n1"])
    # No postprocess hook: that step is taken with the exit; the stage-out is the transfer
    # controller's (it takes POSTPROCESSED jobs with stage-out slots).
    done = wait_state(registry, "j1", (*FINAL, S.RUN_DONE, S.POSTPROCESSED, S.STAGED_OUT))
    assert done.status.state is S.POSTPROCESSED, done.status.message
    assert [h.to_state for h in done.status.history][-3:] == [S.RUNNING, S.RUN_DONE, S.POSTPROCESSED]
    assert done.status.return_code == 0


def test_an_agent_whose_runner_is_gone_stops_on_a_lost_lease_instead_of_registering_again(
        registry: Registry, site: SiteConfig, agent: AgentFactory) -> None:
    """Its Node would otherwise come back under a new lease after the allocation ended (a
    restarted up then saw the dead allocation's Node)."""
    runner = subprocess.Popen(["sleep", "300"])
    ticks = process_start_ticks(runner.pid)
    assert ticks is not None
    a = agent("n1", lease_ttl=60, supervisor=(runner.pid, ticks))  # keepalive checks every 20 s
    runner.kill()
    runner.wait()
    lease = a.lease
    a._q.put(LeaseLost(lease))  # as the keepalive thread posts it
    assert a.wait(DEADLINE), "the agent did not stop"
    assert a.lease == lease  # no new lease taken
    assert registry.try_get(Node, "n1") is None
