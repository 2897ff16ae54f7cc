"""Every test of the store suite runs against both backends through ``store``.

* ``sqlite``: a fresh file in ``tmp_path``.
* ``etcd``: the session's etcd server (``etcd_url``); tests are isolated by a
  unique key prefix, ``ns``, which every test puts its keys under.
* ``etcd-defaults``: a member started with etcd's default limits (``etcd_defaults_url``):
  the contract holds within them (what an etcd run by someone else allows).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from store import Store, open_store
from tests._support import skip_or_fail

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("etcd", id="etcd", marks=pytest.mark.etcd),
    pytest.param("etcd-defaults", id="etcd-defaults", marks=pytest.mark.etcd),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite://{tmp_path}/store.db"
    url = str(request.getfixturevalue("etcd_url" if backend == "etcd" else "etcd_defaults_url"))
    try:
        import store._etcd  # noqa: F401
    except ModuleNotFoundError as e:
        if e.name != "store._etcd":
            raise
        skip_or_fail("the etcd backend (store/_etcd.py) is not there yet")
    return url


@pytest.fixture
def ns() -> str:
    """This test's key prefix (keeps tests apart on the shared etcd)."""
    return f"/t/{uuid.uuid4().hex[:12]}/"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    try:
        yield s
    finally:
        s.close()
