"""Fixtures shared by every suite: real services, started once per session."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests._support import skip_or_fail

ETCD_BIN = "/usr/bin/etcd"  # Debian's etcd-server


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(port: int) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # ignore http_proxy
    try:
        with opener.open(f"http://127.0.0.1:{port}/health", timeout=1) as r:
            return b'"health":"true"' in r.read()
    except OSError:
        return False


@pytest.fixture(scope="session")
def etcd_url() -> Iterator[str]:
    """A single-member etcd on 127.0.0.1 (data on tmpfs), as ``etcd://127.0.0.1:PORT``."""
    binary = ETCD_BIN if os.access(ETCD_BIN, os.X_OK) else shutil.which("etcd")
    if not binary:
        skip_or_fail(f"etcd is not installed ({ETCD_BIN} missing; apt-get install etcd-server)")
    client, peer = _free_port(), _free_port()
    tmp = tempfile.mkdtemp(prefix="etcd-test-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    log_path = os.path.join(tmp, "etcd.log")
    cmd = [
        binary,
        "--name", "test",
        "--data-dir", os.path.join(tmp, "data"),
        "--listen-client-urls", f"http://127.0.0.1:{client}",
        "--advertise-client-urls", f"http://127.0.0.1:{client}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", f"test=http://127.0.0.1:{peer}",
        "--initial-cluster-state", "new",
        "--logger", "zap", "--log-level", "warn",
        "--heartbeat-interval", "10", "--election-timeout", "100",
        "--max-txn-ops", "100000",
        "--max-request-bytes", "67108864",
        "--quota-backend-bytes", "8589934592",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not _healthy(client):
            if proc.poll() is not None or time.monotonic() > deadline:
                with open(log_path, errors="replace") as f:
                    tail = f.read()[-2000:]
                pytest.fail(f"etcd did not become healthy (exit {proc.poll()}):\n{tail}", pytrace=False)
            time.sleep(0.02)
        yield f"etcd://127.0.0.1:{client}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
