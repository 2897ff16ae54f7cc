"""Balsam's ``balsam.analytics``: throughput and utilization from the jobs' stored history,
ready for matplotlib's ``plt.step``.

    from balsam.api import EventLog
    from balsam.analytics import throughput_report, utilization_report

    times, done = throughput_report(EventLog.objects.filter(tags={"experiment": "xpcs"}))
    plt.step(times, done, where="post")

Computed by :mod:`apis.analytics` from each Job's ``status.history`` (no event table).
"""

from __future__ import annotations

from apis.analytics import EventLogQuery, LogEvent, available_nodes, throughput_report, utilization_report

__all__ = ["EventLogQuery", "LogEvent", "available_nodes", "throughput_report", "utilization_report"]
