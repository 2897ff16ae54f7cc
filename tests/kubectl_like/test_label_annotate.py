"""balsamctl label / annotate: KEY=VALUE, KEY-, --overwrite, -l, --field-selector, --all, --dry-run."""

from __future__ import annotations

from pathlib import Path

import pytest

from apis import App, Job

from .conftest import Site, hello_app, job_doc, write_yaml


@pytest.fixture
def three(any_site: Site, tmp_path: Path) -> Site:
    """Jobs a (team=x), b (team=x, tier=gold) and c (no labels)."""
    docs = [hello_app(), job_doc("a", "w/a", labels={"team": "x"}),
            job_doc("b", "w/b", labels={"team": "x", "tier": "gold"}), job_doc("c", "w/c")]
    assert any_site.run("apply", "-f", str(write_yaml(tmp_path / "j.yaml", docs))).exit_code == 0
    return any_site


def labels(site: Site, name: str, kind: type[Job] | type[App] = Job) -> dict[str, str]:
    return dict(site.registry().get(kind, name, site.namespace).metadata.labels)


def annotations(site: Site, name: str) -> dict[str, str]:
    ann = site.registry().get(Job, name, site.namespace).metadata.annotations
    return {k: v for k, v in ann.items() if k != "balsam.io/last-applied-configuration"}


def test_label_adds_and_the_index_follows(three: Site) -> None:
    r = three.run("label", "jobs", "a", "c", "run=5")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines() == ["job.balsam.io/a labeled", "job.balsam.io/c labeled"]
    assert labels(three, "a") == {"team": "x", "run": "5"} and labels(three, "c") == {"run": "5"}
    # the label index is written in the same transaction: a selector finds them
    assert three.run("get", "jobs", "-l", "run=5", "-o", "name").stdout.split() == \
        ["job.balsam.io/a", "job.balsam.io/c"]


def test_label_forms_kind_slash_name_and_selector(three: Site) -> None:
    assert three.run("label", "job/b", "job/c", "x=1").exit_code == 0
    assert labels(three, "b")["x"] == "1" and labels(three, "c")["x"] == "1"
    r = three.run("label", "jobs", "-l", "team=x", "owner=me")
    assert r.stdout.splitlines() == ["job.balsam.io/a labeled", "job.balsam.io/b labeled"]
    assert "owner" not in labels(three, "c")
    r = three.run("label", "jobs", "--field-selector", "spec.workdir=w/c", "only=c")
    assert r.stdout.splitlines() == ["job.balsam.io/c labeled"]
    r = three.run("label", "jobs", "--all", "all=yes")
    assert len(r.stdout.splitlines()) == 3 and all(labels(three, n)["all"] == "yes" for n in "abc")


def test_changing_a_value_needs_overwrite(three: Site) -> None:
    rev = three.revision()
    line = three.run("label", "jobs", "a", "b", "c", "team=y").one_error()
    assert line == "error: 'team' already has a value (x) on job.balsam.io/a, and --overwrite is false"
    assert three.revision() == rev  # c (which had no team) was not labeled either
    assert "team" not in labels(three, "c")
    r = three.run("label", "jobs", "a", "b", "c", "team=y", "--overwrite")
    assert r.exit_code == 0 and all(labels(three, n)["team"] == "y" for n in "abc")


def test_same_value_is_not_labeled(three: Site) -> None:
    rev = three.revision()
    r = three.run("label", "job", "a", "team=x")
    assert r.exit_code == 0 and r.stdout.strip() == "job.balsam.io/a not labeled"
    assert three.revision() == rev


def test_remove_with_trailing_dash(three: Site) -> None:
    r = three.run("label", "jobs", "-l", "team", "team-")
    assert r.stdout.splitlines() == ["job.balsam.io/a unlabeled", "job.balsam.io/b unlabeled"]
    assert labels(three, "a") == {} and labels(three, "b") == {"tier": "gold"}
    assert three.run("get", "jobs", "-l", "team", "-o", "name").stdout == ""
    r = three.run("label", "job", "c", "ghost-")
    assert r.exit_code == 0 and r.stdout.strip() == "job.balsam.io/c not labeled"
    assert r.err_lines == ['Warning: label "ghost" not found on job.balsam.io/c']


def test_dry_run_writes_nothing(three: Site) -> None:
    rev = three.revision()
    for mode in ("--dry-run", "--dry-run=client", "--dry-run=server"):
        r = three.run("label", "jobs", "--all", "k=v", mode)
        assert r.exit_code == 0, r.stderr
        assert r.stdout.splitlines()[0].startswith("job.balsam.io/a labeled (")
    assert three.revision() == rev


def test_annotate(three: Site) -> None:
    r = three.run("annotate", "jobs", "a", "note=needs a second look", "owner=me")
    assert r.stdout.strip() == "job.balsam.io/a annotated"
    assert annotations(three, "a") == {"note": "needs a second look", "owner": "me"}
    line = three.run("annotate", "job", "a", "note=other").one_error()
    assert line == "error: 'note' already has a value (needs a second look) on job.balsam.io/a, and --overwrite is false"
    assert three.run("annotate", "job", "a", "note=other", "--overwrite").exit_code == 0
    assert three.run("annotate", "job", "a", "note-").exit_code == 0
    assert annotations(three, "a") == {"owner": "me"}
    assert labels(three, "a") == {"team": "x"}  # annotations are not labels


def test_label_other_kinds(three: Site) -> None:
    assert three.run("label", "app", "hello", "tier=gold").exit_code == 0
    assert labels(three, "hello", App) == {"tier": "gold"}


@pytest.mark.parametrize("args, expect", [
    (["label", "jobs", "a"], "error: at least one label update is required (KEY=VALUE or KEY-)"),
    (["label", "jobs", "k=v"], "error: one or more resources must be specified"),
    (["label", "jobs", "a", "bad key=v"], "error: invalid label spec: bad key=v: label key 'bad key' is invalid"),
    (["label", "jobs", "a", "k=has space"], "error: invalid label spec: k=has space: label k='has space'"),
    (["label", "jobs", "a", "k=1", "k-"], "error: label 'k' is given more than once"),
    (["label", "jobs", "a", "-l", "team=x", "k=v"], "error: names cannot be combined with a selector"),
    (["label", "jobs", "--all", "-l", "team=x", "k=v"], "error: --all cannot be combined with a selector"),
    (["label", "jobs", "--field-selector", "spec.nope=1", "k=v"], 'error: field label not supported: "spec.nope"'),
    (["label", "jobs", "a", "ghost", "k=v"], 'Error from server (NotFound): jobs.balsam.io "ghost" not found'),
    (["label", "pods", "a", "k=v"], "error: the server doesn't have a resource type"),
    (["annotate", "jobs", "a"], "error: at least one annotation update is required"),
])
def test_bad_input_writes_nothing(three: Site, args: list[str], expect: str) -> None:
    rev = three.revision()
    line = three.run(*args).one_error()
    assert line.startswith(expect), line
    assert three.revision() == rev
