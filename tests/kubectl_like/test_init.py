"""balsamctl init: the site directory, its settings and its Site resource."""

from __future__ import annotations

import os
import stat
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


def test_reinit_changes_nothing_but_modes(tmp_path: Path) -> None:
    d = tmp_path / "s"
    assert init(str(d)).exit_code == 0
    before = (d / "settings.yml").read_text()
    s = st.open_store(f"sqlite:///{d}/store.db")
    rev = s.current_revision()
    r = init(str(d))
    assert r.exit_code == 0, r.stderr
    assert r.stdout == f"site s exists at {d.resolve()}: modes are private (0 fixed)\n"
    assert (d / "settings.yml").read_text() == before
    assert s.current_revision() == rev


def test_reinit_cannot_rename(tmp_path: Path) -> None:
    d = tmp_path / "s"
    assert init(str(d)).exit_code == 0
    line = init(str(d), "--name", "other").one_error()
    assert line == f"error: {d.resolve()} is already site 's'; --name cannot rename it"


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_a_new_site_is_private(tmp_path: Path) -> None:
    d = tmp_path / "priv"
    assert init(str(d)).exit_code == 0
    assert _mode(d) == 0o700
    for sub in ("data", "logs", "apps"):
        assert _mode(d / sub) == 0o700, sub
    for f in ("settings.yml", "store.db"):
        assert _mode(d / f) == 0o600, f
    assert not [p for p in d.rglob("*") if _mode(p) & 0o077], "something is readable by others"


def test_init_on_an_existing_site_fixes_modes_without_following_links(tmp_path: Path) -> None:
    d = tmp_path / "old"
    assert init(str(d)).exit_code == 0
    (d / "data" / "w").mkdir()
    out = d / "data" / "w" / "job.out"
    out.write_text("secret\n")
    script = d / "data" / "w" / "run.sh"
    script.write_text("#!/bin/sh\n")
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    os.chmod(outside, 0o644)
    os.symlink(outside, d / "data" / "w" / "link")
    for p, m in ((d, 0o755), (d / "data", 0o755), (d / "data" / "w", 0o755), (out, 0o644), (script, 0o755),
                 (d / "store.db", 0o644), (d / "settings.yml", 0o644)):
        os.chmod(p, m)
    r = init(str(d))
    assert r.exit_code == 0, r.stderr
    assert "(7 fixed)" in r.stdout
    assert [_mode(p) for p in (d, d / "data", d / "data" / "w")] == [0o700] * 3
    assert [_mode(p) for p in (out, d / "store.db", d / "settings.yml")] == [0o600] * 3
    assert _mode(script) == 0o700  # still executable by its owner
    assert _mode(outside) == 0o644  # a link is not followed out of the site


def test_group_sharing_is_recorded_and_applied(tmp_path: Path) -> None:
    d = tmp_path / "team"
    r = init(str(d), "--sharing", "group")
    assert r.exit_code == 0, r.stderr
    assert load_site_config(d).sharing == "group"
    gid = os.lstat(d).st_gid
    assert _mode(d) == 0o2750 and _mode(d / "data") == 0o2750
    assert _mode(d / "store.db") == 0o640 and _mode(d / "settings.yml") == 0o640
    assert all(os.lstat(p).st_gid == gid for p in d.rglob("*"))
    r = init(str(d), "--sharing", "private")  # back to private: recorded, modes fixed
    assert r.exit_code == 0 and "modes are private" in r.stdout
    assert load_site_config(d).sharing == "private" and _mode(d) == 0o700 and _mode(d / "store.db") == 0o600


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
