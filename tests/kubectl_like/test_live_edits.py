"""What may change on a live Job (issue 9): labels, annotations, priority, retry and suspend
always; resource and command fields only while the job is not RUNNING, refused on every
surface (apply, edit, the Python client) because the rule sits in ``Registry.write``."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import apis
from apis import Invalid, Job, JobState, Registry
from apis._config import reset

from .conftest import Site, hello_app, job_doc, write_yaml


def running(reg: Registry, name: str, ns: str) -> Job:
    return reg.mutate(Job, name, lambda j: setattr(j.status, "state", JobState.RUNNING), ns)


@pytest.fixture
def live(any_site: Site, tmp_path: Path) -> tuple[Site, Path]:
    f = write_yaml(tmp_path / "jobs.yaml", [hello_app(), job_doc("r", parameters={"name": "x"}),
                                           job_doc("w", parameters={"name": "y"})])
    assert any_site.run("apply", "-f", str(f)).exit_code == 0
    running(any_site.registry(), "r", any_site.namespace)
    return any_site, f


def test_apply_refuses_resource_edit_of_running_job(live: tuple[Site, Path], tmp_path: Path) -> None:
    site, f = live
    write_yaml(f, [hello_app(), job_doc("r", parameters={"name": "x"}, resources={"numNodes": 4}),
                   job_doc("w", parameters={"name": "y"}, resources={"numNodes": 4})])
    rev = site.revision()
    line = site.run("apply", "-f", str(f)).one_error()
    assert line.startswith("Error from server (Invalid):")
    assert 'jobs.balsam.io "r" is invalid: spec.resources.numNodes: Forbidden' in line and "RUNNING" in line
    assert site.revision() == rev  # nothing written, not even the job that is not running
    # Command fields too (parameters render the command line).
    write_yaml(f, [hello_app(), job_doc("r", parameters={"name": "changed"}), job_doc("w", parameters={"name": "y"})])
    line = site.run("apply", "-f", str(f)).one_error()
    assert "spec.parameters.name: Forbidden" in line and "RUNNING" in line
    # A server dry run runs the same admission; diff reports it as an error (exit 2).
    assert "Forbidden" in site.run("apply", "-f", str(f), "--dry-run=server").one_error()
    r = site.run("diff", "-f", str(f))
    assert r.exit_code == 2 and "Forbidden" in r.stderr


def test_apply_may_change_labels_priority_retry_suspend_of_running_job(live: tuple[Site, Path]) -> None:
    site, f = live
    write_yaml(f, [hello_app(), job_doc("r", labels={"x": "1"}, parameters={"name": "x"}, priority=7,
                                        retry={"limit": 1}, suspend=True),
                   job_doc("w", parameters={"name": "y"}, resources={"numNodes": 4})])
    r = site.run("apply", "-f", str(f))
    assert r.exit_code == 0, r.stderr
    j = site.registry().get(Job, "r", site.namespace)
    assert (j.spec.priority, j.spec.retry.limit if j.spec.retry else None, j.spec.suspend) == (7, 1, True)
    assert j.metadata.labels == {"x": "1"} and j.status.state == JobState.RUNNING
    # The job that is not running took its resource change.
    assert site.registry().get(Job, "w", site.namespace).spec.resources.num_nodes == 4


def test_edit_refuses_resource_edit_of_running_job(live: tuple[Site, Path], tmp_path: Path) -> None:
    site, _ = live
    ed = tmp_path / "ed.sh"
    ed.write_text("#!/bin/sh\nsed -i 's/^    numNodes: 1$/    numNodes: 8/' \"$1\"\n")
    ed.chmod(ed.stat().st_mode | stat.S_IXUSR)
    rev = site.revision()
    line = site.run("edit", "job", "r", env={"EDITOR": str(ed), "KUBE_EDITOR": None, "BALSAM_EDITOR": None}
                    ).one_error()
    assert "spec.resources.numNodes: Forbidden" in line and "RUNNING" in line
    assert site.revision() == rev


@pytest.fixture
def client(site: Site) -> Iterator[Registry]:
    """The Python client pointed at the site's store."""
    reg = apis.use(site.store_url)
    yield reg
    reset()


def test_python_client_refuses_and_allows(site: Site, tmp_path: Path, client: Registry) -> None:
    site.run("apply", "-f", str(write_yaml(tmp_path / "j.yaml", [hello_app(), job_doc("r", parameters={"name": "x"})])))
    running(client, "r", "default")
    job = Job.objects.get(name="r")
    job.num_nodes = 16
    with pytest.raises(Invalid, match=r"spec\.resources\.numNodes: Forbidden.*RUNNING"):
        job.save()
    with pytest.raises(Invalid, match="spec.workdir: Forbidden"):
        Job.objects.filter(name="r").update(workdir="elsewhere")
    # Always allowed: tags, priority.
    job = Job.objects.get(name="r")
    job.tags = {"k": "v"}
    job.save()
    Job.objects.filter(name="r").update(priority=3)
    j = client.get(Job, "r")
    assert j.metadata.labels == {"k": "v"} and j.spec.priority == 3
    # The seed's resize: change the resources AND leave RUNNING in one write (the agent kills
    # the process; placement uses the new size).
    job = Job.objects.get(name="r")
    job.num_nodes = 16
    job.state = "RESTART_READY"
    job.save()
    j = client.get(Job, "r")
    assert j.spec.resources.num_nodes == 16 and j.status.state == JobState.RESTART_READY
    # Not running any more: resource fields may change.
    job = Job.objects.get(name="r")
    job.num_nodes = 2
    job.save()
    assert client.get(Job, "r").spec.resources.num_nodes == 2


def test_suspend_is_shown_in_get(site: Site, tmp_path: Path) -> None:
    f = write_yaml(tmp_path / "j.yaml", [hello_app(), job_doc("s", suspend=True), job_doc("t")])
    site.run("apply", "-f", str(f))
    rows = {ln.split()[0]: ln.split() for ln in site.run("get", "jobs").stdout.splitlines()[1:]}
    assert rows["s"][2] == "CREATED,Suspended" and rows["t"][2] == "CREATED"
    # Resumed by the next apply.
    write_yaml(f, [hello_app(), job_doc("s"), job_doc("t")])
    site.run("apply", "-f", str(f))
    rows = {ln.split()[0]: ln.split() for ln in site.run("get", "jobs").stdout.splitlines()[1:]}
    assert rows["s"][2] == "CREATED"
