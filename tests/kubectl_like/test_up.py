"""``balsamctl up``, ``controller-manager`` and ``nodeagent`` as real processes on a real site.

``up`` runs a controller manager and, through the ``local`` scheduler plugin, a BatchJob
(``<host>-up``) whose batch script starts the node agents. ``up`` starts that allocation itself
the moment it creates the BatchJob (the batch reconciler's submit then finds it): the agents
are up's descendants (local runner → bash → agents), beside the controller manager."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from apis import BatchJob, Job, JobState, Node
from apis import Site as SiteResource
from bench._up import node_agents
from controllers._leader import LeaderElector
from controllers.batch.local import LocalScheduler, state_dir
from kubectl_like import _up
from kubectl_like._up import allocation_name
from tests._deadline import DEADLINE

from ._streams import TO_FINISHED, TO_RUNNING, Proc, move, wait_until
from .conftest import Site, balsamctl_bin, job_doc, manifest, write_yaml

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def children_of(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out.update(int(x) for x in (task / "children").read_text().split())
        except OSError:
            pass
    return out


def descendants(pid: int) -> set[int]:
    out: set[int] = set()
    todo = [pid]
    while todo:
        for kid in children_of(todo.pop()):
            if kid not in out:
                out.add(kid)
                todo.append(kid)
    return out


def agents_among(pids: set[int]) -> set[int]:
    found = set()
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"nodeagent" in argv and b"--batch-job" in argv:
            found.add(pid)
    return set(node_agents(sorted(found)))  # not their pre-forked fork servers (same command line)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or during the read (ESRCH)
        return False


def state_of(site: Site, name: str) -> JobState:
    return site.registry().get(Job, name, site.namespace).status.state


def up(site: Site, *args: str, timeout: float = DEADLINE) -> tuple[int, str, str, float]:
    t0 = time.monotonic()
    r = site.sh("up", "--cpus", "2", "--lease-ttl", "3", *args, timeout=timeout)
    return r.exit_code, r.stdout, r.stderr, time.monotonic() - t0


def test_up_until_done_runs_hello_to_job_finished(any_site: Site) -> None:
    site = any_site
    r = site.sh("apply", "-f", str(MANIFESTS / "hello.yaml"))
    assert r.exit_code == 0, r.stderr
    code, out, err, _ = up(site, "--until-done")
    assert code == 0, err
    assert out == "1 job(s): 1 JOB_FINISHED, 0 FAILED\n"
    assert "Traceback" not in err
    assert state_of(site, "hello-world") is JobState.JOB_FINISHED
    assert site.sh("logs", "hello-world").stdout == "hello world\n"
    # The children are gone, and so are the Nodes they registered.
    assert site.registry().list(Node, site.namespace)[0] == []


def test_up_until_done_exits_1_when_a_job_fails(site: Site) -> None:
    write_yaml(site.path / "f.yaml", [
        manifest("App", "fails", {"command": "sh -c 'echo about to fail; exit 3'"}),
        job_doc("bad", app="fails"),
        job_doc("good", app="hello-ok", workdir="w/good"),
        manifest("App", "hello-ok", {"command": "true"}),
    ])
    assert site.sh("apply", "-f", "f.yaml").exit_code == 0
    code, out, err, _ = up(site, "--until-done")
    assert code == 1
    assert out == "2 job(s): 1 JOB_FINISHED, 1 FAILED\n"
    assert "error: 1 job(s) FAILED" in err
    assert site.sh("logs", "bad").stdout == "about to fail\n"


def test_up_until_done_exits_promptly_when_the_rest_cannot_progress(site: Site) -> None:
    write_yaml(site.path / "u.yaml", [
        manifest("App", "hello", {"command": "echo hi"}),
        job_doc("gpu-hog", resources={"gpusPerRank": 99}),
        job_doc("fine", workdir="w/fine"),
        job_doc("after-hog", workdir="w/after", parents=["gpu-hog"]),
        job_doc("held", workdir="w/held", suspend=True),
    ])
    assert site.sh("apply", "-f", "u.yaml").exit_code == 0
    # It ends by itself (up() gives it a generous deadline; a machine's pace decides nothing).
    code, out, err, _ = up(site, "--until-done", timeout=240)
    assert code == 1
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, err
    assert "no job can progress" in errors[0]
    assert "gpu-hog: needs 99 GPUs per node; largest node has 0" in errors[0]
    assert "1 job(s) wait on parents that cannot finish" in errors[0]
    assert "1 job(s) suspended, e.g. held: spec.suspend is true" in errors[0]
    assert out == "4 job(s): 1 JOB_FINISHED, 0 FAILED, 3 stuck\n"
    assert state_of(site, "fine") is JobState.JOB_FINISHED  # the hog blocked nothing behind it


def test_up_with_no_jobs_and_bad_flags(site: Site, nowhere_cwd: Path) -> None:
    code, out, err, _ = up(site, "--until-done")
    assert (code, out) == (0, "0 job(s): 0 JOB_FINISHED, 0 FAILED\n")
    assert site.run("up", "--nodes", "0").one_error().startswith("error: Invalid value for '--nodes'")
    r = site.sh("up", cwd=nowhere_cwd, env={"BALSAM_SITE_PATH": ""})
    assert r.one_error().startswith("error: no site found")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_up_and_its_children(site: Site, procs: list[Proc], sig: signal.Signals) -> None:
    p = Proc(site.path, "up", "--nodes", "2", "--cpus", "2", "--lease-ttl", "3")
    procs.append(p)
    reg = site.registry()
    wait_until(lambda: len(reg.list(Node, site.namespace)[0]) == 2, timeout=DEADLINE)
    kids = descendants(p.p.pid)
    # The controller manager and the allocation's runner (the agents are the runner's).
    assert len(children_of(p.p.pid)) == 2
    assert agents_among(children_of(p.p.pid)) == set()
    assert len(agents_among(kids)) == 2
    p.p.send_signal(sig)
    assert p.wait(DEADLINE) == 0  # without --until-done, a signal is how up is meant to end
    assert not [k for k in kids if alive(k)]
    assert "Traceback" not in p.stderr
    assert reg.list(Node, site.namespace)[0] == []  # the agents deregistered on their way out
    assert reg.list(BatchJob, site.namespace)[0] == []  # the allocation was deleted (cancelled)


def test_children_die_with_up(site: Site, procs: list[Proc]) -> None:
    """Even a SIGKILLed ``up`` leaves no agent behind: the kernel sends the controller manager
    SIGTERM, and the local allocation, told up's pid, ends as if cancelled."""
    p = Proc(site.path, "up", "--cpus", "2", "--lease-ttl", "3")
    procs.append(p)
    reg = site.registry()
    wait_until(lambda: len(reg.list(Node, site.namespace)[0]) == 1, timeout=DEADLINE)
    kids = descendants(p.p.pid)
    assert len(agents_among(kids)) == 1
    p.p.send_signal(signal.SIGKILL)
    p.wait()
    wait_until(lambda: not any(alive(k) for k in kids), timeout=DEADLINE)
    assert reg.list(Node, site.namespace)[0] == []  # stopped cleanly, not killed
    # Its BatchJob is left behind (no controller manager saw the end); the next up replaces it.
    assert [b.name for b in reg.list(BatchJob, site.namespace)[0]] == [allocation_name()]
    code, out, err, _ = up(site, "--until-done")
    assert (code, out) == (0, "0 job(s): 0 JOB_FINISHED, 0 FAILED\n"), err
    assert reg.list(BatchJob, site.namespace)[0] == []


