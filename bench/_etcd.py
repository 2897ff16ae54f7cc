"""A throwaway single-member etcd for benchmarks: fresh data dir, free ports, stopped after use.

The launcher is :mod:`store.testing`'s, the one the test fixture uses (the flags of
``scripts/etcd-up``: data on /dev/shm, so fsync is cheap and the figures measure etcd rather
than the disk, and the limits the store backend needs because it never splits a txn).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from store.testing import ETCD_BIN, EtcdCluster, etcd_binary, etcd_version

__all__ = ["ETCD_BIN", "EtcdMissing", "EtcdServer", "etcd_binary", "etcd_version"]


class EtcdMissing(RuntimeError):
    """No etcd binary on this machine (``apt-get install etcd-server``)."""


class EtcdServer:
    """``with EtcdServer.start() as etcd: open_store(etcd.url)``."""

    def __init__(self, cluster: EtcdCluster, version: str | None) -> None:
        self.cluster = cluster
        self.version = version

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        proc = self.cluster.members[0].proc
        assert proc is not None
        return proc

    @property
    def root(self) -> Path:
        return self.cluster.root

    @property
    def port(self) -> int:
        return self.cluster.members[0].client_port

    @property
    def url(self) -> str:
        return f"etcd://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, timeout: float = 30.0) -> EtcdServer:
        binary = etcd_binary()
        if not binary:
            raise EtcdMissing(f"etcd is not installed ({ETCD_BIN} missing; apt-get install etcd-server)")
        cluster = EtcdCluster.start(members=1, timeout=timeout, prefix="balsam-bench-etcd.")
        return cls(cluster, etcd_version(binary))

    def log_tail(self, n: int = 2000) -> str:
        return self.cluster.members[0].log_tail(n)

    def stop(self) -> None:
        self.cluster.stop(timeout=10.0)

    def __enter__(self) -> EtcdServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
