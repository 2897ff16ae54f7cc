"""The fast path of :func:`apis.analytics.build_report` (minutes read from the times' text,
exact parses only at run edges, inline area, float-key sorts, rounding skipped for exact
weights) gives the very figures of the first, plain implementation (tests/apis/_report_reference.py)
on a recorded campaign and on the forms of input it treats specially."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from _report_reference import reference_report  # tests/apis is on sys.path (no __init__.py)

from apis.analytics import build_report
from bench._campaign import job_doc

NOW = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
START = NOW - timedelta(minutes=60)


def campaign(n: int = 600) -> list[dict[str, Any]]:
    docs = [job_doc(i, n, START, NOW, "default") for i in range(n)]
    for i, d in enumerate(docs):  # as the registry stamps them
        d["metadata"]["creationTimestamp"] = (START + timedelta(seconds=i * 5.5)).isoformat().replace("+00:00", "Z")
    return docs


def variants(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Times with an offset instead of Z, 1/3-node jobs (rounded sums), no history, a job
    that never left its first state, failures with a lastUpdate."""
    out = copy.deepcopy(docs)
    for i, d in enumerate(out):
        st = d["status"]
        if i % 7 == 0:
            for ev in st.get("history") or []:
                ev["time"] = ev["time"].replace("Z", "+00:00")
        if i % 5 == 0:
            d["spec"]["resources"]["nodePackingCount"] = 3
        if i % 11 == 0:
            st.pop("history", None)
        if st.get("state") == "FAILED":
            st["lastUpdate"] = st["history"][-1]["time"] if st.get("history") else None
    out.append({"metadata": {"name": "bare"}, "spec": {"app": "x"}})
    return out


def figures(rep: Any) -> tuple[Any, ...]:
    return (rep.to_json(), rep.utilization, rep.busy_node_seconds, rep.states_over_time, rep.runtimes,
            rep.finished_per_minute, rep.failures, rep.state_counts, rep.jobs)


SINCES = [None, NOW - timedelta(minutes=30, seconds=0.5), NOW - timedelta(minutes=3), NOW - timedelta(hours=5),
          NOW.replace(second=0, microsecond=0) - timedelta(minutes=20)]


@pytest.mark.parametrize("since", SINCES, ids=["all", "mid-minute", "last-3m", "before-all", "on-a-minute"])
@pytest.mark.parametrize("make", [campaign, lambda: variants(campaign())], ids=["campaign", "variants"])
def test_fast_report_equals_the_reference(since: datetime | None, make: Any) -> None:
    docs = make()
    s = since.timestamp() if since is not None else None
    want = reference_report(copy.deepcopy(docs), "default", "", s, NOW.timestamp())
    got = build_report(docs, "default", "", s, NOW.timestamp())
    assert figures(got) == figures(want)
    assert got.utilization[0]  # the campaign ran jobs: the comparison covered the step series
