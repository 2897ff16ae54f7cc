"""balsamctl apply: created / unchanged / configured, one transaction, all or nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import kubectl_like.manifests as manifests_mod
from apis import App, Job, JobState
from kubectl_like.applier import LAST_APPLIED

from .conftest import Site, hello_app, job_doc, manifest, write_yaml


def ten_jobs() -> list[dict[str, object]]:
    return [hello_app()] + [
        job_doc(f"job-{n}", f"test/{n}", labels={"experiment": "foo", "run": str(n)}, parameters={"name": f"w{n}"})
        for n in range(10)
    ]


def test_apply_creates_then_unchanged_then_configured(any_site: Site, tmp_path: Path) -> None:
    site = any_site
    f = write_yaml(tmp_path / "jobs.yaml", ten_jobs())
    rev0 = site.revision()
    r = site.run("apply", "-f", str(f))
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines() == ["app.balsam.io/hello created"] + [
        f"job.balsam.io/job-{n} created" for n in range(10)
    ]
    # All eleven objects (and their index keys) landed in ONE store transaction.
    assert site.revision() == rev0 + 1
    reg = site.registry()
    ns = site.namespace
    assert reg.count(Job, ns) == 10
    job3 = reg.get(Job, "job-3", ns)
    assert job3.spec.parameters == {"name": "w3"} and job3.metadata.labels == {"experiment": "foo", "run": "3"}
    applied = json.loads(job3.metadata.annotations[LAST_APPLIED])
    assert applied["spec"]["workdir"] == "test/3" and applied["metadata"]["name"] == "job-3"

    # Same files again: nothing written at all.
    rev1 = site.revision()
    r = site.run("apply", "-f", str(f))
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines() == ["app.balsam.io/hello unchanged"] + [
        f"job.balsam.io/job-{n} unchanged" for n in range(10)
    ]
    assert site.revision() == rev1

    # A controller moved job-3 meanwhile; then the user edits it: spec/labels change, status stays.
    reg.mutate(Job, "job-3", lambda j: setattr(j.status, "state", JobState.FAILED), ns)
    docs = ten_jobs()
    docs[4] = job_doc("job-3", "test/3-edited", labels={"experiment": "bar"}, parameters={"name": "w3"})
    write_yaml(f, docs)
    r = site.run("apply", "-f", str(f))
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[4] == "job.balsam.io/job-3 configured"
    assert sum(ln.endswith(" unchanged") for ln in lines) == 10
    j = reg.get(Job, "job-3", ns)
    assert j.spec.workdir == "test/3-edited"
    assert j.metadata.labels == {"experiment": "bar"}
    assert j.status.state == JobState.FAILED  # status is not the manifest's to change
    assert j.metadata.generation == job3.metadata.generation + 1
    assert json.loads(j.metadata.annotations[LAST_APPLIED])["spec"]["workdir"] == "test/3-edited"
    # The label index followed the edit.
    foo = Job.objects.using(reg).all().in_namespace(ns).filter(tags={"experiment": "foo"})
    assert "job-3" not in [o.name for o in foo] and foo.count() == 9
    r = site.run("get", "jobs", "-l", "experiment=bar", "-o", "name")
    assert r.stdout == "job.balsam.io/job-3\n"


def test_apply_of_100_documents_with_one_bad_writes_none(any_site: Site, tmp_path: Path) -> None:
    docs = [hello_app()] + [job_doc(f"j{n}", f"w/{n}") for n in range(99)]
    docs[57] = job_doc("j56", "/etc/passwd")  # document 58: an absolute workdir
    f = write_yaml(tmp_path / "jobs.yaml", docs)
    rev = any_site.revision()
    line = any_site.run("apply", "-f", str(f)).one_error()
    assert line.startswith(f"error: {f}: document 58: ")
    assert 'jobs.balsam.io "j56" is invalid: spec.workdir' in line
    assert line.endswith("(no objects were applied)")
    assert any_site.revision() == rev
    assert any_site.registry().count(Job, any_site.namespace) == 0


def test_apply_bad_document_in_second_file_of_directory_writes_none(site: Site, tmp_path: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    write_yaml(d / "a.yaml", [hello_app(), job_doc("ok", "w/ok")])
    write_yaml(d / "b.yaml", [job_doc("fine", "w/1"), job_doc("bad", "w/2", bogus=1)])
    rev = site.revision()
    line = site.run("apply", "-f", str(d)).one_error()
    assert f"{d / 'b.yaml'}: document 2" in line and "spec.bogus: unknown field" in line
    assert site.revision() == rev


def test_apply_directory_recursive_and_stdin(site: Site, tmp_path: Path) -> None:
    d = tmp_path / "m"
    (d / "sub").mkdir(parents=True)
    write_yaml(d / "app.yaml", [hello_app()])
    write_yaml(d / "sub" / "jobs.yml", [job_doc("deep", "w/deep")])
    (d / "README.md").write_text("not a manifest")
    r = site.run("apply", "-f", str(d))  # without -R: only the top level
    assert r.stdout == "app.balsam.io/hello created\n"
    r = site.run("apply", "-R", "-f", str(d))
    assert r.stdout.splitlines() == ["app.balsam.io/hello unchanged", "job.balsam.io/deep created"]
    text = (d / "sub" / "jobs.yml").read_text().replace("deep", "piped")
    r = site.run("apply", "-f", "-", input=text)
    assert r.exit_code == 0 and r.stdout == "job.balsam.io/piped created\n"


def test_apply_kind_list_and_job_referencing_parent_in_same_batch(site: Site, tmp_path: Path) -> None:
    lst = {"apiVersion": "v1", "kind": "List", "items": [hello_app(), job_doc("a", "w/a"),
                                                        job_doc("b", "w/b", parents=["a"])]}
    f = write_yaml(tmp_path / "l.yaml", [lst])
    r = site.run("apply", "-f", str(f))
    assert r.exit_code == 0, r.stderr
    assert site.registry().get(Job, "b").spec.parents == ["a"]


@pytest.mark.parametrize("mode, suffix", [("--dry-run", " (dry run)"), ("--dry-run=client", " (dry run)"),
                                          ("--dry-run=server", " (server dry run)")])
def test_apply_dry_run_writes_nothing(site: Site, tmp_path: Path, mode: str, suffix: str) -> None:
    f = write_yaml(tmp_path / "j.yaml", [hello_app(), job_doc("x", "w/x")])
    rev = site.revision()
    r = site.run("apply", "-f", str(f), mode)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines() == [f"app.balsam.io/hello created{suffix}", f"job.balsam.io/x created{suffix}"]
    assert site.revision() == rev


def test_server_dry_run_runs_admission(site: Site, tmp_path: Path) -> None:
    f = write_yaml(tmp_path / "j.yaml", [job_doc("x", "w/x", app="missing")])
    line = site.run("apply", "-f", str(f), "--dry-run=server").one_error()
    assert 'spec.app: Not found: "missing"' in line


def test_apply_output_name_and_yaml(site: Site, tmp_path: Path) -> None:
    f = write_yaml(tmp_path / "j.yaml", [hello_app(), job_doc("x", "w/x")])
    r = site.run("apply", "-f", str(f), "-o", "name")
    assert r.stdout == "app.balsam.io/hello\njob.balsam.io/x\n"


def test_apply_refuses_alias_bomb_quickly(site: Site, tmp_path: Path) -> None:
    bomb = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for c in "bcdefghi":
        bomb.append(f"{c}: &{c} [" + ",".join([f"*{prev}"] * 9) + "]")
        prev = c
    f = tmp_path / "bomb.yaml"
    f.write_text("apiVersion: balsam.io/v1\nkind: Job\nmetadata: {name: x}\nspec:\n  data:\n" +
                 "".join(f"    {ln}\n" for ln in bomb) + "  app: hello\n  workdir: w\n")
    rev = site.revision()
    line = site.run("apply", "-f", str(f)).one_error()
    assert "anchors and aliases" in line and "document 1" in line
    assert site.revision() == rev


def test_apply_refuses_oversized_file_without_reading_it(site: Site, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifests_mod, "MAX_MANIFEST_BYTES", 1000)
    f = tmp_path / "big.yaml"
    f.write_bytes(b"#" * 5000)
    line = site.run("apply", "-f", str(f)).one_error()
    assert "over the" in line and "limit" in line


def test_apply_refuses_generate_name_and_duplicates(site: Site, tmp_path: Path) -> None:
    gen = manifest("Job", "", {"app": "hello", "workdir": "w"})
    gen["metadata"] = {"generateName": "j-"}
    f = write_yaml(tmp_path / "g.yaml", [hello_app(), gen])
    line = site.run("apply", "-f", str(f)).one_error()
    assert "document 2" in line and "metadata.name: Required value" in line and "create -f" in line
    f = write_yaml(tmp_path / "d.yaml", [hello_app(), job_doc("x", "w/1"), job_doc("x", "w/2")])
    line = site.run("apply", "-f", str(f)).one_error()
    assert "document 3" in line and f"also defined at {f}: document 2" in line


def test_apply_namespace_from_flag_and_mismatch(site: Site, tmp_path: Path) -> None:
    f = write_yaml(tmp_path / "a.yaml", [hello_app()])
    assert site.run("apply", "-f", str(f), "-n", "other").exit_code == 0
    assert site.registry().get(App, "hello", "other").name == "hello"
    f2 = write_yaml(tmp_path / "b.yaml", [manifest("App", "x", {"command": "true"}, namespace="team-a")])
    line = site.run("apply", "-f", str(f2), "-n", "team-b").one_error()
    assert 'namespace from the provided object "team-a" does not match the namespace "team-b"' in line
    # Without -n the document's namespace is used.
    assert site.run("apply", "-f", str(f2)).exit_code == 0
    assert site.registry().get(App, "x", "team-a").name == "x"


def test_get_o_yaml_round_trips_through_apply(site: Site, tmp_path: Path) -> None:
    f = write_yaml(tmp_path / "a.yaml", [hello_app(), job_doc("x", "w/x")])
    site.run("apply", "-f", str(f))
    out = site.run("get", "job", "x", "-o", "yaml").stdout
    r = site.run("apply", "-f", "-", input=out)
    assert r.exit_code == 0, r.stderr
    # The exported object carries server fields (uid, resourceVersion, status): ignored.
    assert r.stdout in ("job.balsam.io/x unchanged\n", "job.balsam.io/x configured\n")
    live = site.registry().get(Job, "x")
    assert live.spec.workdir == "w/x" and live.status.state == JobState.CREATED


def test_apply_without_files_is_usage_error(site: Site) -> None:
    line = site.run("apply").one_error()
    assert "must specify -f" in line
