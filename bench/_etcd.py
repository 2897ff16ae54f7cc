"""A throwaway single-member etcd for benchmarks: fresh data dir, free ports, stopped after use.

The flags are those of ``scripts/etcd-up`` and the test fixture: data on /dev/shm (tmpfs, so
fsync is cheap and the figures measure etcd rather than the disk), and the limits the store
backend needs because it never splits a txn (``--max-txn-ops``, ``--max-request-bytes``).
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
from pathlib import Path

ETCD_BIN = "/usr/bin/etcd"  # Debian's etcd-server

LIMITS = ("--max-txn-ops", "100000", "--max-request-bytes", "67108864", "--quota-backend-bytes", "8589934592")


class EtcdMissing(RuntimeError):
    """No etcd binary on this machine (``apt-get install etcd-server``)."""


def etcd_binary() -> str | None:
    if os.access(ETCD_BIN, os.X_OK):
        return ETCD_BIN
    return shutil.which("etcd")


def etcd_version(binary: str | None = None) -> str | None:
    binary = binary or etcd_binary()
    if not binary:
        return None
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"etcd Version:\s*(\S+)", out)
    return m.group(1) if m else None


def _free_ports(n: int) -> list[int]:
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


def _healthy(port: int) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # ignore http_proxy
    try:
        with opener.open(f"http://127.0.0.1:{port}/health", timeout=1) as r:
            return b'"health":"true"' in r.read()
    except OSError:
        return False


class EtcdServer:
    """``with EtcdServer.start() as etcd: open_store(etcd.url)``."""

    def __init__(self, proc: subprocess.Popen[bytes], root: Path, port: int, version: str | None) -> None:
        self.proc = proc
        self.root = root
        self.port = port
        self.version = version

    @property
    def url(self) -> str:
        return f"etcd://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, timeout: float = 30.0) -> EtcdServer:
        binary = etcd_binary()
        if not binary:
            raise EtcdMissing(f"etcd is not installed ({ETCD_BIN} missing; apt-get install etcd-server)")
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        root = Path(tempfile.mkdtemp(prefix="balsam-bench-etcd.", dir=shm))
        client, peer = _free_ports(2)
        c, p = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        argv = [
            binary, "--name", "bench", "--data-dir", str(root / "data"),
            "--logger", "zap", "--log-level", "warn",
            "--listen-client-urls", c, "--advertise-client-urls", c,
            "--listen-peer-urls", p, "--initial-advertise-peer-urls", p,
            "--initial-cluster", f"bench={p}", "--initial-cluster-state", "new",
            "--heartbeat-interval", "10", "--election-timeout", "100",
            *LIMITS,
        ]  # fmt: skip
        with open(root / "etcd.log", "wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        server = cls(proc, root, client, etcd_version(binary))
        deadline = time.monotonic() + timeout
        while not _healthy(client):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = server.log_tail()
                server.stop()
                raise RuntimeError(f"etcd did not become healthy (exit {proc.poll()}): {tail}")
            time.sleep(0.02)
        return server

    def log_tail(self, n: int = 2000) -> str:
        try:
            return (self.root / "etcd.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> EtcdServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
