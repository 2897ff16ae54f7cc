"""A multi-node, multi-rank job through the ``pals`` launcher (PALS ``mpiexec``), run for real
by the PALS emulator of tests/batch/pbs_emulator (PALS itself cannot be installed here): the
ranks start, with their rank ids, the job's GPU pinning and the depth/cpu-bind flags."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from apis import JobState, Registry
from apis._config import SiteConfig
from nodeagent import GpuPinning

from .conftest import AgentFactory, bind, make_app, make_job, set_site_launcher, wait_state

S = JobState
EMULATOR_BIN = Path(__file__).resolve().parents[1] / "batch" / "pbs_emulator" / "bin"


@pytest.fixture
def pals(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The emulator's ``mpiexec`` first on PATH (the agents copy this environment); returns
    the log where it writes each call's argv."""
    log = tmp_path / "pals.log"
    monkeypatch.setenv("PATH", f"{EMULATOR_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("PALS_EMULATOR_LOG", str(log))
    monkeypatch.delenv("ZE_AFFINITY_MASK", raising=False)
    return log


def test_two_nodes_two_ranks_each_through_pals_mpiexec(registry: Registry, site: SiteConfig, agent: AgentFactory,
                                                        pals: Path) -> None:
    set_site_launcher(registry, site, "pals")
    # The launcher starts the App's executable once per rank: a script that reports its rank.
    rank_script = site.path / "rank.sh"
    rank_script.write_text('echo "rank=$PALS_RANKID local=$PALS_LOCAL_RANKID size=$PMI_SIZE '
                           'ze=$ZE_AFFINITY_MASK omp=$OMP_NUM_THREADS" >> "$1"\n')
    make_app(registry, "ranks", "/bin/sh {{ script }} {{ log }}", parameters={"script": {}, "log": {}})
    log = site.path / "ranks.log"
    job = make_job(registry, "ranks", "m", parameters={"script": str(rank_script), "log": str(log)},
                   resources={"numNodes": 2, "ranksPerNode": 2, "threadsPerRank": 4, "gpusPerRank": 1})
    tiles = GpuPinning("intel", 2)
    agent("x1000c0s0b0n0", cpus=8, gpus=12, gpu_pinning=tiles, hostname="x1000c0s0b0n0")
    agent("x1000c0s1b0n0", cpus=8, gpus=12, gpu_pinning=tiles, hostname="x1000c0s1b0n0")
    bind(registry, [job], ["x1000c0s0b0n0", "x1000c0s1b0n0"], cpus=list(range(8)), gpus=[0, 1])
    assert wait_state(registry, "m", [S.JOB_FINISHED, S.RUN_ERROR, S.FAILED]).status.state is S.JOB_FINISHED
    lines = sorted(log.read_text().splitlines())
    assert lines == [f"rank={r} local={r % 2} size=4 ze=0.0,0.1 omp=4" for r in range(4)]
    calls = [json.loads(line) for line in pals.read_text().splitlines()]
    assert calls[0][:10] == ["-n", "4", "--ppn", "2", "--depth", "4", "--cpu-bind", "depth",
                             "--hosts", "x1000c0s0b0n0,x1000c0s1b0n0"]


def test_a_cpu_bind_pals_refuses_fails_the_run(registry: Registry, site: SiteConfig, agent: AgentFactory,
                                               pals: Path) -> None:
    set_site_launcher(registry, site, "pals")
    make_app(registry, "ranks", "true")
    job = make_job(registry, "ranks", "bad", resources={"ranksPerNode": 2, "launchParams": {"cpu-bind": "sideways"}})
    agent("n1", cpus=4)
    bind(registry, [job], ["n1"], cpus=[0, 1])
    done = wait_state(registry, "bad", [S.JOB_FINISHED, S.RUN_ERROR, S.FAILED])
    assert done.status.state is S.RUN_ERROR
    assert "invalid --cpu-bind sideways" in (site.data_path / "work" / "bad" / "job.out").read_text()
