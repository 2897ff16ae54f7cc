"""Helpers shared by the suites (not fixtures)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import pytest

import store as st
from apis import Registry
from apis._config import SiteConfig
from controllers import ControllerManager
from store.process import process_gone, process_tag
from tests._deadline import DEADLINE


def skip_or_fail(reason: str) -> NoReturn:
    """A real service the test needs is missing: skip here, fail in CI (``CI`` set)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so real services are required)", pytrace=False)
    pytest.skip(reason)


def make_site_config(tmp_path: Path, save: bool = True, **kw: Any) -> SiteConfig:
    """Site ``testsite`` in ``tmp_path/site`` (with ``data/``), on a SQLite store in it unless
    ``store_url`` is given; ``settings.yml`` written when ``save``."""
    path = tmp_path / "site"
    (path / "data").mkdir(parents=True)
    kw.setdefault("store_url", f"sqlite://{path}/store.db")
    cfg = SiteConfig(path=path, name="testsite", **kw)
    if save:
        cfg.save()
    return cfg


@contextmanager
def registry_on(store_url: str) -> Iterator[Registry]:
    """A Registry on a store opened for the block, closed after it."""
    s = st.open_store(store_url)
    try:
        yield Registry(s)
    finally:
        s.close()


@contextmanager
def running_manager(registry: Registry, reconcilers: Sequence[Any], lease_ttl: float = 2, lead_timeout: float = DEADLINE,
                    join_timeout: float = DEADLINE, name: str | None = None,
                    ) -> Iterator[tuple[ControllerManager, threading.Thread]]:
    """A controller manager running ``reconcilers`` in a daemon thread of this process,
    leading (asserted within ``lead_timeout``) when the block starts; stopped after it."""
    mgr = ControllerManager(registry, lease_ttl=lease_ttl, reconcilers=list(reconcilers))
    stop = threading.Event()
    t = threading.Thread(target=mgr.run, args=(stop,), daemon=True, name=name)
    t.start()
    try:
        assert mgr.leading.wait(lead_timeout)
        yield mgr, t
    finally:
        stop.set()
        t.join(join_timeout)


def poll_until(pred: Callable[[], Any], timeout: float = DEADLINE, what: str = "condition", interval: float = 0.02) -> Any:
    """Poll ``pred`` (test code only) until it returns something truthy, and return that;
    fail the test (``pytest.fail.Exception``) after ``timeout`` seconds. The suites' own
    ``wait_until`` call this with their default timeout and interval."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}", pytrace=False)
        time.sleep(interval)


def dead_process_tag() -> str:
    """The process tag (store.process) of a process of this machine that has exited, as a
    kill -9'd controller manager's or node agent's."""
    p = subprocess.Popen(["sleep", "300"])
    tag = process_tag(p.pid)
    p.kill()
    p.wait()
    assert tag and process_gone(tag)
    return tag


def tag_not_known_dead(who: str) -> str:
    """A holder's process tag that must not be judged dead: ``"alive here"`` (this process),
    ``"on another machine"`` (another kernel's boot id), or ``"no process named"`` (empty)."""
    if who == "alive here":
        return process_tag()
    if who == "on another machine":
        boot, rest = dead_process_tag().split(":", 1)
        return f"{'0' * len(boot)}:{rest}"  # another kernel's boot id: its pids are not ours to judge
    return ""
