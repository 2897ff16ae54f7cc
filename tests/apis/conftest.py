"""A registry on each store backend, for the client's tests that involve the store.

* ``sqlite``: a fresh file in ``tmp_path``.
* ``etcd``: the session's etcd (``etcd_url``); each test works in a namespace of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import store as st
from apis import App, AppSpec, ObjectMeta, Registry
from apis import _config as config


@dataclass
class Backend:
    name: str
    url: str
    registry: Registry
    namespace: str

    def app(self, name: str = "echo", command: str = "echo {{ x }}", **params: dict[str, object]) -> App:
        spec = AppSpec.model_validate({"command": command, "parameters": params or {"x": {"required": True}}})
        return self.registry.create(App(metadata=ObjectMeta(name=name, namespace=self.namespace), spec=spec))


@pytest.fixture(params=["sqlite", pytest.param("etcd", marks=pytest.mark.etcd)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        url, ns = f"sqlite:///{tmp_path / 'store.db'}", "default"
    else:
        url, ns = str(request.getfixturevalue("etcd_url")), f"t-{uuid.uuid4().hex[:12]}"
    s = st.open_store(url)
    try:
        yield Backend(request.param, url, Registry(s), ns)
    finally:
        s.close()
        config.reset()