def test_up_runs_its_allocation_here_on_a_slurm_site_with_the_node_size_it_was_given(site: Site) -> None:
    reg = site.registry()
    s = reg.get(SiteResource, "site", site.namespace)
    slurm = s.model_copy(deep=True)
    slurm.spec.scheduler = "slurm"  # no Slurm here: up must not go to it
    reg.update(s, slurm)
    (site.path / "batch-template.sh.j2").write_text("#!/bin/bash\n#SBATCH --bogus\nexit 1\n")
    write_yaml(site.path / "g.yaml", [
        manifest("App", "gpus", {"command": "echo $CUDA_VISIBLE_DEVICES"}),
        job_doc("two-gpus", app="gpus", resources={"gpusPerRank": 2}),
    ])
    assert site.sh("apply", "-f", "g.yaml").exit_code == 0
    code, out, err, _ = up(site, "--until-done", "--cpus", "3", "--gpus", "2")
    assert code == 0, err
    assert site.sh("logs", "two-gpus").stdout == "0,1\n"  # the node offered 2 GPUs
    script = (site.path / "batch" / f"{allocation_name()}.sh").read_text()
    assert "#SBATCH" not in script and "--cpus 3 --gpus 2" in script and "--batch-job" in script


def test_up_submits_its_allocation_again_at_its_wall_time(site: Site) -> None:
    # The first attempt outlives the 18 s allocation; the second, in the next one, finishes at once.
    # (6 s could end before a loaded machine had started the agent and the job in it.)
    write_yaml(site.path / "w.yaml", [
        manifest("App", "twice", {"command": "if [ -e mark ]; then echo second; else touch mark; exec sleep 60; fi"}),
        job_doc("long", app="twice"),
    ])
    assert site.sh("apply", "-f", "w.yaml").exit_code == 0
    code, out, err, _ = up(site, "--until-done", "--wall-time-min", "0.3", timeout=DEADLINE)
    assert code == 0, err
    assert out == "1 job(s): 1 JOB_FINISHED, 0 FAILED\n"
    assert f"allocation {allocation_name()} reached its wall time (0.3 min); submitting it again" in err
    job = site.registry().get(Job, "long", site.namespace)
    assert [h.to_state for h in job.status.history].count(JobState.RUN_TIMEOUT) == 1
    assert site.sh("logs", "long").stdout == "second\n"


