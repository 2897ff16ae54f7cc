"""Fixtures of the transfer suite: a real site directory and SQLite store, a Site with transfer
locations, and a controller manager running the dependency, hook and transfer reconcilers
(placement and node agents only where a test runs jobs for real)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from apis import App, Job, JobState, Registry, Site, TransferTask
from apis._config import SiteConfig
from controllers import ControllerManager
from controllers.dependency import DependencyReconciler
from controllers.hook import HookReconciler
from controllers.hooks import NoHooks
from controllers.transfer import transfer_reconcilers
from tests._deadline import DEADLINE
from tests._support import poll_until, running_manager

GLOBUS_EP = "aaaaaaaa-0000-4000-8000-000000000001"
SITE_EP = "bbbbbbbb-0000-4000-8000-000000000002"


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A directory standing in for the far side of a file:// location."""
    d = tmp_path / "remote"
    d.mkdir()
    return d


def make_site(registry: Registry, site: SiteConfig, **locations: str) -> Site:
    locs = {"local": "file://", **locations}
    return registry.create(Site(metadata={"name": site.name}, spec={  # type: ignore[arg-type]
        "path": str(site.path), "transferLocations": locs, "globusEndpointId": SITE_EP}))


def make_app(registry: Registry, name: str = "reader", command: str = "cat in.dat", **slots: dict[str, Any]) -> App:
    transfers = slots or {"inp": {"direction": "in", "localPath": "in.dat"}}
    return registry.create(App(metadata={"name": name}, spec={"command": command,  # type: ignore[arg-type]
                                                              "transfers": transfers}))


def make_jobs(registry: Registry, n: int, transfers: Callable[[int], dict[str, str]], app: str = "reader",
              prefix: str = "j") -> list[Job]:
    return registry.create_many([
        Job(metadata={"name": f"{prefix}{i}"}, spec={"app": app, "workdir": f"w/{prefix}{i}",  # type: ignore[arg-type]
                                                   "transfers": transfers(i)})
        for i in range(n)])


Manager = Callable[..., ControllerManager]


@pytest.fixture
def manager(registry: Registry) -> Iterator[Manager]:
    """``manager(providers=..., window=..., batch_size=..., **task_options)`` starts a leader
    running dependency, hook and transfer reconcilers; stopped after the test."""
    with ExitStack() as started:

        def start(reconcilers: list[Any] | None = None, **kw: Any) -> ControllerManager:
            hooks = NoHooks()
            kw.setdefault("window", 0.05)
            kw.setdefault("backoff", 0.05)
            recs = reconcilers if reconcilers is not None else \
                [DependencyReconciler(hooks), HookReconciler(hooks), *transfer_reconcilers(hooks, **kw)]
            mgr, _ = started.enter_context(running_manager(registry, recs))
            return mgr

        yield start


def wait_states(registry: Registry, names: list[str], states: set[JobState], timeout: float = DEADLINE) -> list[Job]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = [j for j in registry.get_many(Job, names) if j is not None]
        if len(jobs) == len(names) and all(j.status.state in states for j in jobs):
            return jobs
        if time.monotonic() > deadline:
            bad = [(j.name, j.status.state.value, j.status.message) for j in jobs if j.status.state not in states]
            raise AssertionError(f"{len(bad)} job(s) not in {sorted(s.value for s in states)}: {bad[:3]}")
        time.sleep(0.02)


def wait_until(pred: Callable[[], Any], timeout: float = DEADLINE, what: str = "condition") -> Any:
    return poll_until(pred, timeout, what)


def tasks(registry: Registry) -> list[TransferTask]:
    return registry.list(TransferTask)[0]
