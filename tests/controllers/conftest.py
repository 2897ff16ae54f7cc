from __future__ import annotations

from collections.abc import Iterator

import pytest

from apis import App, Job, JobState, Registry, open_registry
from apis import _config as config
from controllers import ControllerManager
from controllers.dependency import DependencyReconciler
from controllers.hook import HookReconciler
from controllers.hooks import NoHooks
from tests._support import running_manager


@pytest.fixture
def registry(tmp_path) -> Iterator[Registry]:
    reg = open_registry(f"sqlite:///{tmp_path}/store.db")
    yield reg
    config.reset()


@pytest.fixture
def app(registry: Registry) -> App:
    return registry.create(App(metadata={"name": "hello"}, spec={"command": "echo hi"}))


@pytest.fixture
def lifecycle(registry: Registry) -> Iterator[ControllerManager]:
    """Dependency and hook reconcilers running (no placement, no node agents)."""
    hooks = NoHooks()
    with running_manager(registry, [DependencyReconciler(hooks), HookReconciler(hooks)]) as (mgr, _):
        yield mgr


def make_job(name: str, parents: tuple[str, ...] = (), **spec) -> Job:
    return Job(metadata={"name": name}, spec={"app": "hello", "workdir": name, "parents": list(parents), **spec})


def force(registry: Registry, name: str, state: JobState, **status) -> Job:
    """Put a job in ``state`` as a node agent or user would have (bypassing the reconcilers)."""

    def edit(j: Job) -> None:
        j.status.state = state
        for k, v in status.items():
            setattr(j.status, k, v)

    return registry.mutate(Job, name, edit)