def test_up_ends_with_one_error_when_its_allocation_is_deleted_by_hand(site: Site, procs: list[Proc]) -> None:
    p = Proc(site.path, "up", "--cpus", "2", "--lease-ttl", "3")
    procs.append(p)
    reg = site.registry()
    wait_until(lambda: len(reg.list(Node, site.namespace)[0]) == 1, timeout=DEADLINE)
    assert site.sh("delete", "batchjob", allocation_name()).exit_code == 0
    assert p.wait(DEADLINE) == 1
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert errors == [f"error: BatchJob {allocation_name()} was deleted while up was running"]
    assert reg.list(Node, site.namespace)[0] == []


def test_a_second_up_beside_a_running_one_refuses_and_leaves_it_alone(site: Site, procs: list[Proc]) -> None:
    first = Proc(site.path, "up", "--cpus", "2", "--lease-ttl", "3")
    procs.append(first)
    reg = site.registry()
    wait_until(lambda: len(reg.list(Node, site.namespace)[0]) == 1, timeout=DEADLINE)
    # The agents start before the controller manager records the allocation: wait for its id.
    wait_until(lambda: [b.status.state for b in reg.list(BatchJob, site.namespace)[0]] == ["running"], timeout=DEADLINE)
    [bj] = reg.list(BatchJob, site.namespace)[0]
    code, _, err, _ = up(site, "--until-done")
    assert code == 1
    assert [ln for ln in err.splitlines() if ln.startswith("error: ")] == [
        f"error: another balsamctl up runs this site's allocation here (BatchJob {allocation_name()}, "
        f"{bj.status.scheduler_id}): stop it first"]
    assert reg.get(BatchJob, bj.name, site.namespace).metadata.uid == bj.metadata.uid
    assert len(reg.list(Node, site.namespace)[0]) == 1 and first.p.poll() is None
    assert first.interrupt() == 0


def test_nodeagent_and_controller_manager_commands(site: Site, procs: list[Proc]) -> None:
    write_yaml(site.path / "h.yaml", [manifest("App", "hello", {"command": "echo hi"}), job_doc("j")])
    assert site.sh("apply", "-f", "h.yaml").exit_code == 0
    reg = site.registry()
    cm = Proc(site.path, "controller-manager", "--lease-ttl", "3", "--identity", "test-cm")
    procs.append(cm)
    wait_until(lambda: state_of(site, "j") is JobState.PREPROCESSED, timeout=DEADLINE)  # the reconcilers run
    na = Proc(site.path, "nodeagent", "--name", "n1", "--cpus", "2", "--lease-ttl", "3")
    procs.append(na)
    wait_until(lambda: state_of(site, "j") is JobState.JOB_FINISHED, timeout=DEADLINE)
    node = reg.get(Node, "n1", site.namespace)
    assert node.spec.cpus == 2
    na.p.send_signal(signal.SIGTERM)
    cm.p.send_signal(signal.SIGTERM)
    assert na.wait() == 0 and cm.wait() == 0
    assert site.run("nodeagent", "--cpus", "0").one_error().startswith("error: Invalid value for '--cpus'")
    assert site.run("controller-manager", "--lease-ttl", "x").one_error().startswith(
        "error: Invalid value for '--lease-ttl'")
    assert os.path.exists(site.path / "logs" / "controller-manager.log")


def test_what_up_and_its_processes_write_is_private(site: Site) -> None:
    """job.out, the logs and the store files are 0600 whatever umask up was started with."""
    assert site.sh("apply", "-f", str(MANIFESTS / "hello.yaml")).exit_code == 0
    old = os.umask(0o022)
    try:
        code, _, err, _ = up(site, "--until-done", timeout=240)
    finally:
        os.umask(old)
    assert code == 0, err
    made = [site.path / "data" / site.registry().get(Job, "hello-world", site.namespace).spec.workdir / "job.out",
            *(site.path / "logs").rglob("*.log"), *site.path.glob("store.db*")]
    assert len(made) >= 3
    modes = {str(p.relative_to(site.path)): oct(p.stat().st_mode & 0o777) for p in made if p.is_file()}
    assert set(modes.values()) == {"0o600"}, modes
