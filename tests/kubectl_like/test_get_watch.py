"""``balsamctl get KIND -w``: the table, then one row per change, from a store watch."""

from __future__ import annotations

import itertools
import json
import time

import pytest

from apis import App, Job, JobState, parse_object
from kubectl_like.watching import parse_duration
from tests._deadline import DEADLINE

from ._streams import TO_RUNNING, Proc, move
from .conftest import Site, hello_app, job_doc


def add_app(site: Site) -> None:
    app = parse_object(hello_app(), [App])
    app.metadata.namespace = site.namespace
    site.registry().create(app)


def add_job(site: Site, name: str, labels: dict[str, str] | None = None) -> Job:
    job = parse_object(job_doc(name, labels=labels, parameters={"name": name}), [Job])
    job.metadata.namespace = site.namespace
    return site.registry().create(job)  # type: ignore[return-value]


def cells(line: str) -> list[str]:
    return line.split()


def test_watch_streams_created_job_and_its_state_changes(any_site: Site, procs: list[Proc]) -> None:
    site = any_site
    add_app(site)
    add_job(site, "first")
    reg = site.registry()
    w = Proc(site.path, "get", "jobs", "-w")
    procs.append(w)
    assert cells(w.line())[:3] == ["NAME", "APP", "STATE"]
    assert cells(w.line())[:3] == ["first", "hello", "CREATED"]
    # Changes after the list: a new job, then state changes driven through the Registry.
    add_job(site, "second")
    assert cells(w.line())[:3] == ["second", "hello", "CREATED"]
    move(reg, "second", TO_RUNNING, site.namespace)
    assert cells(w.line())[:3] == ["second", "hello", "RUNNING"]
    move(reg, "first", [JobState.READY], site.namespace)
    assert cells(w.line())[:3] == ["first", "hello", "READY"]
    reg.delete(Job, "first", site.namespace)
    assert cells(w.line())[:3] == ["first", "hello", "READY"]  # kubectl prints a deleted object's last row
    assert w.interrupt() == 0
    assert w.stderr == ""


def test_watch_rows_align_with_the_listed_table(site: Site, procs: list[Proc]) -> None:
    add_app(site)
    add_job(site, "a-rather-long-job-name")
    w = Proc(site.path, "get", "jobs", "-w")
    procs.append(w)
    header, row = w.line(), w.line()
    add_job(site, "b")
    streamed = w.line()
    assert header.index("APP") == row.index("hello") == streamed.index("hello")


def test_watch_filters_apply_to_streamed_events(site: Site, procs: list[Proc]) -> None:
    add_app(site)
    reg = site.registry()
    w = Proc(site.path, "get", "jobs", "-w", "-l", "team=a", "-o", "name")
    procs.append(w)
    add_job(site, "other", labels={"team": "b"})
    add_job(site, "mine", labels={"team": "a"})
    assert w.line() == "job.balsam.io/mine\n"  # "other" never printed
    move(reg, "other", [JobState.READY])
    move(reg, "mine", [JobState.READY])
    assert w.line() == "job.balsam.io/mine\n"
    w.no_line(0.3)


def test_watch_state_filter_shows_the_row_that_leaves_the_state(site: Site, procs: list[Proc]) -> None:
    add_app(site)
    add_job(site, "j")
    reg = site.registry()
    w = Proc(site.path, "get", "jobs", "--state", "CREATED", "-w", "--no-headers")
    procs.append(w)
    assert cells(w.line())[:3] == ["j", "hello", "CREATED"]
    move(reg, "j", [JobState.READY])
    assert cells(w.line())[:3] == ["j", "hello", "READY"]  # its last change (kubectl: a DELETED event)
    move(reg, "j", [JobState.STAGED_IN])
    w.no_line(0.3)  # no longer matching: not printed again


def test_watch_json_prints_one_object_per_event(site: Site, procs: list[Proc]) -> None:
    add_app(site)
    add_job(site, "j")
    w = Proc(site.path, "get", "jobs", "-w", "-o", "json")
    procs.append(w)
    text = ""
    dec = json.JSONDecoder()
    docs: list[dict[str, object]] = []
    while len(docs) < 2:
        text += w.line()
        try:
            doc, end = dec.raw_decode(text.strip())
        except json.JSONDecodeError:
            continue
        docs.append(doc)
        text = text.strip()[end:]
        if len(docs) == 1:
            move(site.registry(), "j", [JobState.READY])  # after the list was printed
    assert [d["kind"] for d in docs] == ["Job", "Job"]  # objects, not a List
    assert [d["status"].get("state", "CREATED") for d in docs] == ["CREATED", "READY"]  # type: ignore[attr-defined]


def test_watch_only_and_a_named_object(site: Site, procs: list[Proc]) -> None:
    add_app(site)
    add_job(site, "j")
    add_job(site, "j2")  # a name that starts with the watched one: not shown
    reg = site.registry()
    w = Proc(site.path, "get", "job", "j", "--watch-only", "-o", "wide")
    procs.append(w)
    w.no_line(0.5)  # nothing listed (a slow start can only make this pass)
    move(reg, "j2", [JobState.READY])
    move(reg, "j", [JobState.READY])
    # The process may open its watch after any change (a loaded machine starts it late): touch
    # both jobs until a change of j is printed, however long the start takes.
    deadline = time.monotonic() + DEADLINE
    for tick in itertools.count():
        assert time.monotonic() < deadline, "no event printed"
        for name in ("j2", "j"):
            reg.mutate(Job, name, lambda job, t=str(tick): job.metadata.labels.__setitem__("tick", t), site.namespace)
        try:
            header = w.line(timeout=1)
            break
        except AssertionError:
            continue
    assert cells(header)[:3] == ["NAME", "APP", "STATE"]  # the header comes with the first event
    assert cells(w.line())[:3] == ["j", "hello", "READY"]
    # Rows for later ticks may still follow; a last move marks the end of j's rows.
    move(reg, "j2", [JobState.STAGED_IN])
    move(reg, "j", [JobState.STAGED_IN])
    while (row := cells(w.line()))[2] != "STAGED_IN":
        assert row[:3] == ["j", "hello", "READY"]
    assert row[:3] == ["j", "hello", "STAGED_IN"]
    w.no_line(0.3)  # j2 is not shown


def test_watch_errors_are_one_line(site: Site) -> None:
    add_app(site)
    assert site.run("get", "job", "ghost", "-w").one_error() == \
        'Error from server (NotFound): jobs.balsam.io "ghost" not found'
    assert site.run("get", "jobs", "a", "b", "-w").one_error().startswith(
        "error: watch is only supported on individual resources")
    assert site.run("get", "jobs", "-w", "-o", "bogus").one_error().startswith("error: unable to match a printer")


def test_parse_duration() -> None:
    assert parse_duration("30s") == 30
    assert parse_duration("1m30s") == 90
    assert parse_duration("1h") == 3600
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2") == 2
    assert parse_duration("-1s") == -1
    for bad in ("", "s", "10x", "1s2", "abc"):
        with pytest.raises(Exception, match="invalid argument"):
            parse_duration(bad)
