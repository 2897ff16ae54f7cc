"""balsamctl init: the site directory, its settings and its Site resource."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from ruamel.yaml import YAML

import store as st
from apis import Registry, Site, load_site_config
from kubectl_like.cli import cli

from .conftest import Run, make_site


def init(*args: str) -> Run:
    r = CliRunner().invoke(cli, ["init", *args], catch_exceptions=False)
    return Run(r.exit_code, r.stdout, r.stderr)


def test_init_makes_directories_settings_and_site(tmp_path: Path) -> None:
    d = tmp_path / "laptop"
    r = init(str(d))
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "site.balsam.io/laptop created\n"
    for sub in ("data", "logs", "apps"):
        assert (d / sub).is_dir()
    settings = YAML(typ="safe").load((d / "settings.yml").read_text())
    assert settings["store"] == f"sqlite:///{d.resolve()}/store.db"
    assert settings["name"] == "laptop"
    cfg = load_site_config(d)
    assert cfg.store_url == settings["store"] and cfg.namespace == "default"
    reg = Registry(st.open_store(cfg.store_url))
    site = reg.get(Site, "laptop")
    assert site.spec.path == str(d.resolve())


def test_init_relative_dir_records_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert init("rel").exit_code == 0
    cfg = load_site_config(tmp_path / "rel")
    assert cfg.store_url == f"sqlite:///{(tmp_path / 'rel').resolve()}/store.db"
    site = Registry(st.open_store(cfg.store_url)).get(Site, "rel")
    assert site.spec.path == str((tmp_path / "rel").resolve())


def test_init_sanitizes_directory_name_to_dns1123(tmp_path: Path) -> None:
    r = init(str(tmp_path / "My_Site..2"))
    assert r.stdout == "site.balsam.io/my-site-2 created\n"


def test_init_name_flag(tmp_path: Path) -> None:
    r = init(str(tmp_path / "x"), "--name", "theta")
    assert r.stdout == "site.balsam.io/theta created\n"
    assert load_site_config(tmp_path / "x").name == "theta"


def test_reinit_is_an_error_and_changes_nothing(tmp_path: Path) -> None:
    d = tmp_path / "s"
    assert init(str(d)).exit_code == 0
    before = (d / "settings.yml").read_text()
    s = st.open_store(f"sqlite:///{d}/store.db")
    rev = s.current_revision()
    line = init(str(d)).one_error()
    assert "already a site" in line
    assert (d / "settings.yml").read_text() == before
    assert s.current_revision() == rev


def test_init_bad_name_leaves_nothing_behind(tmp_path: Path) -> None:
    d = tmp_path / "s"
    line = init(str(d), "--name", "Not_Valid").one_error()
    assert "Not_Valid" in line
    assert not d.exists()


def test_init_unreachable_store_leaves_nothing_behind(tmp_path: Path) -> None:
    d = tmp_path / "s"
    line = init(str(d), "--store", "etcd://127.0.0.1:1").one_error()
    assert "127.0.0.1:1" in line
    assert not d.exists()


def test_init_into_existing_empty_directory(tmp_path: Path) -> None:
    d = tmp_path / "existing"
    d.mkdir()
    (d / "keep.txt").write_text("mine")
    assert init(str(d)).exit_code == 0
    assert (d / "keep.txt").read_text() == "mine"


@pytest.mark.etcd
def test_init_on_etcd(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    site = make_site(tmp_path, "etcd", request)
    cfg = load_site_config(site.path)
    assert cfg.store_url == site.store_url and cfg.namespace == site.namespace
    assert site.registry().get(Site, "site", site.namespace).spec.path == str(site.path.resolve())
    r = site.run("get", "sites")
    assert r.exit_code == 0 and "site" in r.stdout
