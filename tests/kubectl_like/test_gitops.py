"""GitOps semantics (issue 9): three-way-merge apply, diff, dry-run, prune and edit, on both
store backends; the refusals of bad input."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest

import kubectl_like.manifests as manifests_mod
from apis import App, Job, JobState
from kubectl_like.applier import LAST_APPLIED, LAST_APPLIED_CAP

from .conftest import Site, hello_app, job_doc, write_yaml


def repo(tmp_path: Path, jobs: list[dict[str, object]], app: dict[str, object] | None = None) -> Path:
    """A manifests directory as kept in git: apps/ and jobs/."""
    d = tmp_path / "repo"
    (d / "apps").mkdir(parents=True, exist_ok=True)
    (d / "jobs").mkdir(parents=True, exist_ok=True)
    write_yaml(d / "apps" / "hello.yaml", [app or hello_app()])
    write_yaml(d / "jobs" / "jobs.yaml", jobs)
    return d


def labeled(name: str, **spec: object) -> dict[str, object]:
    return job_doc(name, labels={"part-of": "survey"}, parameters={"name": name}, **spec)


# --- apply: three-way merge -----------------------------------------------------------


def test_apply_reapply_edit_remove_field(any_site: Site, tmp_path: Path) -> None:
    site, ns = any_site, any_site.namespace
    d = repo(tmp_path, [labeled("a", priority=5, resources={"numNodes": 2}), labeled("b")])
    r = site.run("apply", "-R", "-f", str(d))
    assert r.exit_code == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == ["app.balsam.io/hello created", "job.balsam.io/a created",
                                             "job.balsam.io/b created"]
    reg = site.registry()
    a0 = reg.get(Job, "a", ns)
    assert a0.spec.priority == 5 and a0.spec.resources.num_nodes == 2
    last = json.loads(a0.metadata.annotations[LAST_APPLIED])
    # Normalized: camelCase, only what the manifest set, values as validated.
    assert last["spec"] == {"app": "hello", "workdir": "test/a", "parameters": {"name": "a"}, "priority": 5,
                            "resources": {"numNodes": 2}}

    # Re-apply: nothing written, every object unchanged.
    rev = site.revision()
    r = site.run("apply", "-R", "-f", str(d))
    assert r.exit_code == 0 and all(ln.endswith(" unchanged") for ln in r.stdout.splitlines()), r.stdout
    assert site.revision() == rev

    # Others' changes: a label added by hand, a status written by a controller, a field the
    # manifest never set (retry): all survive the next apply.
    def by_hand(j: Job) -> None:
        j.metadata.labels["owner"] = "alice"
        j.status.state = JobState.RUN_DONE

    reg.mutate(Job, "a", by_hand, ns)
    reg.mutate(Job, "a", lambda j: setattr(j.spec, "on_parent_failure", "Fail"), ns)

    # Edit one field, remove two (priority, resources) from the manifest.
    docs = [job_doc("a", labels={"part-of": "survey"}, parameters={"name": "a2"}), labeled("b")]
    write_yaml(d / "jobs" / "jobs.yaml", docs)
    r = site.run("apply", "-R", "-f", str(d))
    assert r.exit_code == 0, r.stderr
    assert "job.balsam.io/a configured" in r.stdout and "job.balsam.io/b unchanged" in r.stdout
    a1 = reg.get(Job, "a", ns)
    assert a1.spec.parameters == {"name": "a2"}
    assert a1.spec.priority == 0 and a1.spec.resources.num_nodes == 1  # removed: back to the defaults
    assert a1.spec.on_parent_failure == "Fail"  # set by someone else, never in the manifest: kept
    assert a1.metadata.labels == {"part-of": "survey", "owner": "alice"}
    assert a1.status.state == JobState.RUN_DONE  # status is never apply's
    assert a1.metadata.generation == a0.metadata.generation + 2
    # And once more: unchanged.
    rev = site.revision()
    r = site.run("apply", "-R", "-f", str(d))
    assert r.stdout.count("unchanged") == 3 and site.revision() == rev


def test_apply_reasserts_fields_it_owns(site: Site, tmp_path: Path) -> None:
    d = repo(tmp_path, [labeled("a", priority=5)])
    site.run("apply", "-R", "-f", str(d))
    reg = site.registry()
    reg.mutate(Job, "a", lambda j: setattr(j.spec, "priority", 1))  # drift
    r = site.run("apply", "-R", "-f", str(d))
    assert "job.balsam.io/a configured" in r.stdout
    assert reg.get(Job, "a").spec.priority == 5


def test_apply_without_annotation_adopts_object(site: Site, tmp_path: Path) -> None:
    """An object made by hand (no annotation): apply sets what the manifest says, removes
    nothing, and from then on owns those fields."""
    reg = site.registry()
    site.run("apply", "-f", str(write_yaml(tmp_path / "app.yaml", [hello_app()])))
    reg.create(Job.model_validate(job_doc("h", priority=3)))
    r = site.run("apply", "-f", str(write_yaml(tmp_path / "h.yaml", [job_doc("h")])))
    assert r.stdout == "job.balsam.io/h configured\n"  # the annotation is added
    h = reg.get(Job, "h")
    assert h.spec.priority == 3 and LAST_APPLIED in h.metadata.annotations


def test_last_applied_annotation_cap(site: Site, tmp_path: Path) -> None:
    big = job_doc("big", data={"blob": "x" * (LAST_APPLIED_CAP + 10)})
    f = write_yaml(tmp_path / "big.yaml", [hello_app(), big])
    rev = site.revision()
    line = site.run("apply", "-f", str(f)).one_error()
    assert f"{f}: document 2" in line and "Too long" in line and LAST_APPLIED in line
    assert "262144-byte cap" in line and "no objects were applied" in line
    assert site.revision() == rev


@pytest.mark.parametrize("mode", ["client", "server"])
def test_dry_run_of_update_and_prune_writes_nothing(any_site: Site, tmp_path: Path, mode: str) -> None:
    site = any_site
    d = repo(tmp_path, [labeled("a"), labeled("b")])
    site.run("apply", "-R", "-f", str(d))
    write_yaml(d / "jobs" / "jobs.yaml", [labeled("a", priority=9)])
    rev = site.revision()
    r = site.run("apply", "-R", "-f", str(d), f"--dry-run={mode}", "--prune", "-l", "part-of=survey")
    assert r.exit_code == 0, r.stderr
    sfx = " (dry run)" if mode == "client" else " (server dry run)"
    assert f"job.balsam.io/a configured{sfx}" in r.stdout and f"job.balsam.io/b pruned{sfx}" in r.stdout
    assert site.revision() == rev
    assert site.registry().get(Job, "a", site.namespace).spec.priority == 0


# --- prune ------------------------------------------------------------------------------


def test_prune_deletes_only_applied_objects_matching_selector(any_site: Site, tmp_path: Path) -> None:
    site, ns = any_site, any_site.namespace
    reg = site.registry()
    d = repo(tmp_path, [labeled("a"), labeled("b"), labeled("c"), job_doc("other", labels={"part-of": "x"})])
    assert site.run("apply", "-R", "-f", str(d)).exit_code == 0
    # Made by hand with the same label: never pruned (no last-applied annotation).
    r = site.run("create", "job", "--app", "hello", "-w", "by/hand", "--name", "manual", "-t", "part-of=survey",
                 "--param", "name=m")
    assert r.exit_code == 0, r.stderr
    # Made with `create -f` (kubectl's create saves no configuration): not apply's either.
    f = write_yaml(tmp_path / "created.yaml", [labeled("created-f")])
    assert site.run("create", "-f", str(f)).exit_code == 0
    write_yaml(d / "jobs" / "jobs.yaml", [labeled("a")])  # b, c and other removed from git
    rev = site.revision()
    r = site.run("apply", "-R", "-f", str(d), "--prune", "-l", "part-of=survey")
    assert r.exit_code == 0, r.stderr
    # -l also picks the documents to apply (kubectl): the App has no such label.
    assert r.stdout.splitlines() == ["job.balsam.io/a unchanged", "job.balsam.io/b pruned", "job.balsam.io/c pruned"]
    assert site.revision() == rev + 1  # one transaction
    names = sorted(reg.names(Job, ns))
    assert names == ["a", "created-f", "manual", "other"]  # "other" does not match the selector
    assert reg.get(App, "hello", ns)
    # --all considers every object of the applied kinds: "other" goes, "manual" stays.
    r = site.run("apply", "-R", "-f", str(d), "--prune", "--all")
    assert r.exit_code == 0, r.stderr
    assert "job.balsam.io/other pruned" in r.stdout
    assert sorted(reg.names(Job, ns)) == ["a", "created-f", "manual"]


def test_prune_needs_selector_or_all(site: Site, tmp_path: Path) -> None:
    d = repo(tmp_path, [labeled("a")])
    line = site.run("apply", "-R", "-f", str(d), "--prune").one_error()
    assert "without explicitly passing --all" in line
    line = site.run("apply", "-R", "-f", str(d), "--prune", "--all", "-l", "a=b").one_error()
    assert "--all and --selector" in line
    line = site.run("apply", "-R", "-f", str(d), "--all").one_error()
    assert "only used together with --prune" in line


def test_prune_refuses_to_delete_what_an_applied_job_uses(site: Site, tmp_path: Path) -> None:
    site.run("apply", "-f", str(write_yaml(tmp_path / "a.yaml", [hello_app(), job_doc("p")])))
    f = write_yaml(tmp_path / "b.yaml", [job_doc("child", parents=["p"])])
    rev = site.revision()
    line = site.run("apply", "-f", str(f), "--prune", "--all").one_error()
    # Only Jobs are applied, so only Jobs are pruned: the App stays, the parent would go.
    assert 'jobs.balsam.io "child" is invalid: spec.parents: "p" is not in the files and --prune would delete it' \
        in line
    assert site.revision() == rev


# --- diff -------------------------------------------------------------------------------


def test_diff_exit_codes_and_output(any_site: Site, tmp_path: Path) -> None:
    site = any_site
    d = repo(tmp_path, [labeled("a"), labeled("b")])
    r = site.run("diff", "-R", "-f", str(d))
    assert r.exit_code == 1, r.stderr  # everything is new
    assert "+++ merged/balsam.io.v1.Job." in r.stdout and "+  name: a" in r.stdout
    assert site.run("apply", "-R", "-f", str(d)).exit_code == 0
    rev = site.revision()
    r = site.run("diff", "-R", "-f", str(d))
    assert (r.exit_code, r.stdout, r.stderr) == (0, "", "")
    write_yaml(d / "jobs" / "jobs.yaml", [labeled("a", priority=7)])
    r = site.run("diff", "-R", "-f", str(d), "--prune", "-l", "part-of=survey")
    assert r.exit_code == 1
    assert f"diff -u -N live/balsam.io.v1.Job.{site.namespace}.a merged/balsam.io.v1.Job.{site.namespace}.a" \
        in r.stdout
    assert "-  priority: 0\n+  priority: 7\n" in r.stdout
    assert LAST_APPLIED not in r.stdout  # the annotation is left out of the texts
    assert f"--- live/balsam.io.v1.Job.{site.namespace}.b" in r.stdout and "-  name: b" in r.stdout  # pruned
    assert site.revision() == rev  # diff writes nothing


def test_diff_errors_exit_above_one(site: Site, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: balsam.io/v1\nkind: Job\nmetadata: {name: x}\nspec: {app: a, workdir: /abs}\n")
    r = site.run("diff", "-f", str(bad))
    assert r.exit_code == 2 and r.err_lines[0].startswith("error: ") and len(r.err_lines) == 1
    assert f"{bad}: document 1" in r.stderr
    r = site.run("diff", "-f", str(tmp_path / "missing.yaml"))
    assert r.exit_code == 2
    r = site.run("diff", "--no-such-flag")
    assert r.exit_code == 2 and len(r.err_lines) == 1
    r = site.run("diff")
    assert r.exit_code == 2 and "must specify -f" in r.stderr
    # Admission runs (a server dry run): a job of a missing App is an error, not a diff.
    f = write_yaml(tmp_path / "j.yaml", [job_doc("x", app="nope")])
    r = site.run("diff", "-f", str(f))
    assert r.exit_code == 2 and 'spec.app: Not found: "nope"' in r.stderr


def test_diff_in_a_real_process(site: Site, tmp_path: Path) -> None:
    f = write_yaml(tmp_path / "a.yaml", [hello_app()])
    assert site.sh("diff", "-f", str(f)).exit_code == 1
    assert site.sh("apply", "-f", str(f)).exit_code == 0
    assert site.sh("diff", "-f", str(f)).exit_code == 0
    assert site.sh("diff", "-f", str(tmp_path / "nope.yaml")).exit_code == 2


# --- edit -------------------------------------------------------------------------------


def editor(tmp_path: Path, script: str, name: str = "ed.sh") -> dict[str, str | None]:
    p = tmp_path / name
    p.write_text("#!/bin/sh\nset -e\n" + script + "\n")
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return {"EDITOR": str(p), "KUBE_EDITOR": None, "BALSAM_EDITOR": None}


def test_edit_changes_fields_with_cas(any_site: Site, tmp_path: Path) -> None:
    site, ns = any_site, any_site.namespace
    site.run("apply", "-R", "-f", str(repo(tmp_path, [labeled("a")])))
    env = editor(tmp_path, r"""sed -i 's/^  priority: 0$/  priority: 4/; s/^    part-of: survey$/    part-of: survey\n    owner: bob/' "$1" """)
    rev = site.revision()
    r = site.run("edit", "job", "a", env=env)
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "job.balsam.io/a edited\n"
    a = site.registry().get(Job, "a", ns)
    assert a.spec.priority == 4 and a.metadata.labels["owner"] == "bob"
    assert site.revision() == rev + 1
    # No change in the editor: nothing written.
    rev = site.revision()
    r = site.run("edit", "job/a", env=editor(tmp_path, "true", "noop.sh"))
    assert r.exit_code == 0 and "Edit cancelled, no changes made." in r.stdout
    assert site.revision() == rev
    # Status edits are ignored (status is not the user's to write).
    r = site.run("edit", "job", "a", env=editor(tmp_path, "sed -i 's/^  state: CREATED$/  state: FAILED/' \"$1\"",
                                               "st.sh"))
    assert r.exit_code == 0 and "Edit cancelled" in r.stdout
    assert site.registry().get(Job, "a", ns).status.state == JobState.CREATED


def test_edit_conflict_writes_nothing_and_keeps_a_copy(site: Site, tmp_path: Path) -> None:
    site.run("apply", "-R", "-f", str(repo(tmp_path, [labeled("a")])))
    # The "editor" changes the object behind the user's back, then saves an edit.
    mover = tmp_path / "mover.py"
    mover.write_text(
        "import sys\nfrom apis import Job, Registry\nimport store\n"
        f"reg = Registry(store.open_store({site.store_url!r}))\n"
        "reg.mutate(Job, 'a', lambda j: setattr(j.spec, 'priority', 2))\n"
        "p = sys.argv[1]\n"
        "text = open(p).read().replace('  suspend: false', '  suspend: true')\n"
        "open(p, 'w').write(text)\n"
    )
    env = editor(tmp_path, f'{sys.executable} {mover} "$1"', "conflict.sh")
    env["PYTHONPATH"] = os.getcwd()
    line = site.run("edit", "job", "a", env=env).one_error()
    assert line.startswith("Error from server (Conflict):") and "a copy of your changes has been stored to" in line
    copy = line.rsplit('"', 2)[1]
    assert "suspend: true" in Path(copy).read_text()
    a = site.registry().get(Job, "a")
    assert a.spec.priority == 2 and a.spec.suspend is False
    os.unlink(copy)


def test_edit_invalid_reopens_then_gives_up(site: Site, tmp_path: Path) -> None:
    site.run("apply", "-R", "-f", str(repo(tmp_path, [labeled("a")])))
    log = tmp_path / "opened.log"
    env = editor(tmp_path, f"cat \"$1\" >> {log}\nsed -i 's/^  workdir: test\\/a$/  workdir: \\/etc/' \"$1\"")
    rev = site.revision()
    line = site.run("edit", "job", "a", env=env).one_error()
    assert "spec.workdir" in line and "a copy of your changes has been stored to" in line
    assert site.revision() == rev
    # The second opening showed the error on top.
    assert log.read_text().count("# Please edit the object below") == 2
    assert "# Error from server (Invalid)" in log.read_text()
    os.unlink(line.rsplit('"', 2)[1])


def test_edit_refuses_renames_and_unknown_objects(site: Site, tmp_path: Path) -> None:
    site.run("apply", "-R", "-f", str(repo(tmp_path, [labeled("a")])))
    env = editor(tmp_path, "sed -i 's/^  name: a$/  name: b/' \"$1\"")
    line = site.run("edit", "job", "a", env=env).one_error()
    assert "metadata.name may not be changed" in line
    line = site.run("edit", "job", "zzz", env=env).one_error()
    assert 'jobs.balsam.io "zzz" not found' in line


# --- bad input --------------------------------------------------------------------------


def test_directory_with_one_invalid_document_writes_nothing(any_site: Site, tmp_path: Path) -> None:
    d = repo(tmp_path, [labeled(f"j{i}") for i in range(20)])
    docs = [labeled(f"k{i}") for i in range(5)]
    docs[3] = job_doc("k3", resources={"numNodes": 0})
    write_yaml(d / "jobs" / "more.yaml", docs)
    rev = any_site.revision()
    line = any_site.run("apply", "-R", "-f", str(d)).one_error()
    assert f"{d / 'jobs' / 'more.yaml'}: document 4" in line and "numNodes" in line
    assert "no objects were applied" in line
    assert any_site.revision() == rev


@pytest.mark.parametrize("doc, expect", [
    ({"apiVersion": "balsam.io/v2", "kind": "Job", "metadata": {"name": "x"}, "spec": {}},
     'no matches for kind "Job" in version "balsam.io/v2"'),
    ({"apiVersion": "balsam.io/v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {}},
     'no matches for kind "Pod" in version "balsam.io/v1"'),
])
def test_unknown_api_version_or_kind(site: Site, tmp_path: Path, doc: dict[str, object], expect: str) -> None:
    f = write_yaml(tmp_path / "x.yaml", [hello_app(), doc])
    rev = site.revision()
    line = site.run("apply", "-f", str(f)).one_error()
    assert expect in line and "document 2" in line
    assert site.revision() == rev


def test_duplicate_names_across_files(site: Site, tmp_path: Path) -> None:
    d = repo(tmp_path, [labeled("a")])
    write_yaml(d / "jobs" / "z.yaml", [labeled("a")])
    line = site.run("apply", "-R", "-f", str(d)).one_error()
    assert "also defined at" in line and f"{d / 'jobs' / 'z.yaml'}: document 1" in line


def test_billion_laughs_refused_quickly(site: Site, tmp_path: Path) -> None:
    lines = ['lol: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        lines.append(f"l{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]")
    f = tmp_path / "laughs.yaml"
    f.write_text("apiVersion: balsam.io/v1\nkind: Job\nmetadata: {name: x}\nspec:\n  app: hello\n  workdir: w\n"
                 "  data:\n" + "".join(f"    {ln}\n" for ln in lines))
    t = time.perf_counter()
    line = site.run("apply", "-f", str(f)).one_error()
    assert time.perf_counter() - t < 2
    assert "anchors and aliases" in line


def test_fifty_megabyte_manifest_refused_quickly(site: Site, tmp_path: Path) -> None:
    f = tmp_path / "huge.yaml"
    with open(f, "wb") as out:
        out.write(b"apiVersion: balsam.io/v1\nkind: Job\nmetadata: {name: x}\nspec:\n  data:\n    blob: \"")
        out.truncate(50 * 1024 * 1024)  # sparse: 50 MB on paper, nothing to write
    assert f.stat().st_size == 50 * 1024 * 1024
    t = time.perf_counter()
    line = site.run("apply", "-f", str(f)).one_error()
    assert time.perf_counter() - t < 2
    assert "50.0 MiB, over the" in line and "limit" in line
    assert manifests_mod.MAX_MANIFEST_BYTES < f.stat().st_size
