"""A real ``balsamctl dashboard`` process and a real headless browser (Debian's chromium
through its chromedriver, with selenium), for tests/dashboard and ``python -m bench
dashboard`` — as ``store/testing.py`` is for etcd. Needs the dev extra (selenium) and the
system packages ``chromium chromium-driver`` (scripts/install)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = "/usr/bin/chromium"


def browser_available() -> bool:
    return os.path.exists(CHROMEDRIVER) and os.path.exists(CHROMIUM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DashboardProcess:
    """``balsamctl dashboard`` on 127.0.0.1 (a free port) for the site at ``site``; with a
    ``token``, started with ``--require-token`` and that token."""

    def __init__(self, site: Path, token: str | None = None, namespace: str | None = None) -> None:
        self.site = site
        self.token = token
        self.port = free_port()
        exe = Path(sys.executable).parent / "balsamctl"
        cmd = [str(exe) if exe.exists() else shutil.which("balsamctl") or "balsamctl", "dashboard",
               "--port", str(self.port)]
        if token:
            cmd.append("--require-token")
        if namespace:
            cmd += ["-n", namespace]
        env = {k: v for k, v in os.environ.items() if not k.startswith("BALSAM_")}
        env["BALSAM_SITE_PATH"] = str(site)
        if token:
            env["BALSAM_DASHBOARD_TOKEN"] = token
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env, cwd=site)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def url(self, path: str = "", token: str | None = None) -> str:
        tok = token if token is not None else self.token
        return self.base + path + (f"?token={tok}" if tok else "")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until /healthz answers (the store is listed before the server listens)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dashboard exited with {self.proc.returncode}: {self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base + "healthz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"dashboard not ready after {timeout}s: {self.output()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


@contextlib.contextmanager
def running_dashboard(site: Path, token: str | None = None, namespace: str | None = None,
                      timeout: float = 120.0) -> Iterator[DashboardProcess]:
    d = DashboardProcess(site, token, namespace)
    try:
        d.wait_ready(timeout)
        yield d
    finally:
        d.stop()


@contextlib.contextmanager
def headless_chrome(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A selenium ``webdriver.Chrome`` on Debian's chromium (no Selenium Manager, no network)."""
    from selenium import webdriver  # the dev extra; imported here so the CLI never needs it
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              f"--window-size={width},{height}"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
