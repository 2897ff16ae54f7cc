"""A whole site on this machine: a real store, the controller manager and node agents as
separate processes (``python -m controllers`` / ``python -m nodeagent``), as ``up`` runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import store as st
from apis import App, Job, JobState, Registry, Site
from apis._config import SiteConfig
from controllers._leader import LEASE_PREFIX
from tests._deadline import DEADLINE

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Cluster:
    site: SiteConfig
    registry: Registry
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    lease_ttl: float = 2.0

    def _start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.site.path / "logs" / f"{name}.out", "ab")  # noqa: SIM115 - kept open by the child
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        p = subprocess.Popen([sys.executable, *argv], stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=env, cwd=self.site.path)
        self.procs[name] = p
        return p

    def controller(self, name: str = "cm") -> subprocess.Popen[bytes]:
        return self._start(name, ["-m", "controllers", "--site", str(self.site.path), "--identity", name,
                                  "--lease-ttl", str(self.lease_ttl)])

    def agent(self, name: str, cpus: int = 4, gpus: int = 0) -> subprocess.Popen[bytes]:
        p = self._start(name, ["-m", "nodeagent", "--site", str(self.site.path), "--name", name,
                               "--cpus", str(cpus), "--gpus", str(gpus), "--lease-ttl", str(self.lease_ttl),
                               "--kill-grace", "1"])
        deadline = time.monotonic() + DEADLINE
        from apis import Node

        while self.registry.try_get(Node, name) is None:
            if p.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"agent {name} did not register: {self.log(name)}")
            time.sleep(0.02)
        return p

    def leader(self) -> str | None:
        """The controller manager holding the leader lease, read from the store."""
        kvs = self.registry.store.range(LEASE_PREFIX).kvs
        return kvs[0].value.decode().split("\n", 1)[0] if kvs else None  # identity, then its process

    def wait_leader(self, name: str, timeout: float = DEADLINE) -> None:
        deadline = time.monotonic() + timeout
        while self.leader() != name:
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} does not lead after {timeout}s (leader: {self.leader()}): "
                                     f"{self.log(name)}")
            time.sleep(0.02)

    def log(self, name: str) -> str:
        return (self.site.path / "logs" / f"{name}.out").read_text(errors="replace")[-3000:]

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        p = self.procs.pop(name)
        p.send_signal(sig)
        p.wait(DEADLINE)

    def app(self, name: str, command: str, **spec) -> App:
        return self.registry.create(App(metadata={"name": name}, spec={"command": command, **spec}))

    def wait_all(self, names: list[str], timeout: float = DEADLINE) -> list[Job]:
        deadline = time.monotonic() + timeout
        while True:
            jobs = [self.registry.get(Job, n) for n in names]
            if all(j.status.state in (JobState.JOB_FINISHED, JobState.FAILED) for j in jobs):
                return jobs
            if time.monotonic() > deadline:
                states = {j.name: j.status.state.value for j in jobs}
                logs = {n: self.log(n) for n in self.procs}
                raise AssertionError(f"jobs not done in {timeout}s: {states}\n{logs}")
            time.sleep(0.05)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()


def _site(path: Path, store_url: str | None) -> SiteConfig:
    (path / "data").mkdir(parents=True)
    (path / "logs").mkdir()
    cfg = SiteConfig(path=path, name="e2e", store_url=store_url or f"sqlite://{path}/store.db")
    cfg.save()
    return cfg


@pytest.fixture(params=["sqlite", pytest.param("etcd", marks=pytest.mark.etcd)])
def any_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    url = None
    if request.param == "etcd":
        url = str(request.getfixturevalue("etcd_url"))
    yield from _cluster(tmp_path, url, namespace_suffix=request.node.name)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    yield from _cluster(tmp_path, None)


def _cluster(tmp_path: Path, url: str | None, namespace_suffix: str = "") -> Iterator[Cluster]:
    cfg = _site(tmp_path / "site", url)
    s = st.open_store(cfg.store_url)
    if url is not None:  # a shared etcd: start from an empty keyspace
        for prefix in ("/registry/", "/index/", "/leases/"):
            while True:
                res = s.range(prefix, limit=1000)
                if not res.kvs:
                    break
                s.txn([], [st.Delete(kv.key) for kv in res.kvs])
    reg = Registry(s)
    reg.create(Site(metadata={"name": "e2e"}, spec={"path": str(cfg.path)}))
    c = Cluster(cfg, reg)
    try:
        yield c
    finally:
        c.stop()
        s.close()


def times(cluster: Cluster, job: Job) -> tuple[float, float]:
    """(start, end) recorded by the job's own command in its workdir."""
    wd = job.resolve_workdir(cluster.site.data_path)
    return float((wd / "start").read_text()), float((wd / "end").read_text())


def max_concurrency(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


TIMED = "date +%s.%N > start; sleep {{ secs }}; date +%s.%N > end"
