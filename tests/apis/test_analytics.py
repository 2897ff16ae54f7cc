"""balsam.analytics and the report's figures against hand-computed values on a small recorded
history (four jobs, three minutes), read back from a real store (both backends)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

import store as st
from apis import App, BatchJob, Job, Registry
from apis.analytics import EventLogQuery, build_report, load_jobs, minute_of
from balsam.analytics import available_nodes, throughput_report, utilization_report
from balsam.api import EventLog

T0 = datetime(2026, 1, 2, 3, 0, 0, tzinfo=UTC)  # on a minute boundary
M0 = minute_of(T0.timestamp())


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def job(name: str, app: str, hist: list[tuple[float, str | None, str]], labels: dict[str, str],
        nodes: int = 1, packing: int = 1, **status: object) -> Job:
    return Job.model_validate({
        "metadata": {"name": name, "labels": labels},
        "spec": {"app": app, "workdir": f"w/{name}", "resources": {"numNodes": nodes, "nodePackingCount": packing}},
        "status": {"state": hist[-1][2], **status,
                   "history": [{"from": f, "to": t, "time": at(s).isoformat()} for s, f, t in hist]},
    })


RECORDED = [
    job("a", "sim", [(0, None, "CREATED"), (10, "CREATED", "PREPROCESSED"), (20, "PREPROCESSED", "RUNNING"),
                     (80, "RUNNING", "RUN_DONE"), (85, "RUN_DONE", "JOB_FINISHED")], {"experiment": "x"}, nodes=2),
    job("b", "sim", [(0, None, "CREATED"), (30, "CREATED", "PREPROCESSED"), (50, "PREPROCESSED", "RUNNING"),
                     (110, "RUNNING", "RUN_ERROR"), (110, "RUN_ERROR", "FAILED")], {"experiment": "x"},
        returnCode=3, message="exit 3: boom"),
    job("c", "ana", [(0, None, "CREATED"), (100, "CREATED", "PREPROCESSED"), (130, "PREPROCESSED", "RUNNING")],
        {"experiment": "y"}, packing=2),
    job("d", "ana", [(0, None, "CREATED"), (60, "CREATED", "PREPROCESSED"), (70, "PREPROCESSED", "RUNNING"),
                     (100, "RUNNING", "RUN_DONE"), (125, "RUN_DONE", "JOB_FINISHED")], {"experiment": "x"}),
]


@pytest.fixture(params=["sqlite", "etcd"])
def reg(request: pytest.FixtureRequest, tmp_path) -> Iterator[tuple[Registry, str]]:
    if request.param == "sqlite":
        store, ns = st.open_store(f"sqlite:///{tmp_path}/s.db"), "default"
    else:
        store, ns = st.open_store(request.getfixturevalue("etcd_url")), f"an-{uuid.uuid4().hex[:10]}"
    reg = Registry(store)
    reg.create_many([App(metadata={"name": a, "namespace": ns}, spec={"command": "true"}) for a in ("sim", "ana")])
    reg.create_many([j.model_copy(update={"metadata": j.metadata.model_copy(update={"namespace": ns})})
                     for j in RECORDED])
    reg.create_many([
        BatchJob.model_validate({"metadata": {"name": n, "namespace": ns}, "spec": {"numNodes": k},
                                 "status": {"startTime": at(s).isoformat(), **({"endTime": at(e).isoformat()} if e else {})}})
        for n, k, s, e in [("bj1", 2, 0, 100), ("bj2", 1, 50, 200), ("bj3", 4, 10, None)]
    ])
    try:
        yield reg, ns
    finally:
        store.close()


def test_throughput_report_is_balsams_shape(reg: tuple[Registry, str]) -> None:
    r, ns = reg
    events = EventLogQuery(r, ns)
    assert throughput_report(events) == ([at(85), at(125)], [1, 2])
    assert throughput_report(events, to_state="FAILED") == ([at(110)], [1])
    assert throughput_report(events.filter(tags={"experiment": "y"})) == ([], [])
    assert throughput_report(EventLog.objects.using(r, ns).filter(job_id="d")) == ([at(125)], [1])


def test_utilization_report_weights_nodes(reg: tuple[Registry, str]) -> None:
    r, ns = reg
    events = EventLogQuery(r, ns)
    times = [at(s) for s in (20, 50, 70, 80, 100, 110, 130)]
    assert utilization_report(events) == (times, [2, 3, 4, 2, 1, 0, 0.5])
    assert utilization_report(events, node_weighting=False) == (times, [1, 2, 3, 2, 1, 0, 1])
    assert utilization_report(events.filter(tags={"experiment": "x"})) == (times[:-1], [2, 3, 4, 2, 1, 0])
    after = events.filter(timestamp_after=at(75))
    assert [e.job_id for e in after.filter(to_state="RUNNING")] == ["c"]


def test_available_nodes_from_batch_jobs(reg: tuple[Registry, str]) -> None:
    r, ns = reg
    bjs = BatchJob.objects.using(r).all().in_namespace(ns)
    assert available_nodes(bjs) == ([at(0), at(50), at(100), at(200)], [2, 3, 1, 0])


def test_report_figures(reg: tuple[Registry, str]) -> None:
    r, ns = reg
    rep = build_report(load_jobs(r, ns), ns, now=at(150).timestamp())
    assert rep.jobs == 4
    assert rep.state_counts == {"JOB_FINISHED": 2, "FAILED": 1, "RUNNING": 1}
    assert rep.finished_per_minute == {M0 + 1: 1, M0 + 2: 1}
    assert rep.busy_node_seconds == pytest.approx({M0: 90.0, M0 + 1: 120.0, M0 + 2: 10.0})
    assert rep.runtimes == {"sim": [60.0, 60.0], "ana": [30.0]}
    assert rep.failures == {"3": [("b", "exit 3: boom")]}
    assert rep.states_over_time == {
        M0: {"CREATED": 2, "RUNNING": 2},
        M0 + 1: {"JOB_FINISHED": 1, "FAILED": 1, "PREPROCESSED": 1, "RUN_DONE": 1},
        M0 + 2: {"JOB_FINISHED": 2, "FAILED": 1, "RUNNING": 1},
    }
    doc = rep.to_json()
    assert doc["throughput"]["finished"] == [0, 1, 1]
    assert doc["utilization"]["avgNodesBusy"] == [1.5, 2.0, pytest.approx(10 / 60, abs=1e-6)]
    assert doc["runTimeSeconds"]["sim"]["p50"] == 60.0
    assert doc["failuresByExitCode"]["3"]["jobs"] == 1


def test_report_since_and_selector(reg: tuple[Registry, str]) -> None:
    r, ns = reg
    docs = load_jobs(r, ns, "experiment=x")
    assert sorted(d["metadata"]["name"] for d in docs) == ["a", "b", "d"]
    assert [d["metadata"]["name"] for d in load_jobs(r, ns, "experiment!=x")] == ["c"]
    rep = build_report(load_jobs(r, ns), ns, since=at(90).timestamp(), now=at(150).timestamp())
    assert rep.finished_per_minute == {M0 + 2: 1}
    assert rep.runtimes == {"sim": [60.0], "ana": [30.0]}  # runs that ended after `since`
    assert rep.busy_node_seconds == pytest.approx({M0 + 1: 30.0, M0 + 2: 10.0})
    assert set(rep.states_over_time) == {M0 + 1, M0 + 2}  # starts at `since`, with the totals then
    assert rep.states_over_time[M0 + 1] == {"JOB_FINISHED": 1, "FAILED": 1, "PREPROCESSED": 1, "RUN_DONE": 1}


def test_states_over_time_count_jobs_from_their_creation() -> None:
    """The system records moves, not creation: a job is in its first ``from`` state (or its
    state, with no history yet) from its creationTimestamp on."""
    docs = [
        {"metadata": {"name": "moved", "creationTimestamp": at(10).isoformat()}, "spec": {"app": "a"},
         "status": {"state": "READY", "history": [{"from": "CREATED", "to": "READY", "time": at(70).isoformat()}]}},
        {"metadata": {"name": "waiting", "creationTimestamp": at(30).isoformat()}, "spec": {"app": "a"}},
    ]
    rep = build_report(docs, now=at(90).timestamp())
    assert rep.states_over_time == {M0: {"CREATED": 2}, M0 + 1: {"CREATED": 1, "READY": 1}}
