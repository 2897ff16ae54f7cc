"""``balsamctl logs JOB [-f] [--tail N]``: data/<workdir>/job.out of the site."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from apis import JobState
from kubectl_like.commands.logs import tail_offset

from ._streams import TO_FINISHED, TO_RUNNING, Proc, move
from .conftest import Site
from .test_get_watch import add_app, add_job


def output_of(site: Site, name: str) -> Path:
    return site.path / "data" / "test" / name / "job.out"  # job_doc's workdir: test/<name>


def write_output(site: Site, name: str, text: str) -> Path:
    f = output_of(site, name)
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(text)
    return f


def test_logs_prints_job_out(site: Site) -> None:
    add_app(site)
    add_job(site, "j")
    move(site.registry(), "j", TO_RUNNING + TO_FINISHED)
    write_output(site, "j", "one\ntwo\nthree\n")
    r = site.run("logs", "j")
    assert (r.exit_code, r.stdout, r.stderr) == (0, "one\ntwo\nthree\n", "")
    assert site.run("logs", "job/j", "--tail", "2").stdout == "two\nthree\n"
    assert site.run("logs", "j", "--tail=0").stdout == ""
    # From another directory, with the site named by --site.
    r = site.sh("--site", str(site.path), "logs", "j", "--tail", "1", cwd=site.path.parent)
    assert (r.exit_code, r.stdout) == (0, "three\n")


def test_logs_missing_job_and_no_output_yet(site: Site) -> None:
    add_app(site)
    add_job(site, "j")
    assert site.run("logs", "ghost").one_error() == 'Error from server (NotFound): jobs.balsam.io "ghost" not found'
    assert site.run("logs", "j").one_error() == "error: job j has no output yet (state CREATED)"
    assert site.run("logs", "app/hello").one_error().startswith("error: logs are kept for jobs only")
    move(site.registry(), "j", [JobState.FAILED])  # failed before it ever ran
    assert site.run("logs", "j", "-f").one_error() == "error: job j has no output yet (state FAILED)"


def test_logs_follow_until_the_job_ends(any_site: Site, procs: list[Proc]) -> None:
    site = any_site
    add_app(site)
    add_job(site, "j")
    reg = site.registry()
    move(reg, "j", TO_RUNNING, site.namespace)
    out = write_output(site, "j", "first\n")
    f = Proc(site.path, "logs", "-f", "j")
    procs.append(f)
    assert f.line() == "first\n"
    with open(out, "a") as fh:
        fh.write("second\n")
    assert f.line() == "second\n"
    with open(out, "a") as fh:
        fh.write("last\n")
    move(reg, "j", TO_FINISHED, site.namespace)  # the end: whatever is left, then exit 0
    assert f.wait() == 0
    assert f.rest() == "last\n"
    assert f.stderr == ""


def test_logs_follow_waits_for_output_and_restarts_with_a_new_attempt(site: Site, procs: list[Proc]) -> None:
    add_app(site)
    add_job(site, "j")
    reg = site.registry()
    f = Proc(site.path, "logs", "j", "--follow")
    procs.append(f)
    f.no_line(0.5)  # nothing yet: it waits for the job to run
    move(reg, "j", TO_RUNNING)
    out = write_output(site, "j", "attempt 1\n")
    assert f.line() == "attempt 1\n"
    move(reg, "j", [JobState.RUN_ERROR, JobState.RESTART_READY])
    out.write_text("")  # the agent truncates job.out when it starts the next attempt
    move(reg, "j", [JobState.RUNNING])
    out.write_text("attempt 2\n")
    assert f.line() == "attempt 2\n"
    move(reg, "j", TO_FINISHED)
    assert f.wait() == 0


@pytest.mark.parametrize("text, n, expect", [
    (b"a\nb\nc\n", 2, b"b\nc\n"),
    (b"a\nb\nc", 2, b"b\nc"),
    (b"a\nb\nc\n", 5, b"a\nb\nc\n"),
    (b"a\nb\nc\n", -1, b"a\nb\nc\n"),
    (b"", 3, b""),
    (b"x" * 200_000 + b"\nlast\n", 1, b"last\n"),
    (b"\n".join(b"%d" % i for i in range(100_000)) + b"\n", 3, b"99997\n99998\n99999\n"),
])
def test_tail_offset(text: bytes, n: int, expect: bytes) -> None:
    f = io.BytesIO(text)
    assert text[tail_offset(f, n):] == expect
