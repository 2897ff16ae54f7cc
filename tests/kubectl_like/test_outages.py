"""``balsamctl up`` and everything it starts ride through a store outage: etcd killed and
restarted on the same data, or the SQLite store's disk full. Afterwards every job finishes,
none is FAILED, and no traceback is printed or logged."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

import store as st
from apis import Job, JobState, Registry
from kubectl_like.cli import cli
from store.testing import EtcdCluster, etcd_available
from tests._fulldisk import fill, release, small_tmpfs

from ._streams import Proc, wait_until
from .conftest import manifest, write_yaml

JOBS = 24


def _site(tmp_path: Path, store_url: str, namespace: str = "default") -> Path:
    path = tmp_path / "site"
    r = CliRunner().invoke(cli, ["init", str(path), "--store", store_url, "-n", namespace], catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    # The last job runs until the test opens its gate (after the fault): up cannot have ended
    # before the fault, however late a loaded machine lets the test thread run.
    docs = [manifest("App", "nap", {"command": "sleep 0.4"}),
            manifest("App", "gated", {"command": f"while [ ! -e {path / 'gate'} ]; do sleep 0.1; done"})]
    docs += [manifest("Job", f"j{i}", {"app": "nap" if i < JOBS - 1 else "gated", "workdir": f"w/{i}"},
                      namespace=namespace) for i in range(JOBS)]
    f = write_yaml(path / "jobs.yaml", docs)
    r = CliRunner().invoke(cli, ["apply", "-f", str(f), "--site", str(path)], catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    return path


def _count(url: str, namespace: str, state: JobState) -> int:
    s = st.open_store(url)
    try:
        return Registry(s).index_count(Job, "state", state.value, namespace)
    except Exception:  # noqa: BLE001 - the store is the thing being broken: "not yet"
        return -1
    finally:
        s.close()


def _logs(site: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted((site / "logs").rglob("*")) if p.is_file())


def _up(site: Path, procs: list[Proc]) -> Proc:
    p = Proc(site, "up", "--until-done", "--cpus", "2", "--lease-ttl", "3")
    procs.append(p)
    return p


def _finishes(p: Proc, site: Path) -> None:
    (site / "gate").touch()
    assert p.wait(240) == 0, p.stderr
    assert p.rest() == f"{JOBS} job(s): {JOBS} JOB_FINISHED, 0 FAILED\n"
    assert "Traceback" not in p.stderr, p.stderr
    logs = _logs(site)
    assert "Traceback" not in logs, logs[-4000:]


@pytest.mark.etcd
def test_up_rides_through_etcd_killed_and_restarted(tmp_path: Path, procs: list[Proc]) -> None:
    if not etcd_available():
        pytest.skip("no etcd binary")
    ns = f"t-{uuid.uuid4().hex[:10]}"
    with EtcdCluster.start(members=1) as cluster:
        site = _site(tmp_path, cluster.url, ns)
        p = _up(site, procs)
        wait_until(lambda: _count(cluster.url, ns, JobState.JOB_FINISHED) >= 1)
        cluster.members[0].kill()
        # the components noticed (a positive signal, not a fixed pause) ...
        wait_until(lambda: "store unavailable" in _logs(site))
        cluster.members[0].restart()
        _finishes(p, site)  # ... and went on when it came back


def test_up_rides_through_a_full_disk_under_the_sqlite_store(tmp_path: Path, procs: list[Proc]) -> None:
    with small_tmpfs(tmp_path / "disk", size="8m") as disk:
        url = f"sqlite:///{disk}/store.db"
        site = _site(tmp_path, url)
        p = _up(site, procs)
        wait_until(lambda: _count(url, "default", JobState.JOB_FINISHED) >= 1)
        filler = fill(disk)
        wait_until(lambda: "disk is full" in _logs(site))
        # reads work meanwhile: get jobs opens the store and lists
        r = CliRunner().invoke(cli, ["get", "jobs", "--site", str(site)], catch_exceptions=False)
        assert r.exit_code == 0, r.stderr
        assert len(r.stdout.splitlines()) == JOBS + 1
        release(filler)
        _finishes(p, site)


@pytest.mark.etcd
def test_a_node_agent_and_a_controller_manager_started_during_an_etcd_outage_wait_for_it(
        tmp_path: Path, procs: list[Proc]) -> None:
    """An allocation (or up's restart) may start them while the store is away: they say so
    once and go on when it answers, instead of exiting (an allocation whose agents exit ends)."""
    if not etcd_available():
        pytest.skip("no etcd binary")
    ns = f"t-{uuid.uuid4().hex[:10]}"
    with EtcdCluster.start(members=1) as cluster:
        site = _site(tmp_path, cluster.url, ns)
        (site / "gate").touch()
        cluster.members[0].kill()
        agent = Proc(site, "nodeagent", "--name", "n0", "--cpus", "2", "--lease-ttl", "3")
        manager = Proc(site, "controller-manager", "--lease-ttl", "3")
        procs += [agent, manager]
        for p in (agent, manager):
            wait_until(lambda p=p: "store unavailable" in p.err_so_far())
            assert p.p.poll() is None, p.err_so_far()  # waiting, not exited
        cluster.members[0].restart()
        wait_until(lambda: _count(cluster.url, ns, JobState.JOB_FINISHED) == JOBS)
        for p in (agent, manager):
            p.p.terminate()
            assert p.wait() == 0, p.stderr
            assert "Traceback" not in p.stderr
        assert "Traceback" not in _logs(site)
