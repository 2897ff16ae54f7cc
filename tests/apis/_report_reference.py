"""The report's one-pass aggregation as first written (issue 18), before it was made fast:
the oracle that tests/apis/test_report_fast_path.py compares :func:`apis.analytics.build_report`
with. Kept verbatim (only renamed); do not optimise it."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any

from apis._states import JobState
from apis.analytics import FAILING_STATES, Report, _epoch, add_area, failure_reason, minute_of


def step_series(deltas: Iterable[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """(times, running totals) of sorted ``(time, +/-delta)`` pairs: ready for ``plt.step``."""
    pairs = sorted([(t, -d) for t, d in deltas])  # at a tie, starts (+) before ends: never below 0
    if not pairs:
        return [], []
    return [t for t, _ in pairs], [round(-v, 9) for v in accumulate(d for _, d in pairs)]


def reference_report(docs: Iterable[dict[str, Any]], namespace: str, selector: str, since: float | None,
                  now: float | None) -> Report:
    now = now if now is not None else datetime.now(UTC).timestamp()
    state_counts: Counter[str] = Counter()
    finished: Counter[int] = Counter()
    area: dict[int, float] = defaultdict(float)
    util: list[tuple[float, float]] = []
    runtimes: dict[str, list[float]] = defaultdict(list)
    failures: dict[str, list[tuple[str, str]]] = defaultdict(list)
    n = 0
    lo = since if since is not None else -math.inf
    # Jobs entering (+1) and leaving (-1) each state, per minute, in one flat dict keyed by
    # minute * K + state number: several moves of one job within a minute collapse into one.
    sidx = {s.value: i for i, s in enumerate(JobState)}
    snames = list(sidx)
    K = len(snames)
    sd: dict[int, int] = defaultdict(int)
    fromiso = datetime.fromisoformat
    minute_cache: dict[str, int] = {}
    for doc in docs:
        n += 1
        md, spec, status = doc.get("metadata", {}), doc.get("spec", {}), doc.get("status") or {}
        state = status.get("state", "CREATED")
        state_counts[state] += 1
        res = spec.get("resources") or {}
        weight = res.get("numNodes", 1) / res.get("nodePackingCount", 1)
        app = spec.get("app", "")
        hist = status.get("history") or []
        run_start: float | None = None
        last_s, t, exact = "", 0.0, False
        cur: str | None = hist[0].get("from") if hist else state
        if cur is not None:
            # The job was in its first `from` state (its state, without history) since it was
            # made: the system records moves, not the creation itself.
            created = md.get("creationTimestamp")
            c = fromiso(created).timestamp() if created else now
            if hist:
                c = min(c, fromiso(hist[0]["time"]).timestamp())
            sd[int(max(c, lo) // 60) * K + sidx[cur]] += 1
        pend_m, pend_from = -1, cur
        for ev in hist:
            ts = ev["time"]
            to = ev["to"]
            if ts != last_s:  # the steps of one write share their time
                last_s = ts
                # The minute from the text of a UTC time ("...T05:47:21.8Z"); the exact time
                # only where a run starts or ends or a job finishes (3 of a job's ~8 moves).
                if ts[-1] == "Z" and (to != "RUNNING" and cur != "RUNNING" and to != "JOB_FINISHED"):
                    mk = ts[:16]
                    m0 = minute_cache.get(mk)
                    if m0 is None:
                        m0 = minute_cache[mk] = int(fromiso(mk + "Z").timestamp() // 60)
                    t = m0 * 60.0
                    exact = False
                else:
                    t, exact = fromiso(ts).timestamp(), True
            elif not exact and (to == "RUNNING" or cur == "RUNNING" or to == "JOB_FINISHED"):
                t, exact = fromiso(ts).timestamp(), True
            m = int((t if t > lo else lo) // 60)
            if m != pend_m:
                if pend_m >= 0 and pend_from != cur:
                    if pend_from is not None:
                        sd[pend_m * K + sidx[pend_from]] -= 1
                    sd[pend_m * K + sidx[cur]] += 1  # type: ignore[index]
                pend_m, pend_from = m, cur
            if cur == "RUNNING" and run_start is not None:
                if t >= lo:
                    runtimes[app].append(t - run_start)
                    s = max(run_start, lo)
                    util.append((s, weight))
                    util.append((t, -weight))
                    add_area(area, s, t, weight)
                run_start = None
            if to == "RUNNING":
                run_start = t
            elif to == "JOB_FINISHED" and t >= lo:
                finished[int(t // 60)] += 1
            cur = to
        if pend_m >= 0 and pend_from != cur:
            if pend_from is not None:
                sd[pend_m * K + sidx[pend_from]] -= 1
            sd[pend_m * K + sidx[cur]] += 1  # type: ignore[index]
        if run_start is not None and state == "RUNNING":
            s = max(run_start, lo)
            util.append((s, weight))
            add_area(area, s, max(s, now), weight)
        if state in FAILING_STATES:
            lu = status.get("lastUpdate")
            if lu is None or _epoch(lu) >= lo:
                rc = status.get("returnCode")
                failures["none" if rc is None else str(rc)].append((md.get("name", ""), failure_reason(status)))
    state_delta: dict[int, Counter[str]] = defaultdict(Counter)
    for key, d in sd.items():
        if d:
            state_delta[key // K][snames[key % K]] += d
    # Jobs in each state at the end of each minute: running sums of the per-minute deltas.
    states: dict[int, dict[str, int]] = {}
    running: Counter[str] = Counter()
    for m in sorted(state_delta):
        running.update(state_delta[m])
        states[m] = {s: c for s, c in running.items() if c}
    if since is not None:
        first_m = minute_of(since)
        before = [m for m in states if m < first_m]
        if before:
            states[first_m] = states.get(first_m, states[max(before)])
            for m in before:
                del states[m]
    return Report(namespace, selector, since, now, n, dict(state_counts), dict(finished), dict(area),
                  step_series(util), states, dict(runtimes), dict(failures))
