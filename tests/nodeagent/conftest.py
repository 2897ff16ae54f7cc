"""Fixtures of the node-agent suite: a real site directory, a real store, real agents.

There is no placement reconciler here: tests bind jobs themselves with :func:`bind`, which
writes ``status.placement`` for many jobs in one transaction, as the reconciler does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from apis import App, Job, JobState, Node, Placement, Registry, Site, advance
from apis._config import SiteConfig
from nodeagent import NodeAgent
from tests._deadline import DEADLINE
from tests._support import make_site_config, poll_until, registry_on, skip_or_fail

REPO = Path(__file__).resolve().parents[2]

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("etcd", id="etcd", marks=pytest.mark.etcd),
]


@pytest.fixture(params=BACKENDS)
def any_site(request: pytest.FixtureRequest, tmp_path: Path) -> SiteConfig:
    """A site on SQLite, or on the session's etcd (in a namespace of its own)."""
    if request.param == "sqlite":
        return make_site_config(tmp_path, save=False)
    url = str(request.getfixturevalue("etcd_url"))
    try:
        import store._etcd  # noqa: F401
    except ModuleNotFoundError as e:  # pragma: no cover - backend not there yet
        skip_or_fail(f"the etcd backend is not importable: {e}")
    return make_site_config(tmp_path, save=False, store_url=url, namespace=f"t{uuid.uuid4().hex[:10]}")


@pytest.fixture
def any_registry(any_site: SiteConfig) -> Iterator[Registry]:
    with registry_on(any_site.store_url) as reg:
        yield reg


AgentFactory = Callable[..., NodeAgent]


def _agent_factory(registry: Registry, site: SiteConfig) -> Iterator[AgentFactory]:
    agents: list[NodeAgent] = []

    def start(name: str = "n1", cpus: int = 8, gpus: int = 0, **kw: Any) -> NodeAgent:
        kw.setdefault("lease_ttl", 5)
        kw.setdefault("kill_grace", 1.0)
        a = NodeAgent(registry, name=name, cpus=cpus, gpus=gpus, site_config=site, **kw).start()
        agents.append(a)
        return a

    yield start
    for a in agents:
        a.stop(timeout=DEADLINE)
        assert a.wait(DEADLINE), f"agent {a.name} did not stop"


@pytest.fixture
def agent(registry: Registry, site: SiteConfig) -> Iterator[AgentFactory]:
    """Start in-process agents (``agent(name, cpus, gpus, **kw)``); stopped after the test."""
    yield from _agent_factory(registry, site)


@pytest.fixture
def any_agent(any_registry: Registry, any_site: SiteConfig) -> Iterator[AgentFactory]:
    yield from _agent_factory(any_registry, any_site)


# --- helpers ---------------------------------------------------------------------------


def make_app(registry: Registry, name: str, command: str, namespace: str = "default", **spec: Any) -> App:
    return registry.create(App(metadata={"name": name, "namespace": namespace},  # type: ignore[arg-type]
                               spec={"command": command, **spec}))


def make_jobs(registry: Registry, app: str, names: Iterable[str], namespace: str = "default",
              parameters: dict[str, str] | None = None, **spec: Any) -> list[Job]:
    jobs = [
        Job(metadata={"name": n, "namespace": namespace},  # type: ignore[arg-type]
            spec={"app": app, "workdir": f"work/{n}", "parameters": parameters or {}, **spec})
        for n in names
    ]
    return list(registry.create_many(jobs))


def make_job(registry: Registry, app: str, name: str, namespace: str = "default", **kw: Any) -> Job:
    return make_jobs(registry, app, [name], namespace, **kw)[0]


def bind(registry: Registry, jobs: Iterable[Job], nodes: list[str], cpus: list[int] | None = None,
         gpus: list[int] | None = None, occupancy: float = 1.0) -> list[Job]:
    """Do what the placement reconciler does: every job → PREPROCESSED (history and all)
    with ``status.placement`` on ``nodes``, in ONE transaction."""
    pairs = []
    for j in jobs:
        b = j.model_copy(deep=True)
        path = [JobState.READY, JobState.STAGED_IN, JobState.PREPROCESSED]
        if b.status.state is JobState.CREATED:
            advance(b, path, "test")
        b.status.placement = Placement(nodes=nodes, cpus=cpus if cpus is not None else [0],
                                       gpus=gpus or [], occupancy=occupancy)
        pairs.append((j, b))
    return list(registry.update_many(pairs))


def set_site_launcher(registry: Registry, site: SiteConfig, launcher: str) -> None:
    registry.create(Site(metadata={"name": site.name, "namespace": site.namespace},  # type: ignore[arg-type]
                         spec={"path": str(site.path), "launcher": launcher}))


def wait_until(pred: Callable[[], Any], timeout: float = DEADLINE, what: str = "condition") -> Any:
    """Poll ``pred`` (test code only) until it returns something truthy; fail after ``timeout``."""
    return poll_until(pred, timeout, what)


def wait_state(registry: Registry, name: str, states: Iterable[JobState | str], timeout: float = DEADLINE,
               namespace: str = "default") -> Job:
    want = {JobState(s) for s in states}
    last: list[Job | None] = [None]

    def check() -> Job | None:
        j = registry.try_get(Job, name, namespace)
        last[0] = j
        return j if j is not None and j.status.state in want else None

    try:
        return wait_until(check, timeout, f"job {name} to reach {sorted(want)}")
    except pytest.fail.Exception:
        j = last[0]
        raise AssertionError(f"job {name} is {j.status.state if j else 'gone'}: "
                             f"{j.status.message if j else ''}") from None


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for init to reap it counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def read_pid(path: Path, timeout: float = DEADLINE) -> int:
    text = wait_until(lambda: path.exists() and path.read_text().strip(), timeout, f"{path} to be written")
    return int(text)


def node_of(registry: Registry, name: str, namespace: str = "default") -> Node | None:
    return registry.try_get(Node, name, namespace)


@contextmanager
def agent_process(registry: Registry, site: SiteConfig, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """:func:`spawn_agent_process`, once its Node (``--name``) registered; killed after the
    block if it still runs."""
    proc = spawn_agent_process(site, *args)
    try:
        name = args[args.index("--name") + 1]
        wait_until(lambda: node_of(registry, name), DEADLINE, "the agent to register")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def spawn_agent_process(site: SiteConfig, *args: str) -> subprocess.Popen[bytes]:
    """``python -m nodeagent --site SITE ARGS...`` as a separate process."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-m", "nodeagent", "--site", str(site.path), *args],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
