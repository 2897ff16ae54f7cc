"""get --field-selector, --workdir, -L and --show-labels (issue 16, items 4 and 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

import store as st
from apis import Job, JobState
from apis import Site as SiteKind
from apis._registry import object_key
from kubectl_like.fieldselector import parse_field_selector
from kubectl_like.query import Filters

from ._streams import Proc, move
from .conftest import Site, hello_app, job_doc, write_yaml
from .test_get import names, seed_jobs, t


@pytest.fixture
def jobs_site(any_site: Site, tmp_path: Path) -> Site:
    """get's seed: 10 labelled jobs, test-0 and test-3 FAILED, test-5 RUNNING, test-7 JOB_FINISHED."""
    seed_jobs(any_site, tmp_path)
    return any_site


@pytest.mark.parametrize("selector, expected", [
    ("status.state=FAILED", t(0, 3)),
    ("status.state==failed", t(0, 3)),
    ("status.state!=CREATED", t(0, 3, 5, 7)),
    ("status.state!=CREATED,status.state!=FAILED", t(5, 7)),
    ("spec.app=hello", t(*range(10))),
    ("spec.app=nope", []),
    ("spec.workdir=test/4", t(4)),
    ("spec.workdir!=test/4,status.state=CREATED", t(1, 2, 6, 8, 9)),
    ("spec.site=", t(*range(10))),
    ("spec.site!=", []),
    ("metadata.name=test-3", t(3)),
    ("metadata.name!=test-3,status.state=FAILED", t(0)),
    ("metadata.namespace!=nowhere,status.state=RUNNING", t(5)),
])
def test_field_selectors(jobs_site: Site, selector: str, expected: list[str]) -> None:
    assert names(jobs_site, "--field-selector", selector) == expected
    assert names(jobs_site, f"--field-selector={selector}") == expected


def test_field_selector_combines_with_labels_state_and_tags(jobs_site: Site) -> None:
    assert names(jobs_site, "--field-selector", "status.state=FAILED", "-l", "system=H2O") == t(3)
    assert names(jobs_site, "--field-selector", "spec.workdir!=test/0", "--state", "FAILED") == t(3)
    assert names(jobs_site, "--field-selector", "spec.app=hello", "--tag", "experiment=bar") == t(6, 7, 8, 9)
    assert names(jobs_site, "--field-selector", "metadata.namespace=nowhere", "-A") == []


def test_field_selector_on_another_kind(jobs_site: Site) -> None:
    r = jobs_site.run("get", "apps", "--field-selector", "metadata.name=hello", "-o", "name")
    assert r.stdout.split() == ["app.balsam.io/hello"]
    line = jobs_site.run("get", "apps", "--field-selector", "status.state=x").one_error()
    assert line.startswith('error: field label not supported: "status.state" (supported for apps: '), line


def test_indexed_fields_never_read_other_objects(any_site: Site, tmp_path: Path) -> None:
    """status.state, spec.app, spec.workdir, spec.site and metadata.name are answered from the
    indexes: an object the index does not name is never read (here one that cannot even be
    decoded), while a requirement no index answers (``!=``) alone reads every job."""
    f = write_yaml(tmp_path / "j.yaml", [hello_app(), job_doc("a", "w/a"), job_doc("b", "w/b")])
    assert any_site.run("apply", "-f", str(f)).exit_code == 0
    s = st.open_store(any_site.store_url)
    try:
        s.put(object_key(Job, any_site.namespace, "zz-undecodable"), b"{not json")
    finally:
        s.close()
    for sel in ("status.state=CREATED", "spec.app=hello", "metadata.name=b", "spec.app=hello,spec.workdir=w/a",
                "spec.workdir=w/a"):
        r = any_site.run("get", "jobs", "-o", "name", "--field-selector", sel)
        assert r.exit_code == 0, (sel, r.stderr)
        assert "job.balsam.io/a" in r.stdout or sel == "metadata.name=b"
    r = any_site.run("get", "jobs", "-o", "name", "--field-selector", "spec.site=nowhere")
    assert r.exit_code == 0 and r.stdout == ""
    assert any_site.run("get", "jobs", "--field-selector", "spec.workdir!=w/a").exit_code == 1


def test_field_selector_applies_to_a_watch(any_site: Site, tmp_path: Path, procs: list[Proc]) -> None:
    """get -w --field-selector: streamed changes pass the same requirements (Filters.matches)."""
    f = write_yaml(tmp_path / "j.yaml", [hello_app(), job_doc("a", "keep/a"), job_doc("b", "skip/me")])
    assert any_site.run("apply", "-f", str(f)).exit_code == 0
    reg = any_site.registry()
    w = Proc(any_site.path, "get", "jobs", "-w", "-o", "name",
             "--field-selector", "spec.workdir!=skip/me,status.state=READY")
    procs.append(w)
    move(reg, "b", [JobState.READY], any_site.namespace)  # first, so that were it printed it would come first
    move(reg, "a", [JobState.READY], any_site.namespace)
    assert w.line() == "job.balsam.io/a\n"  # generous: a loaded machine decides nothing
    flt = Filters.parse(None, (), {}, None, None, fields=parse_field_selector("spec.workdir!=skip/me", Job))
    assert flt.matches(reg.get(Job, "a", any_site.namespace)) and not flt.matches(reg.get(Job, "b", any_site.namespace))


