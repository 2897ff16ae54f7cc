"""Campaign analytics from the jobs' stored history: what ``balsam.analytics``, ``balsamctl
report``, ``top`` and the dashboard show.

Every Job keeps ``status.history`` (``{from, to, time}``, capped at ``HISTORY_CAP``). These
functions read the stored JSON as plain dicts (``orjson.loads``), never as pydantic models:
decoding 10^5 Jobs through pydantic costs seconds, a dict only the fields used here. Times
are epoch seconds (floats) inside, timezone-aware datetimes where Balsam returned datetimes.

* :func:`load_jobs` — the raw stored Jobs of a namespace (optionally a label selector);
* :func:`job_facts` — what one job contributes (state, run intervals, finish time, failure);
* :func:`build_report` — throughput, utilization, states over time, run time per App,
  failures by exit code, in one pass;
* :class:`EventLogQuery` / :func:`throughput_report` / :func:`utilization_report` /
  :func:`available_nodes` — Balsam's ``balsam.analytics`` signatures and return shapes.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any

import orjson

from ._client import default_registry
from ._config import load_site_config
from ._errors import BadRequest, SiteNotFound
from ._kinds import BatchJob, Job, kind_for
from ._query import _tags_arg
from ._registry import Registry, index_prefix, kind_prefix, object_key
from ._selectors import Selector, parse_selector
from ._states import JobState

#: States a job is "failing" in: the dashboard's and report's failure lists.
FAILING_STATES = frozenset({"FAILED", "RUN_ERROR", "RUN_TIMEOUT"})
_PAGE = 5000


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def to_datetime(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


# --- reading ---------------------------------------------------------------------


def _raw_range(registry: Registry, prefix: str) -> Iterator[tuple[str, bytes]]:
    after: str | None = None
    while True:
        res = registry.store.range(prefix, limit=_PAGE, start_after=after)
        for kv in res.kvs:
            yield kv.key, kv.value
        if not res.more:
            return
        after = res.continue_key


def load_raw(registry: Registry, plural: str, namespace: str) -> list[dict[str, Any]]:
    """Every stored object of a kind (by its plural) in ``namespace``, as JSON dicts."""
    kind = kind_for(plural)
    return [orjson.loads(v) for _, v in _raw_range(registry, kind_prefix(kind, namespace))]


def iter_jobs(registry: Registry, namespace: str = "default",
              selector: str | Selector | None = None) -> Iterator[dict[str, Any]]:
    """The stored Jobs of ``namespace`` that match ``selector``, as JSON dicts, a page at a
    time. Equalities (``k=v``) are answered from the label index (only those objects are
    read); the rest of the selector is checked on the labels of what is read."""
    sel = selector if isinstance(selector, Selector) else parse_selector(selector)
    eq = sel.equalities()
    if not eq:
        docs: Iterable[dict[str, Any]] = (orjson.loads(v) for _, v in _raw_range(registry, kind_prefix(Job, namespace)))
    else:
        names: set[str] | None = None
        for k, v in eq.items():
            found = set(registry.index_names(Job, "label", f"{k}={v}", namespace))
            names = found if names is None else names & found
        keys = [object_key(Job, namespace, n) for n in sorted(names or ())]
        docs = (orjson.loads(kv.value) for i in range(0, len(keys), _PAGE)
                for kv in registry.store.get_many(keys[i:i + _PAGE]) if kv)
    for d in docs:
        if not sel or sel.matches(d.get("metadata", {}).get("labels") or {}):
            yield d


def load_jobs(registry: Registry, namespace: str = "default",
              selector: str | Selector | None = None) -> list[dict[str, Any]]:
    """:func:`iter_jobs`, as a list."""
    return list(iter_jobs(registry, namespace, selector))


def count_by_state(registry: Registry, namespace: str = "default") -> dict[str, int]:
    """Jobs per state from the state index alone (no object is read)."""
    store = registry.store
    return {s.value: store.count(index_prefix(Job, "state", namespace, s.value)) for s in JobState}


# --- one job ---------------------------------------------------------------------


@dataclass(slots=True)
class JobFacts:
    """What one stored Job contributes to the charts (times in epoch seconds)."""

    name: str
    app: str
    state: str
    nodes: float  # nodes' worth it occupies while running: numNodes / nodePackingCount
    last_update: float
    runs: list[tuple[float, float | None]] = field(default_factory=list)  # RUNNING intervals; None: still running
    finished: float | None = None  # when it reached JOB_FINISHED
    return_code: int | None = None
    reason: str = ""
    output_tail: str = ""


def job_facts(doc: dict[str, Any]) -> JobFacts:
    md, spec, status = doc.get("metadata", {}), doc.get("spec", {}), doc.get("status") or {}
    res = spec.get("resources") or {}
    nodes = res.get("numNodes", 1) / res.get("nodePackingCount", 1)
    hist = status.get("history") or []
    state = status.get("state", "CREATED")
    facts = JobFacts(name=md.get("name", ""), app=spec.get("app", ""), state=state, nodes=nodes, last_update=0.0)
    run_start: float | None = None
    t = 0.0
    for ev in hist:
        to, frm = ev.get("to"), ev.get("from")
        if to == "RUNNING" or frm == "RUNNING" or to == "JOB_FINISHED" or ev is hist[-1]:
            t = _epoch(ev["time"])
        else:
            continue
        if frm == "RUNNING" and run_start is not None:
            facts.runs.append((run_start, t))
            run_start = None
        if to == "RUNNING":
            run_start = t
        elif to == "JOB_FINISHED":
            facts.finished = t
    if run_start is not None:
        facts.runs.append((run_start, None if state == "RUNNING" else t))
    lu = status.get("lastUpdate")
    facts.last_update = _epoch(lu) if lu else t
    if state in FAILING_STATES or (state not in ("JOB_FINISHED",) and status.get("returnCode")):
        facts.return_code = status.get("returnCode")
        facts.reason = failure_reason(status)
        facts.output_tail = (status.get("outputTail") or "")[-2000:]
    return facts


def failure_reason(status: dict[str, Any]) -> str:
    """Why a job failed, in one line: its exception, else its message, else the last
    condition that is not True-and-reasonless, else the last history message."""
    if status.get("exception"):
        return str(status["exception"])
    if status.get("message"):
        return str(status["message"])
    for c in reversed(status.get("conditions") or []):
        if c.get("message") or c.get("reason"):
            return str(c.get("message") or c.get("reason"))
    for ev in reversed(status.get("history") or []):
        if ev.get("message"):
            return str(ev["message"])
    rc = status.get("returnCode")
    return f"exit code {rc}" if rc is not None else ""


# --- series helpers ----------------------------------------------------------------


def minute_of(t: float) -> int:
    return int(t // 60)


def add_area(area: dict[int, float], start: float, end: float, weight: float) -> None:
    """Spread ``weight`` × seconds of [start, end) over the minutes it covers."""
    m = minute_of(start)
    while start < end:
        edge = min(end, (m + 1) * 60.0)
        area[m] += weight * (edge - start)
        start, m = edge, m + 1


def step_series(deltas: Iterable[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """(times, running totals) of sorted ``(time, +/-delta)`` pairs: ready for ``plt.step``."""
    pairs = list(deltas)
    return step_series_of([t for t, _ in pairs], [d for _, d in pairs])


def step_series_of(times: list[float], deltas: list[float]) -> tuple[list[float], list[float]]:
    """:func:`step_series` of two parallel lists: the order of ``sorted((t, -d))`` (at a tie,
    starts (+) before ends: never below 0), by two stable sorts on float keys, which is
    several times faster than sorting 10^5 tuples."""
    if not times:
        return [], []
    neg = [-d for d in deltas]
    order = sorted(range(len(neg)), key=neg.__getitem__)
    order.sort(key=times.__getitem__)
    totals = accumulate([neg[i] for i in order])
    out_t = [times[i] for i in order]
    # Rounding to 9 decimals only hides float noise (1/3-node jobs). Sums of multiples of
    # 1/512 (whole nodes, packing 2, 4, 8, ...) are exact and have at most 9 decimals, so
    # round() would return them unchanged: skip its 10^5 calls.
    if all((d * 512).is_integer() and abs(d) < 2**20 for d in set(neg)):
        return out_t, [-v for v in totals]
    return out_t, [round(-v, 9) for v in totals]


def _percentile(sorted_values: Sequence[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    k = (len(sorted_values) - 1) * p
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


# --- the report --------------------------------------------------------------------


@dataclass
class Report:
    namespace: str
    selector: str
    since: float | None
    generated: float
    jobs: int
    state_counts: dict[str, int]
    finished_per_minute: dict[int, int]  # minute (epoch // 60) -> jobs that reached JOB_FINISHED
    busy_node_seconds: dict[int, float]  # minute -> node-seconds of running jobs in it
    utilization: tuple[list[float], list[float]]  # step series: times, nodes busy
    states_over_time: dict[int, dict[str, int]]  # minute -> jobs in each state at its end
    runtimes: dict[str, list[float]]  # app -> run seconds of each finished run
    failures: dict[str, list[tuple[str, str]]]  # exit code ("none" without one) -> [(job, reason)]

    def minutes(self) -> list[int]:
        keys = set(self.finished_per_minute) | set(self.busy_node_seconds) | set(self.states_over_time)
        if not keys:
            return []
        lo, hi = min(keys), max(keys)
        return list(range(lo, hi + 1))

    def runtime_stats(self) -> dict[str, dict[str, float]]:
        out = {}
        for app, vals in sorted(self.runtimes.items()):
            s = sorted(vals)
            out[app] = {"jobs": len(s), "min": s[0], "p50": _percentile(s, 0.5), "p90": _percentile(s, 0.9),
                        "max": s[-1], "mean": sum(s) / len(s)}
        return out

    def peak_per_minute(self, mins: Sequence[int]) -> list[float]:
        """The most nodes busy at any moment of each minute (from the step series)."""
        times, values = self.utilization
        out, i, cur = [], 0, 0.0
        for m in mins:
            j = bisect_left(times, (m + 1) * 60.0, i)  # the steps before the minute's end
            if j > i:
                out.append(max(cur, *values[i:j]))
                cur, i = values[j - 1], j
            else:
                out.append(cur)
        return out

    def to_json(self) -> dict[str, Any]:
        mins = self.minutes()
        iso = [to_datetime(m * 60).isoformat() for m in mins]
        states = sorted({s for row in self.states_over_time.values() for s, n in row.items() if n})
        last: dict[str, int] = {}
        by_state: dict[str, list[int]] = {s: [] for s in states}
        for m in mins:
            last = self.states_over_time.get(m, last)
            for s in states:
                by_state[s].append(last.get(s, 0))
        return {
            "namespace": self.namespace,
            "selector": self.selector,
            "since": to_datetime(self.since).isoformat() if self.since is not None else None,
            "generated": to_datetime(self.generated).isoformat(),
            "jobs": self.jobs,
            "stateCounts": {k: v for k, v in self.state_counts.items() if v},
            "throughput": {"minutes": iso, "finished": [self.finished_per_minute.get(m, 0) for m in mins]},
            "utilization": {
                "minutes": iso,
                "avgNodesBusy": [round(self.busy_node_seconds.get(m, 0.0) / 60.0, 6) for m in mins],
                "peakNodesBusy": self.peak_per_minute(mins),
            },
            "statesOverTime": {"minutes": iso, "counts": by_state},
            "runTimeSeconds": self.runtime_stats(),
            "failuresByExitCode": {
                code: {"jobs": len(items), "examples": [{"job": j, "reason": r} for j, r in items[:3]]}
                for code, items in sorted(self.failures.items(), key=lambda kv: -len(kv[1]))
            },
        }


def build_report(docs: Iterable[dict[str, Any]], namespace: str = "default", selector: str = "",
                 since: float | None = None, now: float | None = None) -> Report:
    """One pass over stored Jobs (dicts, as :func:`load_jobs` returns them).

    ``since`` keeps events at or after it (states over time still count jobs that entered a
    state earlier: the series starts at ``since`` with the right totals)."""
    # Decoding and walking 10^5 jobs allocates millions of containers and frees none: the
    # process's entry point sets collector thresholds for that (store/process.py); a library
    # call never turns the collector off for its caller's program.
    return _build_report(docs, namespace, selector, since, now)


def _build_report(docs: Iterable[dict[str, Any]], namespace: str, selector: str, since: float | None,
                  now: float | None) -> Report:
    now = now if now is not None else datetime.now(UTC).timestamp()
    state_counts: dict[str, int] = {}
    finished: Counter[int] = Counter()
    area: dict[int, float] = defaultdict(float)
    util_t: list[float] = []  # the utilization steps: times and +/- nodes
    util_d: list[float] = []
    runtimes: dict[str, list[float]] = defaultdict(list)
    failures: dict[str, list[tuple[str, str]]] = defaultdict(list)
    n = 0
    lo = since if since is not None else -math.inf
    # Minutes are floor(t / 60), which is monotonic: the minute of max(t, lo) is the larger of
    # the two minutes, so a move needs only its minute, read from the text of its time.
    lo_m: float = lo // 60 if since is not None else -math.inf
    now_m = int(now // 60)
    # Jobs entering (+1) and leaving (-1) each state, per minute, in one flat dict keyed by
    # minute * K + state number: several moves of one job within a minute collapse into one.
    sidx = {s.value: i for i, s in enumerate(JobState)}
    snames = list(sidx)
    K = len(snames)
    sd: dict[int, int] = defaultdict(int)
    fromiso = datetime.fromisoformat
    minute_cache: dict[str, int] = {}

    def minute_of_text(ts: str) -> int:
        # The minute from the text of a UTC time ("...T05:47:21.8Z"), one parse per minute;
        # any other form of time is parsed whole.
        if ts[-1] == "Z":
            m = minute_cache.get(ts[:16])
            if m is None:
                m = minute_cache[ts[:16]] = int(fromiso(ts[:16] + "Z").timestamp() // 60)
            return m
        return int(fromiso(ts).timestamp() // 60)

    for doc in docs:
        n += 1
        status = doc.get("status") or {}
        state = status.get("state", "CREATED")
        state_counts[state] = state_counts.get(state, 0) + 1
        hist = status.get("history") or ()
        # The first move's minute, computed here once: the loop below starts from it.
        last_s = hist[0]["time"] if hist else ""
        m = minute_of_text(last_s) if hist else 0
        cur: str | None = hist[0].get("from") if hist else state
        if cur is not None:
            # The job was in its first `from` state (its state, without history) since it was
            # made: the system records moves, not the creation itself.
            created = doc.get("metadata", {}).get("creationTimestamp")
            cm = minute_of_text(created) if created else now_m
            if hist and m < cm:
                cm = m
            sd[int(cm if cm > lo_m else lo_m) * K + sidx[cur]] += 1
        if m < lo_m:
            m = int(lo_m)
        run_start: float | None = None
        weight = 0.0
        app = ""
        exact: float | None = None
        pend_m, pend_from = -1, cur
        for ev in hist:
            ts = ev["time"]
            to = ev["to"]
            if ts != last_s:  # the steps of one write share their time
                last_s = ts
                if ts[-1] == "Z":  # minute_of_text(ts), inline: this runs for most moves
                    key = ts[:16]
                    m = minute_cache.get(key) or minute_of_text(ts)
                else:
                    m = minute_of_text(ts)
                if m < lo_m:
                    m = int(lo_m)
                exact = None
            if m != pend_m:
                if pend_m >= 0 and pend_from != cur:
                    if pend_from is not None:
                        sd[pend_m * K + sidx[pend_from]] -= 1
                    sd[pend_m * K + sidx[cur]] += 1  # type: ignore[index]
                pend_m, pend_from = m, cur
            # The exact time only where a run starts or ends or a job finishes (3 of ~8 moves).
            if to == "RUNNING" or cur == "RUNNING" or to == "JOB_FINISHED":
                t = exact = exact if exact is not None else fromiso(ts).timestamp()
                if cur == "RUNNING" and run_start is not None:
                    if t >= lo:
                        if not app:
                            spec = doc.get("spec", {})
                            res = spec.get("resources") or {}
                            weight = res.get("numNodes", 1) / res.get("nodePackingCount", 1)
                            app = spec.get("app", "")
                        runtimes[app].append(t - run_start)
                        s = run_start if run_start > lo else lo
                        util_t += (s, t)
                        util_d += (weight, -weight)
                        sm = int(s // 60)
                        while s < t:  # add_area(area, s, t, weight), inline: 10^5 calls
                            edge = (sm + 1) * 60.0
                            if edge > t:
                                edge = t
                            area[sm] += weight * (edge - s)
                            s, sm = edge, sm + 1
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
            res = doc.get("spec", {}).get("resources") or {}
            weight = res.get("numNodes", 1) / res.get("nodePackingCount", 1)
            s = max(run_start, lo)
            util_t.append(s)
            util_d.append(weight)
            add_area(area, s, max(s, now), weight)
        if state in FAILING_STATES:
            lu = status.get("lastUpdate")
            if lu is None or since is None or _epoch(lu) >= lo:
                rc = status.get("returnCode")
                name = doc.get("metadata", {}).get("name", "")
                failures["none" if rc is None else str(rc)].append((name, failure_reason(status)))
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
                  step_series_of(util_t, util_d), states, dict(runtimes), dict(failures))


# --- Balsam's balsam.analytics ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One state change of one job (Balsam's ``EventLog``)."""

    job_id: str
    from_state: str | None
    to_state: str
    timestamp: datetime
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)