def _condition_messages(site: Site, name: str) -> str:
    r = site.sh("describe", "job", name)
    assert r.exit_code == 0, r.stderr
    return r.stdout.split("Conditions:", 1)[1].split("Events:", 1)[0]


def test_up_until_done_ends_with_the_reason_describe_shows_for_a_failed_parent(site: Site) -> None:
    write_yaml(site.path / "p.yaml", [
        manifest("App", "fails", {"command": "sh -c 'exit 3'"}),
        job_doc("bad", app="fails"),
        job_doc("child", app="fails", workdir="w/child", parents=["bad"], onParentFailure="Wait"),
    ])
    assert site.sh("apply", "-f", "p.yaml").exit_code == 0
    code, out, err, _ = up(site, "--until-done")
    assert code == 1
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, err
    why = "parent job bad failed; this job waits (onParentFailure: Wait)"
    assert why in errors[0]
    assert why in _condition_messages(site, "child")
    assert "ParentFailed" in _condition_messages(site, "child")


def test_up_until_done_ends_with_the_cycle_an_edit_made(site: Site) -> None:
    write_yaml(site.path / "c.yaml", [
        manifest("App", "hello", {"command": "echo hi"}),
        job_doc("x"),
        job_doc("y", workdir="w/y", parents=["x"]),
    ])
    assert site.sh("apply", "-f", "c.yaml").exit_code == 0

    def close(j: Job) -> None:
        j.spec.parents = ["y"]

    site.registry().mutate(Job, "x", close, site.namespace)  # no manager yet: x is still CREATED
    code, out, err, _ = up(site, "--until-done")
    assert code == 1
    assert out == "2 job(s): 0 JOB_FINISHED, 2 FAILED\n"
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, err
    assert "its parents form a dependency cycle" in errors[0]
    cycle = errors[0].split("dependency cycle: ", 1)[1].split(";", 1)[0]
    assert cycle in ("x → y → x", "y → x → y")
    assert "DependencyCycle" in _condition_messages(site, "x")
    assert cycle in _condition_messages(site, "x") + _condition_messages(site, "y")


def test_up_until_done_says_no_node_agent_is_running_when_its_agents_die(site: Site, procs: list[Proc]) -> None:
    write_yaml(site.path / "s.yaml", [manifest("App", "sleeper", {"command": "sleep 600"}), job_doc("long", app="sleeper")])
    assert site.sh("apply", "-f", "s.yaml").exit_code == 0
    p = Proc(site.path, "up", "--until-done", "--cpus", "2", "--lease-ttl", "3")
    procs.append(p)
    reg = site.registry()
    wait_until(lambda: reg.get(Job, "long", site.namespace).status.state is JobState.RUNNING, timeout=DEADLINE)
    agents = agents_among(descendants(p.p.pid))
    assert len(agents) == 1
    for pid in agents:
        os.kill(pid, signal.SIGKILL)
    # up ends (its allocation ended with its only agent) with the words describe uses for a
    # job left without an agent (tests/kubectl_like/test_reasons.py: NoNodeAgent).
    assert p.wait(DEADLINE) == 1
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, p.stderr
    # The allocation ends with its only agent, or the agent is found missing: either way, the words.
    assert errors[0].startswith("error: no node agent is running: "), errors[0]


def test_up_goes_on_when_its_own_output_cannot_be_written(site: Site) -> None:
    """up's output on a full disk (``/dev/full``: every write ENOSPC) loses its lines, not up:
    a print that raised used to end up, and the allocation with it, mid-outage."""
    r = site.sh("apply", "-f", str(MANIFESTS / "hello.yaml"))
    assert r.exit_code == 0, r.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALSAM_")}
    env["BALSAM_SITE_PATH"] = str(site.path)
    with open("/dev/full", "w") as full:
        p = subprocess.run([balsamctl_bin(), "up", "--cpus", "2", "--lease-ttl", "3", "--until-done"],
                           stdout=full, stderr=full, cwd=site.path, env=env, timeout=DEADLINE)
    assert p.returncode == 0
    assert state_of(site, "hello-world") is JobState.JOB_FINISHED