def test_workdir_is_a_path_fragment_like_balsam_job_ls(jobs_site: Site) -> None:
    assert names(jobs_site, "--workdir", "test/") == t(*range(10))
    assert names(jobs_site, "--workdir", "t/3") == t(3)
    assert names(jobs_site, "--workdir", "test", "--state", "FAILED") == t(0, 3)
    r = jobs_site.run("get", "jobs", "--workdir", "nothing-here")
    assert r.exit_code == 0 and r.stdout == ""


def test_label_columns_and_show_labels(jobs_site: Site) -> None:
    r = jobs_site.run("get", "jobs", "-L", "experiment,system", "-L", "run", "--state", "FAILED")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "APP", "STATE", "WORKDIR", "AGE", "EXPERIMENT", "SYSTEM", "RUN"]
    assert lines[1].split()[0] == "test-0" and lines[1].split()[-3:] == ["foo", "D2O", "0"]
    r = jobs_site.run("get", "jobs", "test-9", "-L", "system", "--show-labels")
    header, row = r.stdout.splitlines()
    assert header.split()[-2:] == ["SYSTEM", "LABELS"]
    assert row.split()[-1] == "experiment=bar"  # no system label: an empty cell, as in kubectl
    assert row.index("experiment=bar") == header.index("LABELS")
    wide = jobs_site.run("get", "jobs", "test-1", "-o", "wide", "--show-labels").stdout.splitlines()
    assert wide[0].split()[-1] == "LABELS" and wide[1].endswith("experiment=foo,run=1,system=H2O")
    r = jobs_site.run("get", "jobs", "test-1", "-L", "app.kubernetes.io/part-of")
    assert r.stdout.splitlines()[0].split()[-1] == "PART-OF"


def test_show_labels_without_labels_says_none(any_site: Site, tmp_path: Path) -> None:
    f = write_yaml(tmp_path / "j.yaml", [hello_app(), job_doc("a", "w/a")])
    assert any_site.run("apply", "-f", str(f)).exit_code == 0
    assert any_site.run("get", "jobs", "--show-labels").stdout.splitlines()[1].split()[-1] == "<none>"
    assert any_site.run("get", "sites", "--show-labels").stdout.splitlines()[0].split()[-1] == "LABELS"
    assert any_site.registry().count(SiteKind, any_site.namespace) == 1


@pytest.mark.parametrize("args, expect", [
    (["--field-selector", "spec.color=red"], 'error: field label not supported: "spec.color" (supported for jobs: '),
    (["--field-selector", "status.state"], 'error: invalid field selector "status.state": expected FIELD=VALUE'),
    (["--field-selector", "status.state=FAILED,"], "empty requirement"),
    (["--field-selector", "=x"], 'invalid field selector "=x"'),
    (["--field-selector", "status.state=bogus"], "unknown job state 'bogus'"),
    (["--field-selector", "status.state="], "unknown job state ''"),
    (["--field-selector", "spec.app in (a,b)"], 'invalid field selector "spec.app in (a"'),
    (["--field-selector", "spec.app=a=b"], "a value may not contain"),
    (["-L", "bad key"], "error: -L bad key: label key 'bad key' is invalid"),
    (["-L", "a,,b"], 'error: invalid -L value "a,,b"'),
])
def test_bad_field_selectors_and_label_columns(jobs_site: Site, args: list[str], expect: str) -> None:
    line = jobs_site.run("get", "jobs", *args).one_error()
    assert expect in line, line


def test_workdir_on_another_kind_is_refused(site: Site) -> None:
    rev = site.revision()
    line = site.run("get", "apps", "--workdir", "x").one_error()
    assert line == "error: --workdir only applies to jobs, not apps"
    assert site.revision() == rev


def test_delete_with_a_field_selector(jobs_site: Site) -> None:
    r = jobs_site.run("delete", "jobs", "--field-selector", "status.state=FAILED,spec.workdir!=test/3")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == 'job.balsam.io "test-0" deleted'
    assert names(jobs_site, "--state", "FAILED") == t(3)
    rev = jobs_site.revision()
    assert jobs_site.run("delete", "jobs", "--field-selector", "spec.nope=1").one_error().startswith(
        'error: field label not supported: "spec.nope"')
    assert jobs_site.revision() == rev