class EventLogQuery:
    """Balsam's ``EventLog.objects.filter(...)``: the state changes in the jobs' stored
    history. Filters: ``job_id``, ``tags`` (dict or ``"k:v"`` strings), ``selector``,
    ``from_state``, ``to_state``, ``timestamp_after``, ``timestamp_before``; ``order_by``
    ``"timestamp"`` / ``"-timestamp"``. Nothing is read until it is iterated."""

    def __init__(self, registry: Registry | None = None, namespace: str | None = None,
                 filters: dict[str, Any] | None = None, order: str | None = None) -> None:
        self._registry = registry
        self.namespace = namespace
        self.filters = dict(filters or {})
        self.order = order

    def filter(self, **kw: Any) -> EventLogQuery:
        return EventLogQuery(self._registry, self.namespace, {**self.filters, **kw}, self.order)

    def all(self) -> EventLogQuery:
        return self.filter()

    def using(self, registry: Registry, namespace: str = "default") -> EventLogQuery:
        return EventLogQuery(registry, namespace, self.filters, self.order)

    def order_by(self, field_name: str | None) -> EventLogQuery:
        name = str(field_name or "").lstrip("-")
        if field_name is not None and name != "timestamp":
            raise BadRequest(f"cannot order events by {field_name!r} (only timestamp)")
        return EventLogQuery(self._registry, self.namespace, self.filters, field_name)

    def _target(self) -> tuple[Registry, str]:
        if self._registry is not None:
            return self._registry, self.namespace or "default"
        ns = self.namespace
        if ns is None:
            try:
                ns = load_site_config(None).namespace
            except SiteNotFound:
                ns = "default"
        return default_registry(), ns

    def _selector(self) -> Selector:
        parts = [str(parse_selector(self.filters.get("selector")))] if self.filters.get("selector") else []
        tags = self.filters.get("tags")
        if tags:
            parts += [f"{k}={v}" for k, v in _tags_arg(tags).items()]
        return parse_selector(",".join(p for p in parts if p))

    def _docs(self) -> list[dict[str, Any]]:
        registry, ns = self._target()
        job_id = self.filters.get("job_id")
        if job_id is None:
            return load_jobs(registry, ns, self._selector())
        ids = [job_id] if isinstance(job_id, str) else [str(j) for j in job_id]
        kvs = registry.store.get_many([object_key(Job, ns, i) for i in ids])
        sel = self._selector()
        docs = [orjson.loads(kv.value) for kv in kvs if kv]
        return [d for d in docs if sel.matches(d.get("metadata", {}).get("labels") or {})]

    def __iter__(self) -> Iterator[LogEvent]:
        f = self.filters
        frm, to = f.get("from_state"), f.get("to_state")
        after = _as_epoch(f.get("timestamp_after"))
        before = _as_epoch(f.get("timestamp_before"))
        out: list[tuple[float, LogEvent]] = []
        for doc in self._docs():
            name = doc.get("metadata", {}).get("name", "")
            res = (doc.get("spec") or {}).get("resources") or {}
            data = {"num_nodes": res.get("numNodes", 1) / res.get("nodePackingCount", 1)}
            for ev in (doc.get("status") or {}).get("history") or []:
                if (frm is not None and ev.get("from") != frm) or (to is not None and ev.get("to") != to):
                    continue
                t = _epoch(ev["time"])
                if (after is not None and t < after) or (before is not None and t > before):
                    continue
                out.append((t, LogEvent(name, ev.get("from"), ev["to"], to_datetime(t), ev.get("message", ""),
                                        data)))
        if self.order is not None:
            out.sort(key=lambda p: p[0], reverse=self.order.startswith("-"))
        return (e for _, e in out)

    def count(self) -> int:
        return sum(1 for _ in self)


