"""Site templates for ``balsamctl init --template NAME``: the Site spec of a known machine, as
Balsam's ``config/defaults/<site>/settings.yml`` describe them (node size, queues and their
limits, launcher, scheduler, GPU platform, file systems).

``nodeDefaults.cpus`` counts cores (a job's ``ranksPerNode * threadsPerRank / threadsPerCore``
is counted against it); ``gpus`` counts schedulable GPU units (Aurora's tiles).
"""

from __future__ import annotations

from typing import Any

from ._kinds import SiteSpec

TEMPLATES: dict[str, dict[str, Any]] = {
    # ALCF Polaris: HPE Apollo 6500, 1 AMD EPYC Milan (32 cores, 64 hardware threads) and
    # 4 NVIDIA A100 per node; PBS Pro, Cray PALS mpiexec.
    "polaris": {
        "scheduler": "pbs",
        "launcher": "pals",
        "gpuPlatform": "nvidia",
        "nodeDefaults": {"cpus": 32, "gpus": 4},
        "pbs": {"system": "polaris", "place": "scatter", "filesystems": "home:grand:eagle"},
        "queues": {
            "debug": {"maxNodes": 2, "maxWallTimeMin": 60, "maxQueuedJobs": 100},
            "debug-scaling": {"maxNodes": 10, "maxWallTimeMin": 60, "maxQueuedJobs": 1},
            "prod": {"maxNodes": 496, "maxWallTimeMin": 1440, "maxQueuedJobs": 100},
            "preemptable": {"maxNodes": 10, "maxWallTimeMin": 4320, "maxQueuedJobs": 20},
        },
    },
    # ALCF Aurora: 2 Intel Xeon Max (104 cores, 208 hardware threads) and 6 Intel Data Center
    # GPU Max per node, each of 2 tiles (12 schedulable units, ZE_AFFINITY_MASK=GPU.TILE).
    "aurora": {
        "scheduler": "pbs",
        "launcher": "pals",
        "gpuPlatform": "intel",
        "nodeDefaults": {"cpus": 104, "gpus": 12, "gpuTiles": 2},
        "pbs": {"system": "aurora", "place": "scatter", "filesystems": "home:flare"},
        "queues": {
            "debug": {"maxNodes": 2, "maxWallTimeMin": 60, "maxQueuedJobs": 1},
            "debug-scaling": {"maxNodes": 31, "maxWallTimeMin": 60, "maxQueuedJobs": 1},
            "prod": {"maxNodes": 2048, "maxWallTimeMin": 1080, "maxQueuedJobs": 100},
        },
    },
}


def site_template(name: str, path: str) -> SiteSpec:
    """The SiteSpec of template ``name`` for a site at ``path``; ValueError naming the known
    templates when there is none of that name."""
    try:
        spec = TEMPLATES[name]
    except KeyError:
        raise ValueError(f'unknown site template "{name}" (known: {", ".join(sorted(TEMPLATES))})') from None
    return SiteSpec.model_validate({**spec, "path": path})
