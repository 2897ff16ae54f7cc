"""balsamctl patch: merge (RFC 7386) and JSON (RFC 6902) patches, --dry-run, CAS, bad patches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apis import Job, JobState

from ._streams import TO_RUNNING, move
from .conftest import Site, hello_app, job_doc, write_yaml


@pytest.fixture
def two(any_site: Site, tmp_path: Path) -> Site:
    docs = [hello_app(), job_doc("a", "w/a", labels={"team": "x"}, parameters={"name": "a"}),
            job_doc("b", "w/b", parameters={"name": "b"})]
    assert any_site.run("apply", "-f", str(write_yaml(tmp_path / "j.yaml", docs))).exit_code == 0
    return any_site


def job(site: Site, name: str) -> Job:
    return site.registry().get(Job, name, site.namespace)


def test_merge_patch_sets_and_removes_fields(two: Site) -> None:
    r = two.run("patch", "job", "a", "-p", '{"spec": {"priority": 7, "data": {"note": "x", "keep": 1}}}')
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == "job.balsam.io/a patched"
    j = job(two, "a")
    assert j.spec.priority == 7 and j.spec.data == {"note": "x", "keep": 1}
    assert j.metadata.generation == 2  # a spec change, as the registry counts them
    assert two.run("patch", "job", "a", "-p", '{"spec": {"data": {"note": null}}}').exit_code == 0
    assert job(two, "a").spec.data == {"keep": 1}  # null removes the key, the rest is merged


def test_merge_is_the_default_and_yaml_is_accepted(two: Site) -> None:
    assert two.run("patch", "job/a", "-p", "metadata: {labels: {tier: gold}}").exit_code == 0
    assert job(two, "a").metadata.labels == {"team": "x", "tier": "gold"}
    assert two.run("get", "jobs", "-l", "tier=gold", "-o", "name").stdout.split() == ["job.balsam.io/a"]


def test_json_patch(two: Site) -> None:
    ops = [{"op": "replace", "path": "/spec/resources/numNodes", "value": 3},
           {"op": "add", "path": "/metadata/labels/run", "value": "9"},
           {"op": "remove", "path": "/metadata/labels/team"},
           {"op": "test", "path": "/spec/app", "value": "hello"}]
    r = two.run("patch", "job", "a", "b", "--type", "json", "-p", json.dumps(ops[:2] + ops[3:]))
    assert r.stdout.splitlines() == ["job.balsam.io/a patched", "job.balsam.io/b patched"]
    assert job(two, "b").spec.resources.num_nodes == 3 and job(two, "b").metadata.labels == {"run": "9"}
    assert two.run("patch", "job", "a", "--type=json", "-p", json.dumps(ops[2:3])).exit_code == 0
    assert job(two, "a").metadata.labels == {"run": "9"}


def test_patch_file_and_output(two: Site, tmp_path: Path) -> None:
    f = tmp_path / "p.json"
    f.write_text('{"spec": {"priority": 2}}')
    r = two.run("patch", "job", "a", "--patch-file", str(f), "-o", "json")
    assert json.loads(r.stdout)["spec"]["priority"] == 2


def test_no_change_writes_nothing(two: Site) -> None:
    rev = two.revision()
    r = two.run("patch", "job", "a", "-p", '{"spec": {"priority": 0}}')
    assert r.exit_code == 0 and r.stdout.strip() == "job.balsam.io/a patched (no change)"
    assert two.revision() == rev


def test_status_and_server_metadata_are_the_stores(two: Site) -> None:
    before = job(two, "a")
    r = two.run("patch", "job", "a", "-p", '{"status": {"state": "FAILED"}, "metadata": {"uid": "x"}}')
    assert r.exit_code == 0 and r.stdout.strip() == "job.balsam.io/a patched (no change)"
    after = job(two, "a")
    assert after.status.state is JobState.CREATED and after.metadata.uid == before.metadata.uid


@pytest.mark.parametrize("mode, suffix", [("--dry-run", "(dry run)"), ("--dry-run=server", "(server dry run)")])
def test_dry_run(two: Site, mode: str, suffix: str) -> None:
    rev = two.revision()
    r = two.run("patch", "job", "a", "-p", '{"spec": {"priority": 9}}', mode, "-o", "yaml")
    assert r.exit_code == 0 and "priority: 9" in r.stdout
    r = two.run("patch", "job", "a", "-p", '{"spec": {"priority": 9}}', mode)
    assert r.stdout.strip() == f"job.balsam.io/a patched {suffix}"
    assert two.revision() == rev and job(two, "a").spec.priority == 0


def test_server_dry_run_runs_admission(two: Site) -> None:
    """A resource change of a RUNNING job is refused by the registry's admission check, also in a server dry run."""
    move(two.registry(), "a", TO_RUNNING, two.namespace)
    rev = two.revision()
    for mode in ("--dry-run=server", "--dry-run=none"):
        line = two.run("patch", "job", "a", "-p", '{"spec": {"resources": {"numNodes": 2}}}', mode).one_error()
        assert "spec.resources.numNodes: Forbidden: may not be changed while the job is RUNNING" in line, line
    assert two.revision() == rev


@pytest.mark.parametrize("args, expect", [
    (["-p", "{bad"], "error: unable to parse the patch '{bad'"),
    (["-p", "[1]"], "error: a merge patch must be a JSON object"),
    (["-p", "{}", "--type", "json"], "error: a json patch must be a list of operations"),
    (["--type", "json", "-p", '[{"op": "frob", "path": "/a"}]'], "error: json patch operation 0: unknown op 'frob'"),
    (["--type", "json", "-p", '[{"op": "add"}]'], "error: json patch operation 0: 'path' is required"),
    (["--type", "json", "-p", '[{"op": "remove", "path": "/spec/nope"}]'],
     "error: job.balsam.io/a: the json patch does not apply: "),
    (["--type", "json", "-p", '[{"op": "test", "path": "/spec/app", "value": "other"}]'],
     "error: job.balsam.io/a: the json patch does not apply: "),
    (["-p", '{"spec": {"color": "red"}}'], "spec.color: unknown field"),
    (["-p", '{"spec": {"resources": {"numNodes": 0}}}'], "spec.resources.numNodes"),
    (["-p", '{"metadata": {"name": "z"}}'], "error: job.balsam.io/a: metadata.name may not be changed by patch"),
    (["-p", '{"kind": "App"}'], "error: job.balsam.io/a: kind may not be changed by patch"),
    (["-p", '{"metadata": {"labels": {"a b": "c"}}}'], "label key 'a b' is invalid"),
    (["-p", " "], "error: the patch is empty"),
    ([], "error: must specify exactly one of --patch (-p) or --patch-file"),
    (["--type", "strategic", "-p", "{}"], "error: Invalid value for '--type'"),
])
def test_bad_patches_write_nothing(two: Site, args: list[str], expect: str) -> None:
    rev = two.revision()
    line = two.run("patch", "job", "a", "b", *args).one_error()
    assert expect in line, line
    assert two.revision() == rev


def test_a_missing_name_writes_nothing(two: Site) -> None:
    rev = two.revision()
    line = two.run("patch", "job", "a", "ghost", "-p", '{"spec": {"priority": 1}}').one_error()
    assert line == 'Error from server (NotFound): jobs.balsam.io "ghost" not found'
    assert two.revision() == rev
    assert two.run("patch", "jobs", "-p", "{}").one_error().startswith("error: one or more resources must be")
