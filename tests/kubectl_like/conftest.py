"""Fixtures for the balsamctl suites: a site made by ``balsamctl init`` in tmp_path, on the
SQLite store (default) or on the session's real etcd server (``any_site``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

import store as st
from apis import Registry
from kubectl_like.cli import cli
from tests._deadline import DEADLINE

if TYPE_CHECKING:  # _streams imports this module
    from ._streams import Proc


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def err_lines(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.strip()]

    def one_error(self) -> str:
        """The failure contract: exit 1, exactly one line on stderr in kubectl's form."""
        assert self.exit_code == 1, (self.exit_code, self.stdout, self.stderr)
        assert len(self.err_lines) == 1, self.stderr
        line = self.err_lines[0]
        assert line.startswith(("error: ", "Error from server (")), line
        assert "Traceback" not in self.stderr + self.stdout
        return line


def balsamctl_bin() -> str:
    exe = Path(sys.executable).parent / "balsamctl"
    found = str(exe) if exe.exists() else shutil.which("balsamctl")
    if not found:
        pytest.fail("the balsamctl console script is not installed (pip install -e .)")
    return found


@dataclass
class Site:
    path: Path
    store_url: str
    namespace: str
    backend: str

    def run(self, *args: str, input: str | None = None, env: dict[str, str | None] | None = None) -> Run:
        """``balsamctl ARGS`` in-process (click's CliRunner), inside this site."""
        full_env: dict[str, str | None] = {"BALSAM_SITE_PATH": str(self.path), "BALSAM_STORE": None}
        full_env.update(env or {})
        r = CliRunner().invoke(cli, list(args), input=input, env=full_env, catch_exceptions=False)
        return Run(r.exit_code, r.stdout, r.stderr)

    def sh(self, *args: str, input: str | None = None, cwd: Path | None = None,
           env: dict[str, str] | None = None, timeout: float = DEADLINE) -> Run:
        """``balsamctl ARGS`` as a real process of the installed console script."""
        e = {k: v for k, v in os.environ.items() if not k.startswith("BALSAM_")}
        e["BALSAM_SITE_PATH"] = str(self.path)
        e.update(env or {})
        p = subprocess.run([balsamctl_bin(), *args], input=input, capture_output=True, text=True,
                           cwd=cwd or self.path, env=e, timeout=timeout)
        return Run(p.returncode, p.stdout, p.stderr)

    def registry(self) -> Registry:
        return Registry(st.open_store(self.store_url))

    def revision(self) -> int:
        s = st.open_store(self.store_url)
        try:
            return s.current_revision()
        finally:
            s.close()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("BALSAM_SITE_PATH", "BALSAM_STORE"):
        monkeypatch.delenv(k, raising=False)


def make_site(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> Site:
    path = tmp_path / "site"
    args = ["init", str(path)]
    namespace = "default"
    if backend == "etcd":
        url = request.getfixturevalue("etcd_url")
        # One etcd serves the whole session: a namespace of its own isolates this test.
        namespace = f"t-{uuid.uuid4().hex[:12]}"
        args += ["--store", url, "-n", namespace]
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    url = f"sqlite:///{path / 'store.db'}" if backend == "sqlite" else request.getfixturevalue("etcd_url")
    return Site(path, url, namespace, backend)


@pytest.fixture
def site(tmp_path: Path, request: pytest.FixtureRequest) -> Site:
    """A fresh site on the SQLite store."""
    return make_site(tmp_path, "sqlite", request)


@pytest.fixture(params=["sqlite", pytest.param("etcd", marks=pytest.mark.etcd)])
def any_site(tmp_path: Path, request: pytest.FixtureRequest) -> Site:
    """A fresh site on each store backend (the core CLI tests run on both)."""
    return make_site(tmp_path, request.param, request)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """The balsamctl processes a test started (append them); killed after the test."""
    started: list[Proc] = []
    yield started
    for p in started:
        p.kill()


def manifest(kind: str, name: str, spec: dict[str, object] | None = None, labels: dict[str, str] | None = None,
             **meta: object) -> dict[str, object]:
    md: dict[str, object] = {"name": name, **meta}
    if labels:
        md["labels"] = labels
    doc: dict[str, object] = {"apiVersion": "balsam.io/v1", "kind": kind, "metadata": md}
    if spec is not None:
        doc["spec"] = spec
    return doc


def hello_app(name: str = "hello") -> dict[str, object]:
    # ``name`` has a default: jobs may leave it out (a required parameter left out is refused at creation)
    return manifest("App", name, {"command": "echo hello {{ name }}",
                                  "parameters": {"name": {"required": False, "default": "world"}}})


def job_doc(name: str, workdir: str | None = None, app: str = "hello", labels: dict[str, str] | None = None,
            **spec: object) -> dict[str, object]:
    return manifest("Job", name, {"app": app, "workdir": workdir or f"test/{name}", **spec}, labels)


def write_yaml(path: Path, docs: Sequence[dict[str, object]]) -> Path:
    """Multi-document YAML, the way users write it."""
    import io

    from ruamel.yaml import YAML

    y = YAML()
    y.default_flow_style = False
    buf = io.StringIO()
    y.dump_all(list(docs), buf)
    path.write_text(buf.getvalue())
    return path


@pytest.fixture
def nowhere_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working directory with no site in it or above it."""
    d = tmp_path / "nowhere"
    d.mkdir()
    monkeypatch.chdir(d)
    yield d
