"""Two sites on one 3-member etcd over TLS with auth, each run by its own ``balsamctl up``
(controller manager + two node agents) under its own role, and a client with nothing but a
store URL and its credentials (bench/sites.py drives both; the bench measures, this checks)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from apis import Job
from bench.sites import SITES, TwoSites, failover, gather, runs_per_job, submit, two_sites

pytestmark = [pytest.mark.etcd, pytest.mark.slow]


@pytest.fixture(scope="module")
def sites() -> Iterator[TwoSites]:
    with two_sites(secure=True) as s:
        yield s


def test_a_client_with_only_a_store_url_runs_jobs_on_two_sites(sites: TwoSites) -> None:
    jobs = submit(10, "both")
    assert {j.metadata.namespace for j in jobs} == set(SITES)
    done, errors = gather(jobs, timeout=120)
    assert (done, errors) == (20, 0)
    # Each site ran its own jobs only: their workdirs are in that site's data/, not the other's.
    for job in jobs:
        own = job.metadata.namespace
        other = next(s for s in SITES if s != own)
        assert (sites.data(own) / "both" / job.name / "runs").is_file()
        assert not (sites.data(other) / "both" / job.name).exists()
    assert runs_per_job(sites, jobs, "both") == (0, 0)
    assert Job.objects.filter(site_id="polaris").filter(workdir__contains="both/").count() == 10


@pytest.mark.parametrize("kill", ["in-use", "leader"])
def test_killing_an_etcd_member_mid_run_is_invisible(sites: TwoSites, kill: str) -> None:
    # 0 errors shown to the client, 0 jobs lost, 0 run twice, no traceback in the sites' logs.
    before = sites.tracebacks()
    run = failover(sites, 300, f"kill-{kill}", kill)
    assert run["victim"] is not None
    assert (run["client_errors"], run["failed"]) == (0, 0), run
    assert (run["finished"], run["never_ran"], run["ran_twice"]) == (run["jobs"], 0, 0), run
    assert sites.tracebacks() == before, sites.tail("polaris") + sites.tail("aurora")
