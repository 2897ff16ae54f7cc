"""Batch scripts and plugin choice for a BatchJob that names its own scheduler and node size
(``balsamctl up``'s allocation: ``local`` on any site, ``--cpus/--gpus`` as ``nodeSize``)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest

from apis import BatchJob, Site
from controllers.batch import LocalScheduler, SlurmScheduler, plugin_for, scheduler_site
from controllers.batch.script import TemplateError, node_size, render, template_source


def site(tmp_path: Path, scheduler: str = "slurm", **spec: Any) -> Site:
    return Site.model_validate({"metadata": {"name": "s"},
                                "spec": {"path": str(tmp_path), "scheduler": scheduler, **spec}})


def bj(**spec: Any) -> BatchJob:
    return BatchJob.model_validate({"metadata": {"name": "alloc", "uid": "0123456789"},
                                    "spec": {"numNodes": 2, **spec}})


def agent_argv(script: str) -> list[list[str]]:
    return [shlex.split(line)[:-1] for line in script.splitlines() if "-m nodeagent" in line]


def test_a_local_batchjob_on_a_slurm_site_gets_the_local_plugin_and_template(tmp_path: Path) -> None:
    (tmp_path / "batch-template.sh.j2").write_text("#!/bin/bash\n#SBATCH --site-template\n")
    s = site(tmp_path)
    assert isinstance(plugin_for(scheduler_site(bj(), s)), SlurmScheduler)
    assert "--site-template" in render(bj(), s)  # the Site's own scheduler: its template
    local = bj(scheduler="local")
    assert isinstance(plugin_for(scheduler_site(local, s)), LocalScheduler)
    assert scheduler_site(local, s).spec.path == s.spec.path and s.spec.scheduler == "slurm"
    text = render(local, s)
    assert "#SBATCH" not in text and "srun" not in text
    assert [a[a.index("--name") + 1] for a in agent_argv(text)] == ["alloc-0", "alloc-1"]


def test_node_size_goes_to_the_agents_field_by_field_over_the_sites_defaults(tmp_path: Path) -> None:
    plain, defaults = site(tmp_path, "local"), site(tmp_path, "local", nodeDefaults={"cpus": 8, "gpus": 1})
    assert node_size(bj(), plain) == (None, None)  # each agent counts its own node
    assert node_size(bj(), defaults) == (8, 1)
    assert node_size(bj(nodeSize={"cpus": 64, "gpus": 8}), defaults) == (64, 8)
    assert node_size(bj(nodeSize={"gpus": 4}), defaults) == (8, 4)
    assert node_size(bj(nodeSize={"cpus": 3}), plain) == (3, None)
    [argv, _] = agent_argv(render(bj(nodeSize={"cpus": 64, "gpus": 8}), plain))
    assert argv[argv.index("--cpus") + 1] == "64" and argv[argv.index("--gpus") + 1] == "8"
    [argv, _] = agent_argv(render(bj(nodeSize={"cpus": 3}), plain))
    assert "--gpus" not in argv and argv[argv.index("--cpus") + 1] == "3"


def test_node_size_and_scheduler_are_validated() -> None:
    with pytest.raises(ValueError, match="cpus"):
        bj(nodeSize={"cpus": 0})
    with pytest.raises(ValueError, match="scheduler"):
        bj(scheduler="lsf")


def test_a_scheduler_without_a_template_is_a_template_error(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="'lsf' is not supported"):
        template_source(site(tmp_path), "lsf")


def test_the_pbs_script_asks_for_the_sites_system_and_file_systems_and_starts_one_agent_per_node(
        tmp_path: Path) -> None:
    aurora = site(tmp_path, "pbs", gpuPlatform="intel", nodeDefaults={"cpus": 208, "gpus": 12, "gpuTiles": 2},
                  pbs={"system": "aurora", "place": "scatter", "filesystems": "home:flare"})
    text = render(bj(wallTimeMin=90.5, queue="debug", project="Proj"), aurora)
    directives = [line for line in text.splitlines() if line.startswith("#PBS")]
    assert directives == ["#PBS -N balsam-alloc-01234567", "#PBS -l select=2:system=aurora",
                          "#PBS -l walltime=1:30:30", "#PBS -l place=scatter", "#PBS -l filesystems=home:flare",
                          "#PBS -q debug", "#PBS -A Proj"]
    assert '$PBS_NODEFILE' in text and "mpiexec -n 1 --ppn 1 --cpu-bind none --hosts" in text
    [argv] = [shlex.split(line.strip().removesuffix("&"))[:-4] for line in text.splitlines() if "-m nodeagent" in line]
    assert argv[argv.index("--gpus") + 1] == "12" and argv[argv.index("--gpu-platform") + 1] == "intel"
    assert argv[argv.index("--gpu-tiles") + 1] == "2"
    plain = render(bj(), site(tmp_path, "pbs"))  # no spec.pbs: a bare select, NVIDIA (no flags)
    assert "#PBS -l select=2\n" in plain and "filesystems" not in plain and "--gpu-platform" not in plain
