"""balsamctl create job (Balsam's flags) and create -f."""

from __future__ import annotations

from pathlib import Path

import pytest

from apis import Job

from .conftest import Site, hello_app, job_doc, manifest, write_yaml


@pytest.fixture
def hsite(any_site: Site, tmp_path: Path) -> Site:
    app = hello_app()  # plus an optional "greeting": a parameter the App does not declare is refused
    app["spec"]["parameters"]["greeting"] = {"required": False, "default": "hello"}  # type: ignore[index]
    f = write_yaml(tmp_path / "base.yaml", [app, job_doc("p1", "w/p1"), job_doc("p2", "w/p2")])
    assert any_site.run("apply", "-f", str(f)).exit_code == 0
    return any_site


def test_create_job_with_every_flag(hsite: Site) -> None:
    rev = hsite.revision()
    r = hsite.run(
        "create", "job", "--app", "hello", "-w", "demo/hello2", "-p", "name=world2", "--param", "greeting=hi there",
        "--tag", "experiment=foo", "-t", "run=5", "--num-nodes", "2", "--ranks-per-node", "4",
        "--threads-per-rank", "2", "--threads-per-core", "2", "--gpus-per-rank", "0.5",
        "--node-packing-count", "3", "--wall-time-min", "15", "--launch-param", "cpu-bind=depth",
        "--parent", "p1", "--parent", "p2", "--priority", "7", "--name", "full",
    )
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "job.balsam.io/full created\n"
    assert hsite.revision() == rev + 1
    j = hsite.registry().get(Job, "full", hsite.namespace)
    s, res = j.spec, j.spec.resources
    assert (s.app, s.workdir, s.parents, s.priority) == ("hello", "demo/hello2", ["p1", "p2"], 7)
    assert s.parameters == {"name": "world2", "greeting": "hi there"}
    assert j.metadata.labels == {"experiment": "foo", "run": "5"}
    assert (res.num_nodes, res.ranks_per_node, res.threads_per_rank, res.threads_per_core) == (2, 4, 2, 2)
    assert (res.gpus_per_rank, res.node_packing_count, res.wall_time_min) == (0.5, 3, 15)
    assert res.launch_params == {"cpu-bind": "depth"}
    assert j.metadata.namespace == hsite.namespace


def test_create_job_defaults_and_generated_name(hsite: Site) -> None:
    r = hsite.run("create", "job", "-a", "hello", "-w", "test/1", "-p", "name=x")
    assert r.exit_code == 0, r.stderr
    ref = r.stdout.strip().removesuffix(" created")
    assert ref.startswith("job.balsam.io/hello-")
    j = hsite.registry().get(Job, ref.split("/", 1)[1], hsite.namespace)
    res = j.spec.resources
    # The seed's defaults: one node, one rank, one thread, no GPU, packing count 1.
    assert (res.num_nodes, res.ranks_per_node, res.threads_per_rank, res.gpus_per_rank,
            res.node_packing_count) == (1, 1, 1, 0, 1)
    assert j.spec.parents == [] and j.metadata.labels == {}


def test_create_job_output_and_dry_run(hsite: Site) -> None:
    rev = hsite.revision()
    r = hsite.run("create", "job", "-a", "hello", "-w", "w", "--name", "dry", "--dry-run")
    assert r.stdout == "job.balsam.io/dry created (dry run)\n"
    r = hsite.run("create", "job", "-a", "hello", "-w", "w", "--name", "dry", "--dry-run=server")
    assert r.stdout == "job.balsam.io/dry created (server dry run)\n"
    assert hsite.revision() == rev
    r = hsite.run("create", "job", "-a", "hello", "-w", "w", "--name", "named", "-o", "name")
    assert r.stdout == "job.balsam.io/named\n"
    line = hsite.run("create", "job", "-a", "hello", "-w", "w", "--name", "named").one_error()
    assert line == 'Error from server (AlreadyExists): jobs.balsam.io "named" already exists'


def test_create_f_allows_generate_name_and_refuses_existing(hsite: Site, tmp_path: Path) -> None:
    gen = manifest("Job", "", {"app": "hello", "workdir": "w"})
    gen["metadata"] = {"generateName": "batch-", "labels": {"g": "1"}}
    f = write_yaml(tmp_path / "g.yaml", [gen, gen, job_doc("fresh", "w/f")])
    r = hsite.run("create", "-f", str(f))
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3 and all(ln.startswith("job.balsam.io/batch-") for ln in lines[:2])
    assert lines[0] != lines[1] and lines[2] == "job.balsam.io/fresh created"
    # An object that already exists: an error naming it and where it was written; nothing created.
    rev = hsite.revision()
    f2 = write_yaml(tmp_path / "e.yaml", [job_doc("new-one", "w/n"), job_doc("p1", "w/p1")])
    line = hsite.run("create", "-f", str(f2)).one_error()
    assert line == (f'Error from server (AlreadyExists): error when creating "{f2}" (document 2): '
                    'jobs.balsam.io "p1" already exists (no objects were created)')
    assert hsite.revision() == rev
    assert hsite.registry().try_get(Job, "new-one", hsite.namespace) is None


def test_create_without_kind_or_file(hsite: Site) -> None:
    assert "must specify -f" in hsite.run("create").one_error()
