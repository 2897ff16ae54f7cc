"""A real site for the ApplicationDefinition suite: a SQLite store, a controller manager and a
node agent, each a separate process (``python -m controllers``, ``python -m nodeagent``), and
this process's client pointed at the store."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import apis
from apis import Node
from apis import _config as config
from apis._config import SiteConfig
from tests._deadline import DEADLINE

REPO = Path(__file__).resolve().parents[2]


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteConfig]:
    """The site directory, with its controller manager and one 4-CPU node agent running."""
    path = tmp_path_factory.mktemp("appdef") / "site"
    (path / "data").mkdir(parents=True)
    (path / "logs").mkdir()
    cfg = SiteConfig(path=path, name="testsite", store_url=f"sqlite:///{path}/store.db")
    cfg.save()
    procs = [
        _start(["-m", "controllers", "--site", str(path), "--lease-ttl", "3", "--hook-workers", "4"],
               path / "logs" / "controllers.out"),
        _start(["-m", "nodeagent", "--site", str(path), "--cpus", "4", "--lease-ttl", "3", "--kill-grace", "1"],
               path / "logs" / "nodeagent.out"),
    ]
    reg = apis.use(site=path)
    try:
        deadline = time.monotonic() + DEADLINE
        while reg.count(Node) == 0:
            assert all(p.poll() is None for p in procs), "a site process exited at start"
            assert time.monotonic() < deadline, "the node agent did not register"
            time.sleep(0.05)
        yield cfg
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        config.reset()
