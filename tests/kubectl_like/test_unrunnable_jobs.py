"""``apply`` and ``create job`` refuse a job that can never run (issue 16: a Site other than
its App's, more nodes/wall time than any queue, more CPUs/GPUs per node than the Site's node)
with one ``error:`` line, exit 1, store unchanged, on both backends."""

from __future__ import annotations

from pathlib import Path

import pytest

from apis import Site as SiteObj

from .conftest import Site, hello_app, job_doc, manifest, write_yaml


@pytest.fixture
def hpc_site(any_site: Site, tmp_path: Path) -> Site:
    reg = any_site.registry()
    try:
        def shape(s: SiteObj) -> None:
            s.spec = s.spec.model_validate({**s.spec.model_dump(by_alias=True), "queues": {
                "debug": {"maxNodes": 8, "maxWallTimeMin": 60}}, "nodeDefaults": {"cpus": 32, "gpus": 4}})
        reg.mutate(SiteObj, any_site.path.name, shape, any_site.namespace)
    finally:
        reg.store.close()
    bound = manifest("App", "bound", {"command": "echo hi", "site": "elsewhere"})
    other = manifest("Site", "elsewhere", {"path": str(tmp_path / "elsewhere")})
    f = write_yaml(tmp_path / "base.yaml", [hello_app(), other, bound])
    r = any_site.run("apply", "-f", str(f))
    assert r.exit_code == 0, r.stderr
    return any_site


CASES = [
    ("too-many-nodes", {"resources": {"numNodes": 9}}, ["--num-nodes", "9"], "more nodes than any queue"),
    ("wall-time", {"resources": {"wallTimeMin": 61}}, ["--wall-time-min", "61"], "longer than any queue"),
    ("cpus", {"resources": {"ranksPerNode": 33}}, ["--ranks-per-node", "33"], "needs 33 CPUs per node"),
    ("gpus", {"resources": {"ranksPerNode": 2, "gpusPerRank": 4}}, ["--ranks-per-node", "2", "--gpus-per-rank", "4"],
     "needs 8 GPUs per node"),
]


@pytest.mark.parametrize("spec, flags, expect", [pytest.param(s, f, e, id=i) for i, s, f, e in CASES])
def test_apply_and_create_refuse_a_job_its_site_can_never_run(hpc_site: Site, tmp_path: Path,
                                                              spec: dict[str, object], flags: list[str],
                                                              expect: str) -> None:
    # "elsewhere" declares nothing, so only a job bound to this site is refused by its limits
    bad = job_doc("bad", "w/bad")
    bad["spec"] = {**bad["spec"], **spec, "site": hpc_site.path.name}  # type: ignore[dict-item]
    f = write_yaml(tmp_path / "j.yaml", [job_doc("ok", "w/ok"), bad])
    rev = hpc_site.revision()
    line = hpc_site.run("apply", "-f", str(f)).one_error()
    assert expect in line, line  # kubectl's "Error from server (Invalid): ..." line
    assert hpc_site.revision() == rev
    line = hpc_site.run("create", "job", "--app", "hello", "-w", "w/1", "--site-name", hpc_site.path.name,
                        *flags).one_error()
    assert expect in line, line  # kubectl's "Error from server (Invalid): ..." line
    assert hpc_site.revision() == rev


def test_a_job_naming_another_site_than_its_app_is_refused(hpc_site: Site, tmp_path: Path) -> None:
    rev = hpc_site.revision()
    f = write_yaml(tmp_path / "j.yaml", [job_doc("x", "w/x", app="bound", site=hpc_site.path.name)])
    line = hpc_site.run("apply", "-f", str(f)).one_error()
    assert 'App "bound" runs only at Site "elsewhere"' in line, line
    line = hpc_site.run("create", "job", "--app", "bound", "-w", "w/1", "--site-name", hpc_site.path.name).one_error()
    assert 'runs only at Site "elsewhere"' in line, line
    assert hpc_site.revision() == rev
    r = hpc_site.run("create", "job", "--app", "bound", "-w", "w/2", "--num-nodes", "500")
    assert r.exit_code == 0, r.stderr  # at its App's site, which declares no limits
