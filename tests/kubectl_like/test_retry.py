"""balsamctl retry (Balsam's job modify -s RESTART_READY in bulk) and what apply says about finished jobs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from apis import Job, JobState

from ._streams import TO_FINISHED, TO_RUNNING, move
from .conftest import Site, hello_app, job_doc, manifest, write_yaml

S = JobState
FAILED_PATH = [*TO_RUNNING, S.RUN_ERROR, S.FAILED]


@pytest.fixture
def ran(any_site: Site, tmp_path: Path) -> Site:
    """f1, f2 FAILED (exp=foo), done JOB_FINISHED (exp=foo), running RUNNING, fresh CREATED (exp=foo)."""
    docs = [hello_app(), job_doc("f1", "w/f1", labels={"exp": "foo"}), job_doc("f2", "w/f2", labels={"exp": "foo"}),
            job_doc("done", "w/done", labels={"exp": "foo"}), job_doc("running", "w/running"),
            job_doc("fresh", "w/fresh", labels={"exp": "foo"})]
    assert any_site.run("apply", "-f", str(write_yaml(tmp_path / "j.yaml", docs))).exit_code == 0
    reg = any_site.registry()
    for name in ("f1", "f2"):
        move(reg, name, FAILED_PATH, any_site.namespace)
    move(reg, "done", [*TO_RUNNING, *TO_FINISHED], any_site.namespace)
    move(reg, "running", TO_RUNNING, any_site.namespace)
    return any_site


def state(site: Site, name: str) -> JobState:
    return site.registry().get(Job, name, site.namespace).status.state


def test_retry_by_selector_and_state(ran: Site) -> None:
    r = ran.run("retry", "-l", "exp=foo", "--state", "FAILED")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines() == ["job.balsam.io/f1 retried (was FAILED)", "job.balsam.io/f2 retried (was FAILED)"]
    assert state(ran, "f1") is S.RESTART_READY and state(ran, "f2") is S.RESTART_READY
    assert state(ran, "done") is S.JOB_FINISHED
    job = ran.registry().get(Job, "f1", ran.namespace)
    last = job.status.history[-1]
    assert (last.from_state, last.to_state) == (S.FAILED, S.RESTART_READY)
    assert last.message == "retried by the user (balsamctl retry)"
    assert job.status.placement is None  # placed again wherever there is room
    # the state index moved with it
    assert ran.run("get", "jobs", "--state", "RESTART_READY", "-o", "name").stdout.split() == \
        ["job.balsam.io/f1", "job.balsam.io/f2"]


def test_retry_selected_leaves_jobs_that_have_not_run(ran: Site) -> None:
    r = ran.run("retry", "-l", "exp=foo")
    assert r.exit_code == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == ["job.balsam.io/done retried (was JOB_FINISHED)",
                                             "job.balsam.io/f1 retried (was FAILED)",
                                             "job.balsam.io/f2 retried (was FAILED)"]
    assert r.err_lines == ["Warning: 1 selected job(s) have not run yet and were not retried (1 CREATED)"]
    assert state(ran, "fresh") is S.CREATED
    r = ran.run("retry", "-l", "exp=foo", "--state", "RESTART_READY")
    assert r.exit_code == 0 and all(ln.endswith("unchanged (already RESTART_READY)") for ln in r.stdout.splitlines())


def test_retry_named_running_and_field_selector(ran: Site) -> None:
    r = ran.run("retry", "job", "running")
    assert r.stdout.strip() == "job.balsam.io/running retried (was RUNNING)"  # its node agent kills the run
    assert ran.run("retry", "job/f1").exit_code == 0 and state(ran, "f1") is S.RESTART_READY
    r = ran.run("retry", "--field-selector", "spec.workdir=w/f2,status.state=FAILED")
    assert r.stdout.strip() == "job.balsam.io/f2 retried (was FAILED)"
    r = ran.run("retry", "--all")
    assert r.stdout.strip().splitlines()[0] == "job.balsam.io/done retried (was JOB_FINISHED)"


def test_dry_runs_write_nothing(ran: Site) -> None:
    rev = ran.revision()
    for mode in ("--dry-run", "--dry-run=server"):
        r = ran.run("retry", "--state", "FAILED", mode)
        assert r.exit_code == 0, r.stderr
        assert r.stdout.splitlines()[0].startswith("job.balsam.io/f1 retried (was FAILED) (")
    assert ran.revision() == rev


@pytest.mark.parametrize("args, expect", [
    (["job", "fresh", "f1"], 'error: job "fresh" is CREATED: it has not run yet, so there is nothing to retry'),
    (["f1", "ghost"], 'Error from server (NotFound): jobs.balsam.io "ghost" not found'),
    ([], "error: one or more resources must be specified"),
    (["--state", "CREATED"], "error: --state CREATED: such jobs have not run yet"),
    (["--state", "bogus"], "error: unknown job state 'bogus'"),
    (["apps", "hello"], "error: retry only applies to jobs, not apps"),
    (["app/hello"], "error: retry only applies to jobs, not apps"),
    (["f1", "-l", "exp=foo"], "error: names cannot be combined with a selector"),
    (["--all", "--state", "FAILED"], "error: --all cannot be combined with a selector"),
    (["--field-selector", "spec.x=1"], 'error: field label not supported: "spec.x"'),
    (["-l", "a b"], "error: "),
])
def test_bad_input_writes_nothing(ran: Site, args: list[str], expect: str) -> None:
    rev = ran.revision()
    line = ran.run("retry", *args).one_error()
    assert line.startswith(expect), line
    assert ran.revision() == rev
    assert state(ran, "f1") is S.FAILED


# --- apply on finished jobs (item 6) ------------------------------------------------------------


def test_apply_warns_that_a_finished_jobs_spec_change_does_not_rerun_it(ran: Site, tmp_path: Path) -> None:
    f = write_yaml(tmp_path / "d.yaml", [job_doc("done", "w/done", labels={"exp": "foo"}, priority=3),
                                         job_doc("f1", "w/f1", labels={"exp": "foo"}, priority=3),
                                         job_doc("running", "w/running", priority=3)])
    r = ran.run("apply", "-f", str(f))
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines() == ["job.balsam.io/done configured", "job.balsam.io/f1 configured",
                                     "job.balsam.io/running configured"]
    assert r.err_lines == [
        'Warning: job "done" is JOB_FINISHED; spec changes do not re-run it: use balsamctl retry job done',
        'Warning: job "f1" is FAILED; spec changes do not re-run it: use balsamctl retry job f1',
    ]
    assert state(ran, "done") is S.JOB_FINISHED  # nothing moved it
    r = ran.run("apply", "-f", str(f))
    assert r.err_lines == [] and r.stdout.count("unchanged") == 3
    # a label-only change of a finished job changes no spec: no warning
    f2 = write_yaml(tmp_path / "e.yaml", [job_doc("done", "w/done", labels={"exp": "bar"}, priority=3)])
    r = ran.run("apply", "-f", str(f2))
    assert r.stdout.strip() == "job.balsam.io/done configured" and r.err_lines == []


def test_patch_and_dry_run_apply_warn_too(ran: Site, tmp_path: Path) -> None:
    r = ran.run("patch", "job", "done", "-p", '{"spec": {"priority": 4}}')
    assert r.err_lines == ['Warning: job "done" is JOB_FINISHED; spec changes do not re-run it: '
                           "use balsamctl retry job done"]
    f = write_yaml(tmp_path / "d.yaml", [job_doc("done", "w/done", labels={"exp": "foo"}, priority=5)])
    r = ran.run("apply", "-f", str(f), "--dry-run=server")
    assert r.stdout.strip() == "job.balsam.io/done configured (server dry run)"
    assert len(r.err_lines) == 1 and r.err_lines[0].startswith('Warning: job "done" is JOB_FINISHED')


def test_a_finished_job_changed_by_apply_reruns_with_retry(site: Site) -> None:
    """The documented way: apply the new spec, then retry; up runs it again with the new parameters."""
    write_yaml(site.path / "j.yaml", [
        manifest("App", "say", {"command": "echo said {{ word }}", "parameters": {"word": {"required": True}}}),
        job_doc("talk", "w/talk", app="say", parameters={"word": "one"})])
    assert site.sh("apply", "-f", "j.yaml").exit_code == 0
    assert site.sh("up", "--cpus", "2", "--lease-ttl", "3", "--until-done", timeout=240).exit_code == 0
    assert site.sh("logs", "talk").stdout == "said one\n"
    write_yaml(site.path / "j.yaml", [job_doc("talk", "w/talk", app="say", parameters={"word": "two"})])
    r = site.sh("apply", "-f", "j.yaml")
    assert "use balsamctl retry job talk" in r.stderr
    assert site.sh("retry", "job", "talk").stdout.strip() == "job.balsam.io/talk retried (was JOB_FINISHED)"
    t0 = time.monotonic()
    r = site.sh("up", "--cpus", "2", "--lease-ttl", "3", "--until-done", timeout=240)
    assert r.exit_code == 0, (r.stderr, time.monotonic() - t0)
    assert state(site, "talk") is S.JOB_FINISHED
    assert site.sh("logs", "talk").stdout == "said two\n"
    states = [h.to_state for h in site.registry().get(Job, "talk", site.namespace).status.history]
    assert states.count(S.RUNNING) == 2 and S.RESTART_READY in states
