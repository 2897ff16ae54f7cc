"""Multi-node MPI with Debian's Open MPI: a 2-node x 2-rank job, placed on two whole nodes of
a real Slurm allocation, is started once by the first node's agent through the Site's
``mpirun`` launcher and really runs 4 ranks, two on each node."""

from __future__ import annotations

import re
import shutil

import pytest

from apis import JobState, Registry
from apis._config import SiteConfig
from tests._deadline import DEADLINE
from tests._support import skip_or_fail

from .conftest import Manager, Slurm, make_app, make_batchjob, make_jobs, make_site, wait_batchjob, wait_jobs

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

RANK_SCRIPT = """#!/bin/sh
echo "rank=$OMPI_COMM_WORLD_RANK size=$OMPI_COMM_WORLD_SIZE local=$OMPI_COMM_WORLD_LOCAL_RANK node=$SLURMD_NODENAME"
"""


def test_two_node_two_rank_job_starts_four_ranks_through_mpirun(
        registry: Registry, site: SiteConfig, manager: Manager, slurm: Slurm) -> None:
    if not shutil.which("mpirun"):
        skip_or_fail("Open MPI is not installed (apt-get install openmpi-bin)")
    script = site.path / "rank.sh"
    script.write_text(RANK_SCRIPT)
    script.chmod(0o755)
    make_site(registry, site, "slurm", launcher="mpirun", nodeDefaults={"cpus": 2})
    # Root may run Open MPI only when told so; the App's environment reaches mpirun and (-x) the ranks.
    make_app(registry, "ranks", "{{ script }}", parameters={"script": {}},
             environment={"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"})
    make_jobs(registry, "ranks", ["mpi"], parameters={"script": str(script)},
              # No map-by: the launcher's default (--map-by ppr:<ranksPerNode>:node) places them.
              resources={"numNodes": 2, "ranksPerNode": 2, "launchParams": {"oversubscribe": ""}})
    make_batchjob(registry, "mpi-alloc", nodes=2, wall_time_min=5)
    wait_batchjob(registry, "mpi-alloc", ["running"], timeout=DEADLINE)
    [job] = wait_jobs(registry, ["mpi"], timeout=DEADLINE)
    out = (site.data_path / "work" / "mpi" / "job.out").read_text()
    assert job.status.state is JobState.JOB_FINISHED, (job.status.message, out)
    assert job.status.placement is not None and sorted(job.status.placement.nodes) == ["mpi-alloc-n1", "mpi-alloc-n2"]
    ranks = sorted(re.findall(r"rank=(\d+) size=(\d+) local=(\d+) node=(\w+)", out))
    assert ranks == [("0", "4", "0", "n1"), ("1", "4", "1", "n1"), ("2", "4", "0", "n2"), ("3", "4", "1", "n2")], out
