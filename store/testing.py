"""Throwaway etcd members and clusters on 127.0.0.1, for the tests and the benchmarks
(in the spirit of ``globus_sdk.testing``: shipped with the package so both can import it,
and importing nothing of ours, as ``store`` may not).

Usage::

    from store.testing import EtcdCluster

    with EtcdCluster.start(members=1) as cluster:   # or members=3
        store = open_store(cluster.url)              # "etcd://127.0.0.1:PORT[,...]"
        cluster.members[0].kill()                    # SIGKILL one member
        cluster.members[0].restart()                 # same flags, same data dir

Members listen on free ports picked by the kernel, keep their data under /dev/shm (tmpfs:
fsync is cheap there, so figures measure etcd rather than the disk) and use the flags of
shared/recipes/etcd.md plus the limits that ``store._etcd`` needs because it never splits a
txn (``--max-txn-ops 100000 --max-request-bytes 67108864``).
``scripts/etcd-up`` starts the same single member from a shell.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ETCD_BIN = "/usr/bin/etcd"  # Debian's etcd-server

# The limits the store backend relies on (see store/_etcd.py); tests may override them.
DEFAULT_LIMITS: dict[str, str] = {
    "--max-txn-ops": "100000",
    "--max-request-bytes": str(64 << 20),
    "--quota-backend-bytes": str(8 << 30),
}


def etcd_binary() -> str | None:
    """The etcd to run: Debian's, else the first on PATH; None when there is none."""
    if os.access(ETCD_BIN, os.X_OK):
        return ETCD_BIN
    return shutil.which("etcd")


def etcd_available() -> bool:
    return etcd_binary() is not None


def etcd_version(binary: str | None = None) -> str | None:
    """``etcd --version``'s server version (``3.4.30``), or None."""
    binary = binary or etcd_binary()
    if not binary:
        return None
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"etcd Version:\s*(\S+)", out)
    return m.group(1) if m else None


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports that were free a moment ago (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tmp_root() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    initial_cluster: str
    data_dir: Path
    limits: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    proc: subprocess.Popen[bytes] | None = None
    binary: str = ETCD_BIN

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def argv(self) -> list[str]:
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        argv = [
            self.binary,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--logger", "zap", "--log-level", "warn",
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-token", f"balsam-{self.data_dir.parent.name}",
            "--initial-cluster-state", "new",
            "--heartbeat-interval", "10", "--election-timeout", "100",
        ]  # fmt: skip
        for flag, value in self.limits.items():
            argv += [flag, value]
        return argv

    def launch(self) -> None:
        """Start the process (same flags and data dir on a restart); does not wait."""
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is running"
        log = open(self.data_dir.parent / f"{self.name}.log", "ab")  # Popen keeps its own copy
        try:
            self.proc = subprocess.Popen(
                self.argv(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        finally:
            log.close()

    def wait_healthy(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://{self.endpoint}/health"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # not via $http_proxy
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"etcd member {self.name} exited with {self.proc.returncode}: {self.log_tail()}"
                )
            try:
                with opener.open(url, timeout=1) as resp:
                    if b'"health":"true"' in resp.read():
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd member {self.name} not healthy after {timeout}s: {self.log_tail()}")
            time.sleep(0.02)

    def restart(self, timeout: float = 15.0) -> None:
        self.launch()
        self.wait_healthy(timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, n: int = 2000) -> str:
        try:
            return (self.data_dir.parent / f"{self.name}.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""


@dataclass
class EtcdCluster:
    members: list[EtcdMember]
    root: Path

    @property
    def url(self) -> str:
        """The store URL naming every member: ``etcd://127.0.0.1:P1,127.0.0.1:P2,...``."""
        return "etcd://" + ",".join(m.endpoint for m in self.members)

    @classmethod
    def start(
        cls, members: int = 1, limits: dict[str, str] | None = None, timeout: float = 15.0,
        prefix: str = "balsam-etcd.",
    ) -> EtcdCluster:
        """Start ``members`` fresh members (data in a new ``/dev/shm/PREFIX*``) and wait until
        every one reports healthy."""
        binary = etcd_binary()
        if not binary:
            raise RuntimeError(f"etcd not found at {ETCD_BIN} (scripts/install installs it)")
        root = Path(tempfile.mkdtemp(prefix=prefix, dir=_tmp_root()))
        ports = free_ports(2 * members)
        names = [f"m{i + 1}" for i in range(members)]
        initial = ",".join(f"{n}=http://127.0.0.1:{ports[2 * i + 1]}" for i, n in enumerate(names))
        merged = dict(DEFAULT_LIMITS)
        merged.update(limits or {})
        cluster = cls(
            [
                EtcdMember(n, ports[2 * i], ports[2 * i + 1], initial, root / n, dict(merged), binary=binary)
                for i, n in enumerate(names)
            ],
            root,
        )
        try:
            for m in cluster.members:
                m.launch()
            for m in cluster.members:
                m.wait_healthy(timeout)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def member_at(self, endpoint: str) -> EtcdMember:
        return next(m for m in self.members if m.endpoint == endpoint)

    def leader(self) -> EtcdMember:
        """The member that is raft leader now, as the live members report it."""
        import etcd3  # here, so that importing this module needs no etcd client
        from etcd3 import etcdrpc

        by_id: dict[int, EtcdMember] = {}
        leader_id = 0
        for m in self.members:
            if m.proc is None or m.proc.poll() is not None:
                continue
            client = etcd3.client("127.0.0.1", m.client_port, timeout=5)
            try:
                status = etcdrpc.MaintenanceStub(client.channel).Status(etcdrpc.StatusRequest(), 5)
            finally:
                client.close()
            by_id[status.header.member_id] = m
            leader_id = leader_id or status.leader
        if leader_id not in by_id:
            raise RuntimeError("no live member is the leader")
        return by_id[leader_id]

    def stop(self, timeout: float = 2.0) -> None:
        """Stop every member (SIGTERM to all at once, then SIGKILL after ``timeout`` seconds)
        and remove the data. Members of a cluster that is going away may wait 5 s for peers,
        hence the short default."""
        for m in self.members:
            if m.proc is not None and m.proc.poll() is None:
                m.proc.send_signal(signal.SIGTERM)
        for m in self.members:
            m.stop(timeout=timeout)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
