"""``balsamctl up``, ``controller-manager`` and ``nodeagent`` as real processes on a real site."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from apis import Job, JobState, Node

from ._streams import Proc, wait_until
from .conftest import Site, job_doc, manifest, write_yaml

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.kill()


def children_of(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out.update(int(x) for x in (task / "children").read_text().split())
        except OSError:
            pass
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def state_of(site: Site, name: str) -> JobState:
    return site.registry().get(Job, name, site.namespace).status.state


def up(site: Site, *args: str, timeout: float = 90) -> tuple[int, str, str, float]:
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
    code, out, err, took = up(site, "--until-done")
    assert code == 1
    assert took < 20
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
    wait_until(lambda: len(reg.list(Node, site.namespace)[0]) == 2, timeout=30)
    kids = children_of(p.p.pid)
    assert len(kids) == 3  # a controller manager and two node agents
    p.p.send_signal(sig)
    assert p.wait(30) == 0  # without --until-done, a signal is how up is meant to end
    assert not [k for k in kids if alive(k)]
    assert "Traceback" not in p.stderr
    assert reg.list(Node, site.namespace)[0] == []  # the agents deregistered on their way out


def test_children_die_with_up(site: Site, procs: list[Proc]) -> None:
    """Even a SIGKILLed ``up`` leaves no agent behind (the kernel sends them SIGTERM)."""
    p = Proc(site.path, "up", "--cpus", "2", "--lease-ttl", "3")
    procs.append(p)
    reg = site.registry()
    wait_until(lambda: len(reg.list(Node, site.namespace)[0]) == 1, timeout=30)
    kids = children_of(p.p.pid)
    assert kids
    p.p.send_signal(signal.SIGKILL)
    p.wait()
    wait_until(lambda: not any(alive(k) for k in kids), timeout=20)


def test_nodeagent_and_controller_manager_commands(site: Site, procs: list[Proc]) -> None:
    write_yaml(site.path / "h.yaml", [manifest("App", "hello", {"command": "echo hi"}), job_doc("j")])
    assert site.sh("apply", "-f", "h.yaml").exit_code == 0
    reg = site.registry()
    cm = Proc(site.path, "controller-manager", "--lease-ttl", "3", "--identity", "test-cm")
    procs.append(cm)
    wait_until(lambda: state_of(site, "j") is JobState.PREPROCESSED, timeout=30)  # the reconcilers run
    na = Proc(site.path, "nodeagent", "--name", "n1", "--cpus", "2", "--lease-ttl", "3")
    procs.append(na)
    wait_until(lambda: state_of(site, "j") is JobState.JOB_FINISHED, timeout=30)
    node = reg.get(Node, "n1", site.namespace)
    assert node.spec.cpus == 2
    na.p.send_signal(signal.SIGTERM)
    cm.p.send_signal(signal.SIGTERM)
    assert na.wait() == 0 and cm.wait() == 0
    assert site.run("nodeagent", "--cpus", "0").one_error().startswith("error: Invalid value for '--cpus'")
    assert site.run("controller-manager", "--lease-ttl", "x").one_error().startswith(
        "error: Invalid value for '--lease-ttl'")
    assert os.path.exists(site.path / "logs" / "controller-manager.log")
