"""``balsamctl wait``: on a store watch; met, timed out, FAILED early, deleted."""

from __future__ import annotations

import time

import pytest

from apis import Job, JobState, set_condition, utcnow
from tests._deadline import DEADLINE

from ._streams import TO_FINISHED, TO_RUNNING, Proc, move
from .conftest import Site
from .test_get_watch import add_app, add_job


def test_wait_until_the_job_finishes(any_site: Site, procs: list[Proc]) -> None:
    site = any_site
    add_app(site)
    add_job(site, "j")
    reg = site.registry()
    w = Proc(site.path, "wait", "job/j", "--for=state=JOB_FINISHED", "--timeout", f"{DEADLINE:g}s")
    procs.append(w)
    move(reg, "j", TO_RUNNING, site.namespace)
    w.no_line(0.3)
    move(reg, "j", TO_FINISHED, site.namespace)
    assert w.line() == "job.balsam.io/j condition met\n"
    assert w.wait() == 0 and w.stderr == ""


def test_wait_for_already_met_and_several_jobs(site: Site) -> None:
    add_app(site)
    for n in ("a", "b"):
        add_job(site, n, labels={"grp": "x"})
        move(site.registry(), n, [JobState.READY])
    r = site.run("wait", "job/a", "job/b", "--for=state=ready")
    assert (r.exit_code, r.stdout, r.stderr) == (0, "job.balsam.io/a condition met\njob.balsam.io/b condition met\n", "")
    r = site.run("wait", "jobs", "-l", "grp=x", "--for", "state=READY", "--timeout=0")
    assert r.exit_code == 0 and r.stdout.count("condition met") == 2


def test_wait_times_out(site: Site) -> None:
    add_app(site)
    add_job(site, "j")
    t0 = time.monotonic()
    r = site.run("wait", "job/j", "--for=state=JOB_FINISHED", "--timeout", "1s")
    assert time.monotonic() - t0 > 0.9  # no upper bound: a loaded machine may take long to start
    assert r.one_error() == "error: timed out waiting for the condition on jobs/j"
    assert r.stdout == ""


def test_wait_exits_early_when_the_job_fails(site: Site, procs: list[Proc]) -> None:
    add_app(site)
    add_job(site, "j")
    w = Proc(site.path, "wait", "job/j", "--for=state=JOB_FINISHED", "--timeout", f"{2 * DEADLINE:g}s")
    procs.append(w)
    move(site.registry(), "j", [JobState.FAILED])
    assert w.wait(DEADLINE) == 1  # before its own --timeout: stderr names the failure, not a timeout
    assert w.stderr == "error: job j reached FAILED while waiting for state=JOB_FINISHED\n"
    # The same when it had failed before the wait started.
    r = site.run("wait", "job/j", "--for=state=JOB_FINISHED")
    assert r.one_error() == "error: job j reached FAILED while waiting for state=JOB_FINISHED"


def test_wait_for_delete_and_for_a_condition(site: Site, procs: list[Proc]) -> None:
    # Whether a change lands before the waiter's read or after, the outcome is the same.
    add_app(site)
    add_job(site, "j")
    reg = site.registry()
    w = Proc(site.path, "wait", "job/j", "--for=condition=Unschedulable", "--timeout", f"{DEADLINE:g}s")
    procs.append(w)
    old = reg.get(Job, "j")
    new = old.status_copy()
    set_condition(new.status.conditions, "Unschedulable", "True", "NeverFits", "needs 99 GPUs", utcnow())
    reg.update(old, new)
    assert w.line() == "job.balsam.io/j condition met\n"
    d = Proc(site.path, "wait", "job/j", "--for", "delete", "--timeout", f"{DEADLINE:g}s")
    procs.append(d)
    reg.delete(Job, "j")
    assert d.line() == "job.balsam.io/j condition met\n"
    assert d.wait() == 0
    # Deleted already: met at once; a state wait on a missing job is NotFound.
    assert site.run("wait", "job/j", "--for=delete").stdout == "job.balsam.io/j condition met\n"
    assert site.run("wait", "job/j", "--for=state=READY").one_error() == \
        'Error from server (NotFound): jobs.balsam.io "j" not found'


def test_wait_jsonpath(site: Site) -> None:
    add_app(site)
    add_job(site, "j")
    r = site.run("wait", "job/j", "--for=jsonpath={.spec.app}=hello", "--timeout=0")
    assert (r.exit_code, r.stdout) == (0, "job.balsam.io/j condition met\n")


@pytest.mark.parametrize("args, expect", [
    (["job/j", "--for=state=DONE"], "error: --for=state=DONE: unknown job state 'DONE'"),
    (["job/j", "--for=ready"], "error: unrecognized condition: 'ready'"),
    (["job/j", "--for=delete", "--timeout", "soon"], 'error: invalid argument "soon" for "--timeout" flag'),
    (["jobs", "--for=delete"], "error: resource(s) were provided, but no name"),
    (["jobs", "-l", "nothing=here", "--for=delete"], "error: no matching resources found"),
    (["job/j", "--for=jsonpath={.a[}=1"], "error: "),
    ([], "error: Missing option '--for'"),
])
def test_wait_bad_input_is_one_line(site: Site, args: list[str], expect: str) -> None:
    add_app(site)
    add_job(site, "j")
    assert site.run("wait", *args).one_error().startswith(expect)


def test_wait_with_a_field_selector(site: Site) -> None:
    add_app(site)
    for n in ("a", "b", "c"):
        add_job(site, n)
    for n in ("a", "b"):
        move(site.registry(), n, [JobState.READY])
    r = site.run("wait", "jobs", "--field-selector", "metadata.name!=c", "--for=state=READY", "--timeout=0")
    assert (r.exit_code, r.stdout) == (0, "job.balsam.io/a condition met\njob.balsam.io/b condition met\n")
    assert site.run("wait", "jobs", "--field-selector", "spec.x=1", "--for=delete").one_error().startswith(
        'error: field label not supported: "spec.x"')
    assert site.run("wait", "job/a", "--field-selector", "metadata.name=a", "--for=delete").one_error() == \
        "error: a selector or --all cannot be combined with names"
