"""GPU pinning per platform (``Site.spec.gpuPlatform`` → the agent's ``--gpu-platform`` and
``--gpu-tiles``): the variable a job gets for the GPUs it was placed on, on a simulated node."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from apis import JobState, Node, Registry
from apis._config import SiteConfig
from nodeagent import GpuPinning
from tests._deadline import DEADLINE

from .conftest import AgentFactory, bind, make_app, make_job, wait_state, wait_until

S = JobState
FINAL = (S.JOB_FINISHED, S.RUN_ERROR, S.RUN_TIMEOUT, S.FAILED)
SHOW = ('echo "cuda=${CUDA_VISIBLE_DEVICES-unset} rocr=${ROCR_VISIBLE_DEVICES-unset} '
        'ze=${ZE_AFFINITY_MASK-unset} order=${ZE_ENABLE_PCI_ID_DEVICE_ORDER-unset}"')


def out(site: SiteConfig, name: str) -> str:
    return (site.data_path / "work" / name / "job.out").read_text().strip()


@pytest.mark.parametrize(("pinning", "units", "env"), [
    (GpuPinning("nvidia"), [1, 3], {"CUDA_VISIBLE_DEVICES": "1,3"}),
    (GpuPinning("amd"), [0, 2], {"ROCR_VISIBLE_DEVICES": "0,2"}),
    (GpuPinning("intel"), [0, 1], {"ZE_AFFINITY_MASK": "0,1", "ZE_ENABLE_PCI_ID_DEVICE_ORDER": "1"}),
    (GpuPinning("intel", 2), [0, 1, 5], {"ZE_AFFINITY_MASK": "0.0,0.1,2.1", "ZE_ENABLE_PCI_ID_DEVICE_ORDER": "1"}),
    (GpuPinning("intel", 2), [11], {"ZE_AFFINITY_MASK": "5.1", "ZE_ENABLE_PCI_ID_DEVICE_ORDER": "1"}),
    (GpuPinning("nvidia"), [], {"CUDA_VISIBLE_DEVICES": ""}),
])
def test_each_platform_names_the_placed_units_its_own_way(pinning: GpuPinning, units: list[int],
                                                          env: dict[str, str]) -> None:
    assert pinning.env(units) == env


@pytest.mark.parametrize(("pinning", "gpus", "placed", "want"), [
    (GpuPinning("intel", 2), 12, [2, 3], "cuda=unset rocr=unset ze=1.0,1.1 order=1"),  # Aurora: 6 GPUs x 2 tiles
    (GpuPinning("intel"), 6, [4, 5], "cuda=unset rocr=unset ze=4,5 order=1"),
    (GpuPinning("amd"), 8, [6], "cuda=unset rocr=6 ze=unset order=unset"),
    (GpuPinning("nvidia"), 4, [0, 3], "cuda=0,3 rocr=unset ze=unset order=unset"),
], ids=["intel-tiles", "intel-whole", "amd", "nvidia"])
def test_a_job_sees_only_its_gpus_through_the_platforms_variable(
        registry: Registry, site: SiteConfig, agent: AgentFactory, monkeypatch: pytest.MonkeyPatch,
        pinning: GpuPinning, gpus: int, placed: list[int], want: str) -> None:
    for var in ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "ZE_AFFINITY_MASK", "ZE_ENABLE_PCI_ID_DEVICE_ORDER"):
        monkeypatch.delenv(var, raising=False)
    make_app(registry, "show", SHOW)
    job = make_job(registry, "show", "g", resources={"gpusPerRank": len(placed)})
    agent("n1", cpus=8, gpus=gpus, gpu_pinning=pinning)
    bind(registry, [job], ["n1"], cpus=[0], gpus=placed)
    assert wait_state(registry, "g", FINAL).status.state is S.JOB_FINISHED
    assert out(site, "g") == want


def test_the_agent_process_takes_the_platform_and_tiles_from_its_flags(registry: Registry, site: SiteConfig) -> None:
    site.save()
    make_app(registry, "show", SHOW)
    job = make_job(registry, "show", "t", resources={"gpusPerRank": 2})
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "ZE_AFFINITY_MASK")}
    proc = subprocess.Popen([sys.executable, "-m", "nodeagent", "--site", str(site.path), "--store", site.store_url,
                             "--name", "aurora-node", "--cpus", "8", "--gpus", "12", "--gpu-platform", "intel",
                             "--gpu-tiles", "2", "--lease-ttl", "5"], env=env, cwd=Path(__file__).parents[2])
    try:
        node = wait_until(lambda: registry.try_get(Node, "aurora-node"), DEADLINE, "the agent's Node")
        assert node.spec.gpus == 12  # 6 GPUs x 2 tiles: 12 schedulable units
        bind(registry, [job], ["aurora-node"], cpus=[0], gpus=[10, 11])
        assert wait_state(registry, "t", FINAL).status.state is S.JOB_FINISHED
        assert out(site, "t") == "cuda=unset rocr=unset ze=5.0,5.1 order=1"
    finally:
        proc.terminate()
        proc.wait(DEADLINE)


@pytest.mark.parametrize(("flags", "message"), [
    (["--gpu-tiles", "0"], "error: --gpu-tiles must be at least 1"),
    (["--gpu-platform", "tpu"], "invalid choice: 'tpu'"),
])
def test_bad_gpu_flags_are_one_line_errors(site: SiteConfig, flags: list[str], message: str) -> None:
    site.save()
    res = subprocess.run([sys.executable, "-m", "nodeagent", "--site", str(site.path), *flags],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    assert message in res.stderr
    assert "Traceback" not in res.stderr
