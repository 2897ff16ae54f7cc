"""The Python client works in the site's namespace (settings.yml ``namespace:``), as the CLI
does: it reads only that namespace's jobs and writes new ones there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import apis
from apis import App, AppSpec, Job, ObjectMeta
from apis import _config as config
from apis._config import SiteConfig


@pytest.fixture
def team_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SiteConfig]:
    path = tmp_path / "site"
    (path / "data").mkdir(parents=True)
    cfg = SiteConfig(path=path, name="team", store_url=f"sqlite:///{path}/store.db", namespace="team-a")
    cfg.save()
    monkeypatch.setenv("BALSAM_SITE_PATH", str(path))
    monkeypatch.delenv("BALSAM_STORE", raising=False)
    monkeypatch.delenv("BALSAM_NAMESPACE", raising=False)
    config.reset()
    yield cfg
    config.reset()


def _app(reg: apis.Registry, namespace: str) -> None:
    reg.create(App(metadata=ObjectMeta(name="echo", namespace=namespace), spec=AppSpec(command="echo {{ x }}")))


def test_objects_read_only_the_site_namespace(team_site: SiteConfig) -> None:
    reg = apis.default_registry()
    for ns in ("default", "team-a"):
        _app(reg, ns)
        reg.create(Job.model_validate({"name": f"in-{ns}", "namespace": ns, "app_id": "echo", "workdir": ns,
                                       "parameters": {"x": "1"}}))
    assert apis.default_namespace() == "team-a"
    assert [j.name for j in Job.objects.all()] == ["in-team-a"]
    assert Job.objects.count() == 1
    assert [a.namespace for a in App.objects.all()] == ["team-a"]


def test_save_and_bulk_create_write_to_the_site_namespace(team_site: SiteConfig) -> None:
    reg = apis.default_registry()
    _app(reg, "team-a")
    job = Job(app_id="echo", workdir="w1", parameters={"x": "1"})
    job.save()
    made = Job.objects.bulk_create([Job(app_id="echo", workdir=f"b{i}", parameters={"x": "1"}) for i in range(3)])
    assert job.namespace == "team-a"
    assert {j.namespace for j in made} == {"team-a"}
    assert reg.count(Job, "team-a") == 4
    assert reg.count(Job, "default") == 0
    # a namespace named explicitly still wins
    _app(reg, "default")
    other = Job(app_id="echo", workdir="w2", namespace="default", parameters={"x": "1"})
    other.save()
    assert reg.count(Job, "default") == 1


def test_use_with_a_namespace_overrides_the_site(team_site: SiteConfig) -> None:
    apis.use(site=team_site.path, namespace="team-b")
    assert apis.default_namespace() == "team-b"
    assert Job.objects.all().namespace == "team-b"
