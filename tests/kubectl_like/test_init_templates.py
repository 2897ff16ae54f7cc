"""``balsamctl init --template polaris|aurora``: the Site spec of ALCF's machines (Balsam's
site templates), and an unknown template refused before anything is made."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import store as st
from apis import Registry, Site, load_site_config
from kubectl_like.cli import cli

from .conftest import Run


def init(*args: str) -> Run:
    r = CliRunner().invoke(cli, ["init", *args], catch_exceptions=False)
    return Run(r.exit_code, r.stdout, r.stderr)


def site_of(d: Path) -> Site:
    cfg = load_site_config(d)
    return Registry(st.open_store(cfg.store_url)).get(Site, cfg.name)


def test_polaris_is_pbs_with_pals_four_nvidia_gpus_and_its_queues(tmp_path: Path) -> None:
    r = init(str(tmp_path / "polaris"), "--template", "polaris")
    assert (r.exit_code, r.stdout) == (0, "site.balsam.io/polaris created\n"), r.stderr
    spec = site_of(tmp_path / "polaris").spec
    assert (spec.scheduler, spec.launcher, spec.gpu_platform) == ("pbs", "pals", "nvidia")
    assert (spec.node_defaults.cpus, spec.node_defaults.gpus, spec.node_defaults.gpu_tiles) == (32, 4, 1)
    assert spec.pbs is not None and (spec.pbs.system, spec.pbs.filesystems) == ("polaris", "home:grand:eagle")
    assert set(spec.queues) == {"debug", "debug-scaling", "prod", "preemptable"}
    assert (spec.queues["debug"].max_nodes, spec.queues["prod"].max_wall_time_min) == (2, 1440)
    assert spec.path == str((tmp_path / "polaris").resolve())


def test_aurora_is_pbs_with_pals_and_twelve_intel_gpu_tiles(tmp_path: Path) -> None:
    assert init(str(tmp_path / "aurora"), "--template", "aurora").exit_code == 0
    spec = site_of(tmp_path / "aurora").spec
    assert (spec.scheduler, spec.launcher, spec.gpu_platform) == ("pbs", "pals", "intel")
    assert (spec.node_defaults.cpus, spec.node_defaults.gpus, spec.node_defaults.gpu_tiles) == (104, 12, 2)
    assert spec.pbs is not None and (spec.pbs.system, spec.pbs.filesystems) == ("aurora", "home:flare")
    assert set(spec.queues) == {"debug", "debug-scaling", "prod"}
    assert spec.queues["prod"].max_nodes == 2048


@pytest.mark.parametrize("name", ["nosuch", "", "POLARIS"])
def test_an_unknown_template_is_one_error_line_and_makes_nothing(tmp_path: Path, name: str) -> None:
    d = tmp_path / "x"
    r = init(str(d), "--template", name)
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr == f'error: unknown site template "{name}" (known: aurora, polaris)\n'
    assert not d.exists()
