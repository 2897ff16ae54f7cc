"""The report as one PNG (matplotlib, the optional ``plots`` extra: ``pip install
'balsamctl[plots]'``). matplotlib is imported when a PNG is asked for, so every other command
works without it; its absence is one ``error:`` line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from apis.analytics import Report, to_datetime

from ._errors import CLIError

STATE_COLORS = {
    "JOB_FINISHED": "#2e7d32", "FAILED": "#c62828", "RUNNING": "#1565c0", "RUN_ERROR": "#ef6c00",
    "RUN_TIMEOUT": "#ad1457", "CREATED": "#9e9e9e", "AWAITING_PARENTS": "#bdbdbd", "READY": "#80deea",
    "STAGED_IN": "#4dd0e1", "PREPROCESSED": "#26a69a", "RUN_DONE": "#7986cb", "POSTPROCESSED": "#9575cd",
    "STAGED_OUT": "#ba68c8", "RESTART_READY": "#ffb300",
}


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CLIError("-o png needs matplotlib, which is not installed: pip install 'balsamctl[plots]'") from None
    return plt


def render_report_png(report: Report, path: str | os.PathLike[str]) -> Path:
    """Five panels: throughput, node utilization, jobs by state, run time per App, failures."""
    plt = _pyplot()
    doc = report.to_json()
    mins = [to_datetime(m * 60) for m in report.minutes()]
    fig, axes = plt.subplots(2, 3, figsize=(16, 9), layout="constrained")
    title = f"balsamctl report — namespace {report.namespace}, {report.jobs:,} jobs"
    if report.selector:
        title += f", -l {report.selector}"
    fig.suptitle(title, fontsize=14)

    ax = axes[0][0]
    ax.bar(mins, doc["throughput"]["finished"], width=1 / 1440, align="edge", color="#2e7d32")
    ax.set_title("Throughput (jobs finished per minute)")
    ax.set_ylabel("jobs / min")

    ax = axes[0][1]
    times, busy = report.utilization
    if times:
        # matplotlib's date numbers (days since 1970) straight from epoch seconds: 10^5 steps
        # as datetimes cost seconds to build and convert back; the drawing is the same.
        ax.xaxis_date()
        ax.step([t / 86400.0 for t in times], busy, where="post", color="#1565c0", label="nodes busy")
    ax.set_title("Node utilization (nodes' worth running jobs)")
    ax.set_ylabel("nodes")

    ax = axes[0][2]
    counts = doc["statesOverTime"]["counts"]
    if mins and counts:
        names = list(counts)
        # One more point a minute on, so the last minute shows as a step (and one minute at all).
        xs = [*mins, to_datetime((report.minutes()[-1] + 1) * 60)]
        ax.stackplot(xs, [[*counts[s], counts[s][-1]] for s in names], labels=names,
                     colors=[STATE_COLORS.get(s, "#616161") for s in names], step="post")
        ax.legend(loc="upper left", fontsize=7)
    ax.set_title("Jobs by state over time")
    ax.set_ylabel("jobs")

    ax = axes[1][0]
    apps = sorted(report.runtimes)
    if apps:
        ax.boxplot([report.runtimes[a] for a in apps], tick_labels=apps, showfliers=False)
    ax.set_title("Run time per App")
    ax.set_ylabel("seconds")

    ax = axes[1][1]
    fails = doc["failuresByExitCode"]
    ax.bar(list(fails) or [""], [v["jobs"] for v in fails.values()] or [0], color="#c62828")
    ax.set_title("Failures by exit code")
    ax.set_xlabel("exit code")
    ax.set_ylabel("jobs")

    ax = axes[1][2]
    sc = sorted(doc["stateCounts"].items(), key=lambda kv: -kv[1])
    ax.barh([k for k, _ in sc] or [""], [v for _, v in sc] or [0],
            color=[STATE_COLORS.get(k, "#616161") for k, _ in sc] or None)
    ax.invert_yaxis()
    ax.set_title("Jobs by state now")

    for row in axes:
        for a in row:
            a.grid(alpha=0.3)
    for a in (axes[0][0], axes[0][1], axes[0][2]):
        a.tick_params(axis="x", labelrotation=30, labelsize=8)
    out = Path(path)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # private, like every file we write
    with os.fdopen(fd, "wb") as f:
        fig.savefig(f, format="png", dpi=80)
    plt.close(fig)
    return out
