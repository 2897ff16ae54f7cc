"""Printers and the JSONPath template engine, without a store."""

from __future__ import annotations

import pytest

from apis import Job
from kubectl_like.jsonpath import JSONPathError, Template
from kubectl_like.printers import PRINTERS, format_table, human_duration, printer_for

DATA = {
    "kind": "List",
    "items": [
        {"metadata": {"name": "a", "labels": {"app.kubernetes.io/name": "x", "run": "1"}},
         "status": {"state": "FAILED"}, "spec": {"n": 1, "ok": True}},
        {"metadata": {"name": "b", "labels": {}}, "status": {"state": "RUNNING"}, "spec": {"n": 2, "ok": False}},
    ],
}


@pytest.mark.parametrize("template, expected", [
    ("{.kind}", "List"),
    ("{.items[*].metadata.name}", "a b"),
    ("{.items[0].metadata.name}", "a"),
    ("{.items[-1:].metadata.name}", "b"),
    ('{range .items[*]}{.metadata.name}{"\\t"}{.status.state}{"\\n"}{end}', "a\tFAILED\nb\tRUNNING\n"),
    ("{range .items[*]}[{.metadata.name},{.spec.n}] {end}", "[a,1] [b,2] "),
    ('{.items[?(@.status.state=="RUNNING")].metadata.name}', "b"),
    ("{.items[0].metadata.labels.app\\.kubernetes\\.io/name}", "x"),
    ("{.items[0].metadata.labels['app.kubernetes.io/name']}", "x"),
    ("{.items[*].spec.ok}", "true false"),
    ("{.items[1].spec}", '{"n":2,"ok":false}'),
    ("{..state}", "FAILED RUNNING"),
    ("names: {.items[*].metadata.name}.", "names: a b."),
    ("{.missing}", ""),
    (".items[0].metadata.name", "a"),  # kubectl accepts a bare path
    ("'{.kind}'", "List"),  # quoted once more by a shell-less caller
])
def test_jsonpath_templates(template: str, expected: str) -> None:
    assert Template(template).render(DATA) == expected


@pytest.mark.parametrize("template", ["{.items[", "{range .items[*]}x", "{end}", "{range}{end}", "{}"])
def test_jsonpath_syntax_errors(template: str) -> None:
    with pytest.raises(JSONPathError):
        Template(template)


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (59, "59s"), (119, "119s"), (120, "2m"), (150, "2m30s"), (600, "10m"), (3 * 3600 - 1, "179m"),
    (3 * 3600, "3h"), (3 * 3600 + 1200, "3h20m"), (8 * 3600, "8h"), (47 * 3600, "47h"), (50 * 3600, "2d2h"),
    (8 * 86400, "8d"), (400 * 86400, "400d"), (800 * 86400, "2y70d"), (3650 * 86400, "10y"),
])
def test_human_duration_is_kubectls(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def test_format_table_is_tabwriter_like() -> None:
    text, widths = format_table(["NAME", "STATE"], [["a-long-name-here", "RUNNING"], ["b", "FAILED"]])
    w = len("a-long-name-here") + 3
    assert text.splitlines() == ["NAME".ljust(w) + "STATE", "a-long-name-here".ljust(w) + "RUNNING",
                                 "b".ljust(w) + "FAILED"]
    assert widths[0] == len("a-long-name-here") + 3


def test_printer_registry_is_pluggable() -> None:
    from apis import Job
    from kubectl_like.printers import Printer, printer

    @printer("count")
    class CountPrinter(Printer):
        def render(self, objs, single=False):  # type: ignore[no-untyped-def]
            return f"{len(objs)}\n"

    try:
        assert printer_for("count", Job).render([]) == "0\n"
    finally:
        del PRINTERS["count"]
    with pytest.raises(Exception, match="allowed formats are"):
        printer_for("count", Job)
    with pytest.raises(Exception, match="allowed formats are"):
        printer_for("yaml=x", Job)


def _job(name: str, state: str, suspend: bool = False) -> Job:
    return Job(metadata={"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
               spec={"app": "hello", "workdir": name, "suspend": suspend}, status={"state": state})


@pytest.mark.parametrize("output", ["table", "wide"])
def test_watch_rows_stay_aligned_when_a_later_state_is_longer(output: str) -> None:
    """get -w: the first table holds only short states; a later row with the longest state
    (AWAITING_PARENTS,Suspended) and reason must start its columns where the header does."""
    p = printer_for(None if output == "table" else output, Job)
    first = p.render_watch_start([_job("a", "CREATED")])
    later = p.render_event(_job("b", "AWAITING_PARENTS", suspend=True), first=False)
    header = first.splitlines()[0]
    row = later.rstrip("\n")
    for col in ("WORKDIR", "AGE"):
        start = header.index(col)
        assert row[start - 1] == " " and row[start] != " ", (header, row)
    # watch-only (no table first): the first event fixes the widths the same way
    q = printer_for(None, Job)
    head = q.render_event(_job("a", "CREATED"), first=True).splitlines()[0]
    nxt = q.render_event(_job("b", "AWAITING_PARENTS", suspend=True), first=False)
    assert nxt.index("b   ") == 0 and nxt.rstrip().endswith(nxt.split()[-1])
    assert nxt[head.index("WORKDIR") - 1] == " " and nxt[head.index("WORKDIR")] == "b"
