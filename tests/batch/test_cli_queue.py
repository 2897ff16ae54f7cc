"""``balsamctl queue submit`` and get/describe/delete batchjob; bad input writes nothing."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from apis import BatchJob, Registry
from apis._config import SiteConfig
from kubectl_like.cli import cli

from .conftest import make_site


def run(site: SiteConfig, *args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(cli, list(args), env={"BALSAM_SITE_PATH": str(site.path), "BALSAM_STORE": None},
                             catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


def test_queue_submit_creates_a_batchjob(registry: Registry, site: SiteConfig) -> None:
    make_site(registry, site, "slurm")
    code, out, err = run(site, "queue", "submit", "-n", "2", "-t", "30", "-q", "debug", "-A", "proj",
                         "--selector", "experiment=foo,size=big", "-x", "qos=low", "--name", "bj1")
    assert (code, out, err) == (0, "batchjob.balsam.io/bj1 created\n", "")
    bj = registry.get(BatchJob, "bj1")
    assert (bj.spec.num_nodes, bj.spec.wall_time_min, bj.spec.queue, bj.spec.project) == (2, 30, "debug", "proj")
    assert bj.spec.selector == {"experiment": "foo", "size": "big"}
    assert bj.spec.optional_params == {"qos": "low"} and bj.spec.site == site.name
    assert bj.status.state == "pending_submission"

    code, out, _ = run(site, "queue", "submit", "-n", "1", "-t", "5", "-o", "name")
    assert code == 0 and out.startswith(f"batchjob.balsam.io/{site.name}-")

    code, out, _ = run(site, "get", "batchjobs")
    assert code == 0 and out.splitlines()[0].split()[:4] == ["NAME", "NODES", "WALLTIME", "STATE"]
    assert "bj1" in out and "pending_submission" in out
    code, out, _ = run(site, "describe", "batchjob", "bj1")
    assert code == 0 and "bj1" in out
    code, out, _ = run(site, "delete", "batchjob", "bj1")
    assert code == 0 and "bj1" in out and registry.try_get(BatchJob, "bj1") is None  # no finalizer yet


@pytest.mark.parametrize("args", [
    ["-t", "5"],  # -n missing
    ["-n", "0", "-t", "5"],
    ["-n", "1", "-t", "0"],
    ["-n", "x", "-t", "5"],
    ["-n", "1", "-t", "5", "--selector", "a!=b"],
    ["-n", "1", "-t", "5", "--selector", "==="],
    ["-n", "1", "-t", "5", "-x", "noequals"],
    ["-n", "1", "-t", "5", "--job-mode", "weird"],
    ["-n", "1", "-t", "5", "--name", "Not_A_Name"],
    ["-n", "1", "-t", "5", "--site-name", "nosuchsite"],
])
def test_bad_input_is_one_error_line_and_writes_nothing(registry: Registry, site: SiteConfig,
                                                         args: list[str]) -> None:
    make_site(registry, site, "slurm")
    before = registry.store.current_revision()
    code, out, err = run(site, "queue", "submit", *args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 1 and out == "" and len(lines) == 1, (code, out, err)
    assert lines[0].startswith(("error: ", "Error from server (")), lines[0]
    assert registry.store.current_revision() == before


def test_submit_without_any_site_says_so(registry: Registry, site: SiteConfig) -> None:
    code, _, err = run(site, "queue", "submit", "-n", "1", "-t", "5")
    assert code == 1 and err.startswith("error: no Site in namespace default")