def test_until_done_is_not_done_while_a_job_is_counted_in_two_states(site: Site,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # The per-state counts are separate reads: a job that finished between the RUNNING read
    # and the JOB_FINISHED read is counted in both. up once ended on such a read and printed
    # "25 job(s): 24 JOB_FINISHED, 0 FAILED, 1 stuck" for 24 finished jobs.
    write_yaml(site.path / "jobs.yaml", [manifest("App", "hello", {"command": "echo hi"}),
                                         job_doc("j0"), job_doc("j1")])
    assert site.run("apply", "-f", str(site.path / "jobs.yaml")).exit_code == 0
    reg = site.registry()
    for name in ("j0", "j1"):
        move(reg, name, TO_RUNNING + TO_FINISHED, site.namespace)
    counts, done = _up.all_done(reg, site.namespace)
    assert done and sum(counts.values()) == 2
    real = _up.state_counts
    monkeypatch.setattr(_up, "state_counts", lambda r, ns: {**real(r, ns), JobState.RUNNING: 1})
    counts, done = _up.all_done(reg, site.namespace)
    assert not done


@pytest.mark.parametrize("fault", ["up killed", "manager and runner killed"])
def test_a_restarted_up_starts_its_agents_without_waiting_for_a_controller_manager_to_lead(
        site: Site, procs: list[Proc], fault: str) -> None:
    """The restart chain is not manager → submit → agents: up removes the BatchJob a killed up
    left (running, or marked deleted by an up whose manager died; its allocation ended: nothing
    to cancel) and starts its own allocation at once; the manager, once it leads, records that
    very allocation (one runner, not two)."""
    first = Proc(site.path, "up", "--cpus", "2", "--lease-ttl", "3")
    procs.append(first)
    reg = site.registry()
    wait_until(lambda: [b.status.state for b in reg.list(BatchJob, site.namespace)[0]] == ["running"], timeout=DEADLINE)
    [stale] = reg.list(BatchJob, site.namespace)[0]
    if fault == "up killed":
        first.p.send_signal(signal.SIGKILL)
        first.wait()
    else:
        for pid in children_of(first.p.pid):  # the controller manager and the allocation's runner
            os.kill(pid, signal.SIGKILL)
        assert first.wait(DEADLINE) == 1
    wait_until(lambda: reg.list(Node, site.namespace)[0] == [], timeout=DEADLINE)  # its agent stopped
    # ... and its allocation ended (its runner is gone): until then, it is in use.
    assert stale.status.scheduler_id
    wait_until(lambda: not LocalScheduler(state_dir(site.path)).alive(stale.status.scheduler_id), timeout=DEADLINE)
    left = reg.get(BatchJob, stale.name, site.namespace)
    assert left.metadata.uid == stale.metadata.uid  # left behind
    assert (left.metadata.deletion_timestamp is not None) is (fault != "up killed")
    # Someone else leads (alive, on this machine): up's controller manager only stands by.
    other = LeaderElector(reg.store, site.namespace, "someone-else", ttl=3600)
    wait_until(other.try_acquire, timeout=DEADLINE)  # once the killed up's manager has let go
    try:
        p = Proc(site.path, "up", "--cpus", "2", "--lease-ttl", "3")
        procs.append(p)

        def ours_registered() -> bool:  # the stale one gone, ours made, and our agent's Node
            bj = reg.try_get(BatchJob, stale.name, site.namespace)
            nodes = reg.list(Node, site.namespace)[0]
            return (bj is not None and bj.metadata.uid != stale.metadata.uid and len(nodes) == 1
                    and nodes[0].metadata.creation_timestamp >= bj.metadata.creation_timestamp)

        wait_until(ours_registered, timeout=DEADLINE)
        bj = reg.get(BatchJob, stale.name, site.namespace)
        assert bj.status.state == "pending_submission"  # no controller manager has acted on it
        [node] = reg.list(Node, site.namespace)[0]
        assert node.spec.batch_job == bj.name
        # Not recorded by any manager yet, the allocation is still known to be in use here.
        code, _, err, _ = up(site, "--until-done")
        assert code == 1 and "error: another balsamctl up runs this site's allocation here" in err, err
        assert reg.get(BatchJob, stale.name, site.namespace).metadata.uid == bj.metadata.uid
    finally:
        other.step_down()
    wait_until(lambda: reg.get(BatchJob, stale.name, site.namespace).status.state == "running", timeout=DEADLINE)
    bj = reg.get(BatchJob, stale.name, site.namespace)
    ours = [m for m in state_dir(site.path).glob("local-*.json") if bj.metadata.uid[:8] in m.read_text()]
    assert [m.stem for m in ours] == [bj.status.scheduler_id]  # the manager recorded up's allocation
    assert p.interrupt(DEADLINE) == 0
    assert "Traceback" not in p.stderr
