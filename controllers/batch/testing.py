"""A real Slurm on 127.0.0.1 for the tests and the benchmarks (as :mod:`store.testing` is for
etcd): ``scripts/slurm-up`` and ``scripts/slurm-down`` driven from Python.

Usage::

    with SlurmCluster.start(Path("/tmp/balsam-slurm-x"), nodes=4, cpus=2) as slurm:
        ...   # SLURM_CONF is exported to this process (and what it starts) meanwhile

Needs root and Debian's slurm-wlm + munge (``scripts/install``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"


class SlurmUpFailed(RuntimeError):
    """``scripts/slurm-up`` exited non-zero (its output's tail is the message)."""


def free_port_block(n: int, first: int = 16817, step: int = 97, last: int = 30000) -> int:
    """A base port P with P (slurmctld) and P+11..P+10+n (the n slurmds) free on 127.0.0.1."""
    for base in range(first, last, step):
        ok = True
        for p in (base, *range(base + 11, base + 11 + n)):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port block for Slurm")


@dataclass
class SlurmCluster:
    dir: Path
    nodes: int
    cpus: int
    env: dict[str, str]  # this process's environment plus the SLURM_TEST_* settings of the scripts
    _old_conf: str | None = field(default=None, repr=False)

    @property
    def conf(self) -> str:
        return str(self.dir / "slurm.conf")

    @classmethod
    def start(cls, dir: Path, nodes: int, cpus: int, port: int | None = None) -> SlurmCluster:
        """Run scripts/slurm-up (``port``: slurmctld's, a free block by default) and export
        SLURM_CONF to this process; on failure run slurm-down and raise SlurmUpFailed."""
        env = {**os.environ, "SLURM_TEST_DIR": str(dir), "SLURM_TEST_NODES": str(nodes),
               "SLURM_TEST_CPUS": str(cpus), "SLURM_TEST_PORT": str(port or free_port_block(nodes))}
        up = subprocess.run([str(SCRIPTS / "slurm-up")], env=env, capture_output=True, text=True, timeout=120)
        cluster = cls(dir, nodes, cpus, env)
        if up.returncode != 0:
            cluster._down()
            raise SlurmUpFailed(f"scripts/slurm-up failed: {(up.stderr or up.stdout).strip()[-500:]}")
        cluster._old_conf = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = cluster.conf
        return cluster

    def _down(self) -> None:
        subprocess.run([str(SCRIPTS / "slurm-down")], env=self.env, capture_output=True, timeout=120)

    def stop(self) -> None:
        """scripts/slurm-down, SLURM_CONF as it was, the directory removed."""
        self._down()
        if self._old_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = self._old_conf
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SlurmCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
