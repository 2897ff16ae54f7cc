"""A site made by ``balsamctl init``, a real ``balsamctl dashboard`` process on it, and a
real headless chromium (selenium + Debian's chromedriver). Browser tests skip when chromium
or selenium is missing, and fail instead under CI (scripts/install installs both)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import store as st
from apis import Registry
from kubectl_like.dashboard_testing import browser_available, headless_chrome
from tests._deadline import DEADLINE
from tests._support import poll_until, skip_or_fail

BALSAMCTL = str(Path(sys.executable).parent / "balsamctl")


def balsamctl(site: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALSAM_")}
    env["BALSAM_SITE_PATH"] = str(site)
    return subprocess.run([BALSAMCTL, *args], capture_output=True, text=True, env=env, cwd=site,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    path = tmp_path / "site"
    r = subprocess.run([BALSAMCTL, "init", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return path


@pytest.fixture
def registry(site: Path) -> Iterator[Registry]:
    s = st.open_store(f"sqlite:///{site}/store.db")
    try:
        yield Registry(s)
    finally:
        s.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    if not browser_available():
        skip_or_fail("chromium / chromium-driver are not installed (scripts/install installs them)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        skip_or_fail("selenium is not installed (pip install -e '.[dev]')")
    with headless_chrome() as driver:
        yield driver


def dom_text(driver: Any, element_id: str) -> str:
    """The element's text, read in one script call (the page re-renders on every push, so an
    element found in one call may be gone in the next)."""
    return str(driver.execute_script(
        "const e = document.getElementById(arguments[0]); return e ? e.innerText : '';", element_id))


def css_text(driver: Any, selector: str) -> str:
    """textContent (hidden text included: a closed <details>) of the first match, or ''."""
    return str(driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';", selector))


def wait_dom(driver: Any, pred: Callable[[], Any], what: str) -> Any:
    return poll_until(pred, DEADLINE, what, interval=0.1)