def _as_epoch(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, datetime):
        return (v if v.tzinfo else v.replace(tzinfo=UTC)).timestamp()
    d = datetime.fromisoformat(str(v))
    return (d if d.tzinfo else d.replace(tzinfo=UTC)).timestamp()


def _events(log_query: EventLogQuery | Iterable[LogEvent] | None, **filters: Any) -> Iterable[LogEvent]:
    if log_query is None:
        return EventLogQuery().filter(**filters)
    if isinstance(log_query, EventLogQuery):
        return log_query.filter(**filters)
    return [e for e in log_query if all(getattr(e, k) == v for k, v in filters.items())]


def throughput_report(log_query: EventLogQuery | Iterable[LogEvent] | None = None,
                      to_state: str = "JOB_FINISHED") -> tuple[list[datetime], list[int]]:
    """Balsam's: the times jobs reached ``to_state``, in order, and the running count
    (1, 2, 3, ...): ``plt.step(times, counts, where="post")``."""
    times = sorted(e.timestamp for e in _events(log_query, to_state=to_state))
    return times, list(range(1, len(times) + 1))


def utilization_report(log_query: EventLogQuery | Iterable[LogEvent] | None = None,
                       node_weighting: bool = True) -> tuple[list[datetime], list[float]]:
    """Balsam's: (times, nodes busy) at each RUNNING start (+) and end (−); with
    ``node_weighting`` each job counts its nodes (``numNodes / nodePackingCount``), else 1."""
    evs = list(_events(log_query))
    weight: dict[str, float] = {}
    deltas: list[tuple[datetime, float]] = []
    for e in sorted(evs, key=lambda e: e.timestamp):
        if e.to_state == "RUNNING":
            w = float(e.data.get("num_nodes", 1)) if node_weighting else 1.0
            weight[e.job_id] = w
            deltas.append((e.timestamp, w))
        elif e.from_state == "RUNNING":
            deltas.append((e.timestamp, -weight.pop(e.job_id, 1.0 if not node_weighting else
                                                    float(e.data.get("num_nodes", 1)))))
    if not deltas:
        return [], []
    deltas.sort(key=lambda p: p[0])
    return [t for t, _ in deltas], [round(v, 9) for v in accumulate(d for _, d in deltas)]


def available_nodes(batch_job_query: Iterable[Any] | None = None) -> tuple[list[datetime], list[int]]:
    """Balsam's: (times, nodes) of allocations that started and ended (``start_time`` /
    ``end_time`` of each BatchJob); an allocation without both is skipped."""
    if batch_job_query is None:
        batch_job_query = BatchJob.objects.all()  # type: ignore[attr-defined]
    running: list[tuple[datetime, int]] = []
    for bj in batch_job_query:
        start, end = bj.status.start_time, bj.status.end_time
        if start is None or end is None:
            continue
        running.append((start, bj.spec.num_nodes))
        running.append((end, -bj.spec.num_nodes))
    if not running:
        return [], []
    running.sort(key=lambda p: (p[0], p[1]))
    return [t for t, _ in running], list(accumulate(n for _, n in running))
