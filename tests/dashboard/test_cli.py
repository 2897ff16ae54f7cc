"""``balsamctl dashboard``'s flags and refusals (no browser needed): bad port, a port in use,
which hosts need the token."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx

from kubectl_like.commands.dashboard import is_loopback
from kubectl_like.dashboard_testing import running_dashboard

from .conftest import balsamctl


def one_error(r) -> str:  # type: ignore[no-untyped-def]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def test_bad_port_and_port_in_use(site: Path) -> None:
    assert "--port" in one_error(balsamctl(site, "dashboard", "--port", "70000"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_error(balsamctl(site, "dashboard", "--port", str(port)))
        assert line == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_only_loopback_goes_without_a_token() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("myhost")


def test_no_token_on_loopback_by_default(site: Path) -> None:
    with running_dashboard(site) as dash:
        r = httpx.get(dash.base + "api/summary", timeout=30)
        assert r.status_code == 200 and r.json()["total"] == 0
        assert "?token=" not in dash.output()
        assert httpx.get(dash.base + "jobs/nope", timeout=30).status_code == 404
