"""``balsamctl report``: throughput, node utilization, jobs by state over time, run time per
App and failures by exit code, from the jobs' stored history (:mod:`apis.analytics`)."""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime
from pathlib import Path

import click

from apis import BadRequest
from apis.analytics import Report, build_report, iter_jobs, to_datetime

from .._context import common_options, get_ctx
from .._errors import CLIError
from ..plots import render_report_png
from ..printers import format_table, human_duration
from ..watching import parse_duration

#: At most this many rows per time section of the table (wider buckets beyond).
TABLE_ROWS = 30
_BUCKETS_MIN = (1, 2, 5, 10, 15, 30, 60, 120, 360, 720, 1440)


def parse_since(text: str | None, now: float) -> float | None:
    """``--since``: a duration back from now (``30m``, ``2h``) or an ISO time (UTC if naive)."""
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text)
        return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()
    except ValueError:
        pass
    secs = parse_duration(text, "--since")
    if secs < 0:
        raise CLIError(f'invalid argument "{text}" for "--since" flag: must not be negative')
    return now - secs


def _minute_label(m: int) -> str:
    return to_datetime(m * 60).strftime("%Y-%m-%d %H:%M")


def render_table(rep: Report) -> str:
    out: list[str] = []
    head = f"{rep.jobs:,} jobs in namespace {rep.namespace}"
    if rep.selector:
        head += f" matching {rep.selector}"
    if rep.since is not None:
        head += f", events since {to_datetime(rep.since).strftime('%Y-%m-%d %H:%M:%S')} UTC"
    out.append(head + "\n")
    rows = [[s, str(n)] for s, n in sorted(rep.state_counts.items(), key=lambda kv: -kv[1])]
    out.append(format_table(["STATE", "JOBS"], rows)[0])

    mins = rep.minutes()
    width = next((b for b in _BUCKETS_MIN if math.ceil(len(mins) / b) <= TABLE_ROWS), _BUCKETS_MIN[-1])
    total_done = 0
    trows, urows = [], []
    for i in range(0, len(mins), width):
        chunk = mins[i:i + width]
        done = sum(rep.finished_per_minute.get(m, 0) for m in chunk)
        total_done += done
        busy = sum(rep.busy_node_seconds.get(m, 0.0) for m in chunk) / (60.0 * len(chunk))
        trows.append([_minute_label(chunk[0]), f"{done / len(chunk):g}", str(total_done)])
        urows.append([_minute_label(chunk[0]), f"{busy:.2f}"])
    per = "minute" if width == 1 else f"{width} minutes"
    out.append(f"THROUGHPUT (jobs finished per minute; one row per {per})")
    out.append(format_table(["FROM (UTC)", "FINISHED/MIN", "TOTAL"], trows)[0] if trows else "  no jobs finished\n")
    peak = max(rep.utilization[1], default=0)
    out.append(f"NODE UTILIZATION (average nodes busy; peak {peak:g})")
    out.append(format_table(["FROM (UTC)", "NODES BUSY"], urows)[0] if urows else "  no job ran\n")

    states = sorted({s for row in rep.states_over_time.values() for s in row})
    srows: list[list[str]] = []
    last: dict[str, int] = {}
    for i in range(0, len(mins), width):
        chunk = mins[i:i + width]
        for m in chunk:
            last = rep.states_over_time.get(m, last)
        srows.append([_minute_label(chunk[-1]), *[str(last.get(s, 0)) for s in states]])
    out.append("JOBS BY STATE OVER TIME (at the end of each row's period)")
    out.append(format_table(["AT (UTC)", *states], srows)[0] if srows and states else "  no history\n")

    rrows = [[app, str(int(s["jobs"])), *(human_duration(s[k]) if s[k] >= 120 else f"{s[k]:.1f}s"
                                        for k in ("min", "p50", "p90", "max", "mean"))]
             for app, s in rep.runtime_stats().items()]
    out.append("RUN TIME PER APP")
    out.append(format_table(["APP", "RUNS", "MIN", "P50", "P90", "MAX", "MEAN"], rrows)[0] if rrows
               else "  no finished runs\n")

    frows = [[code, str(len(items)), items[0][0], (items[0][1] or "-").splitlines()[0][:80] if items[0][1] else "-"]
             for code, items in sorted(rep.failures.items(), key=lambda kv: -len(kv[1]))]
    out.append("FAILURES BY EXIT CODE")
    out.append(format_table(["EXIT CODE", "JOBS", "EXAMPLE", "REASON"], frows)[0] if frows else "  none\n")
    return "\n".join(out)


@click.command("report", short_help="Throughput, utilization, states over time, run times, failures.")
@click.option("-l", "--selector", "selector", metavar="SELECTOR", default=None, help="Only jobs with these labels.")
@click.option("--since", metavar="T", default=None, help="Only events after T: a duration back (30m, 2h) or an ISO time.")
@click.option("-o", "--output", "output", type=click.Choice(["table", "json", "png"]), default="table",
              show_default=True, help="png needs matplotlib (pip install 'balsamctl[plots]').")
@click.option("--out", "out_file", metavar="FILE", default=None,
              help="Write here instead of stdout (for png: default report.png).")
@common_options
def command(selector: str | None, since: str | None, output: str, out_file: str | None) -> None:
    """Report on the jobs of a namespace, from their stored state history.

    \b
    balsamctl report                               # tables on stdout
    balsamctl report -l experiment=xpcs --since 2h -o json
    balsamctl report -o png --out report.png       # five charts in one PNG
    """
    ctx = get_ctx()
    now = datetime.now(UTC).timestamp()
    since_t = parse_since(since, now)
    if output == "png":
        target = Path(out_file or "report.png")
        if target.is_dir():
            raise CLIError(f"--out {target}: is a directory")
    try:
        docs = iter_jobs(ctx.registry, ctx.namespace, selector)
        rep = build_report(docs, ctx.namespace, selector or "", since_t, now)
    except ValueError as e:  # a stored time that does not parse
        raise BadRequest(str(e)) from None
    if output == "png":
        render_report_png(rep, target)
        click.echo(f"report written to {target}")
        return
    text = json.dumps(rep.to_json(), indent=2) + "\n" if output == "json" else render_table(rep)
    if out_file:
        fd = os.open(out_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    else:
        click.echo(text, nl=False)
