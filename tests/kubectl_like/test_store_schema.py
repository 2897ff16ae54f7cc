"""A store file of a newer schema than this balsamctl's: one error line, no traceback."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from store._sqlite import SCHEMA_VERSION

from .conftest import make_site


def test_a_store_of_a_newer_schema_is_refused_in_one_line(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    site = make_site(tmp_path, "sqlite", request)
    with sqlite3.connect(site.path / "store.db") as c:
        c.execute("UPDATE meta SET schema_version = ?", (SCHEMA_VERSION + 1,))
    line = site.run("get", "jobs").one_error()
    assert f"has schema {SCHEMA_VERSION + 1}, newer than this balsamctl's ({SCHEMA_VERSION})" in line, line
    assert "upgrade balsamctl" in line, line
