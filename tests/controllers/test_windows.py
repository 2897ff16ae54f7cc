"""Claim windows end to end (issue 19, eighth round; apis/_windows.py, controllers/placement/
windows.py, nodeagent/_claims.py): a real store (both backends), the real controller manager,
real node agents running real processes."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import store as st
from apis import App, Conflict, Job, JobState, Node, Registry
from apis._config import SiteConfig
from apis._windows import Window, window_key
from controllers._manager import ControllerManager, default_reconcilers
from controllers.hooks import NoHooks
from kubectl_like.reasons import Surroundings, current_conditions
from nodeagent import NodeAgent
from tests._deadline import DEADLINE
from tests._support import make_site_config, poll_until, registry_on, skip_or_fail

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("etcd", id="etcd", marks=pytest.mark.etcd),
]


@pytest.fixture(params=BACKENDS)
def site(request: pytest.FixtureRequest, tmp_path: Path) -> SiteConfig:
    if request.param == "sqlite":
        cfg = make_site_config(tmp_path, save=False)
    else:
        url = str(request.getfixturevalue("etcd_url"))
        try:
            import store._etcd  # noqa: F401
        except ModuleNotFoundError as e:  # pragma: no cover
            skip_or_fail(f"the etcd backend is not importable: {e}")
        cfg = make_site_config(tmp_path, save=False, store_url=url, namespace=f"w{uuid.uuid4().hex[:10]}")
    cfg.extra["agents_acquire"] = True  # claims are off by default: these tests are about them
    return cfg


@pytest.fixture
def reg(site: SiteConfig) -> Iterator[Registry]:
    with registry_on(site.store_url) as r:
        yield r


@contextmanager
def _manager(reg: Registry, ns: str) -> Iterator[ControllerManager]:
    """The controller manager of namespace ``ns`` with every default reconciler, leading."""
    mgr = ControllerManager(reg, namespace=ns, lease_ttl=2, reconcilers=default_reconcilers(NoHooks()))
    stop = threading.Event()
    t = threading.Thread(target=mgr.run, args=(stop,), daemon=True)
    t.start()
    try:
        assert mgr.leading.wait(DEADLINE)
        yield mgr
    finally:
        stop.set()
        t.join(DEADLINE)


class Agents:
    def __init__(self, reg: Registry, site: SiteConfig) -> None:
        self.reg, self.site = reg, site
        self.started: list[NodeAgent] = []

    def start(self, name: str, cpus: int = 2, **kw: Any) -> NodeAgent:
        kw.setdefault("lease_ttl", 3)
        kw.setdefault("kill_grace", 1.0)
        a = NodeAgent(self.reg, name=name, cpus=cpus, site_config=self.site, log_to_file=False, **kw).start()
        self.started.append(a)
        return a

    def close(self) -> None:
        for a in self.started:
            a.stop(timeout=DEADLINE)
            a.wait(DEADLINE)


@pytest.fixture
def agents(reg: Registry, site: SiteConfig) -> Iterator[Agents]:
    a = Agents(reg, site)
    yield a
    a.close()


def _app(reg: Registry, ns: str, name: str, command: str) -> None:
    reg.create(App(metadata={"name": name, "namespace": ns}, spec={"command": command}))  # type: ignore[arg-type]


def _jobs(reg: Registry, ns: str, app: str, names: list[str], **spec: Any) -> list[Job]:
    return list(reg.create_many([Job(metadata={"name": n, "namespace": ns},  # type: ignore[arg-type]
                                     spec={"app": app, "workdir": f"w/{n}", **spec}) for n in names]))


def _window(reg: Registry, ns: str, node: str) -> Window:
    kv = reg.store.get(window_key(ns, node))
    return Window.decode(kv.value if kv is not None else None)


def _all_finished(reg: Registry, ns: str, names: list[str]) -> list[Job] | None:
    jobs = reg.get_many(Job, names, ns)
    if all(j is not None and j.status.state is JobState.JOB_FINISHED for j in jobs):
        return jobs  # type: ignore[return-value]
    return None


def _interval(job: Job) -> tuple[datetime, datetime]:
    h = job.status.history
    start = next(e.time for e in h if e.to_state is JobState.RUNNING)
    end = next(e.time for e in h if e.to_state in (JobState.RUN_DONE, JobState.RUN_ERROR, JobState.RUN_TIMEOUT))
    return start, end


def test_two_agents_racing_for_the_same_jobs_never_run_one_twice(reg: Registry, site: SiteConfig,
                                                                 agents: Agents) -> None:
    ns = site.namespace
    _app(reg, ns, "t", "/bin/true")
    with _manager(reg, ns):
        a, b = agents.start("n1", cpus=3), agents.start("n2", cpus=3)
        poll_until(lambda: _window(reg, ns, "n1").open and _window(reg, ns, "n2").open, what="windows open")
        names = [f"j{i}" for i in range(60)]
        _jobs(reg, ns, "t", names, resources={"nodePackingCount": 3})
        jobs = poll_until(lambda: _all_finished(reg, ns, names), what="every job finished")
    for j in jobs:
        runs = [e for e in j.status.history if e.to_state is JobState.RUNNING]
        assert len(runs) == 1 and j.status.attempts == 1, (j.name, j.status.history)
    # every job was claimed by an agent (placement bound none of them), each exactly once
    assert a.stats["claims"] + b.stats["claims"] == len(names)
    assert a.stats["launched"] + b.stats["launched"] == len(names)


def test_a_claimed_jobs_history_shows_the_collapsed_steps_by_its_node(reg: Registry, site: SiteConfig,
                                                                    agents: Agents) -> None:
    ns = site.namespace
    _app(reg, ns, "t", "/bin/true")
    with _manager(reg, ns):
        agents.start("n1")
        poll_until(lambda: _window(reg, ns, "n1").open, what="window open")
        _jobs(reg, ns, "t", ["one"])
        (job,) = poll_until(lambda: _all_finished(reg, ns, ["one"]), what="the job finished")
    steps = [(e.from_state, e.to_state, e.by, e.message) for e in job.status.history][:3]
    assert steps == [(JobState.CREATED, JobState.READY, "n1", "no parents"),
                     (JobState.READY, JobState.STAGED_IN, "n1", "no stage-in transfers"),
                     (JobState.STAGED_IN, JobState.PREPROCESSED, "n1", "no preprocess hook")]
    assert job.status.placement is not None and job.status.placement.nodes == ["n1"]


def test_a_window_closed_for_a_two_node_job_places_it_after_the_ack_with_no_slot_double_booked(
        reg: Registry, site: SiteConfig, agents: Agents) -> None:
    ns = site.namespace
    _app(reg, ns, "nap", "sleep 0.3")
    with _manager(reg, ns):
        a, b = agents.start("n1", launcher="none"), agents.start("n2", launcher="none")
        poll_until(lambda: _window(reg, ns, "n1").open and _window(reg, ns, "n2").open, what="windows open")
        before = [f"s{i}" for i in range(8)]
        _jobs(reg, ns, "nap", before, resources={"nodePackingCount": 2})
        poll_until(lambda: a.stats["claims"] + b.stats["claims"] >= 2, what="the agents claimed some jobs")
        _jobs(reg, ns, "nap", ["wide"], resources={"numNodes": 2})
        after = [f"t{i}" for i in range(6)]
        _jobs(reg, ns, "nap", after, resources={"nodePackingCount": 2})
        done = poll_until(lambda: _all_finished(reg, ns, [*before, "wide", *after]), what="every job finished")
        # the windows open again once the wide job is placed
        poll_until(lambda: _window(reg, ns, "n1").open and _window(reg, ns, "n2").open, what="windows open again")
    by_name = {j.name: j for j in done}
    wide = by_name.pop("wide")
    assert wide.status.placement is not None and sorted(wide.status.placement.nodes) == ["n1", "n2"]
    assert [e.by for e in wide.status.history][:3] == ["placement"] * 3  # placed by the engine
    w0, w1 = _interval(wide)
    for j in by_name.values():
        s0, s1 = _interval(j)
        assert s1 <= w0 or s0 >= w1, f"{j.name} ran on {j.status.placement} during the two-node job"
    # both nodes acknowledged the close (and the windows were opened again after it)
    for n in ("n1", "n2"):
        node = reg.get(Node, n, ns)
        assert node.status.window_ack >= 2


def test_an_agent_that_dies_after_claiming_loses_its_jobs_through_the_lost_node_path(
        reg: Registry, site: SiteConfig, agents: Agents) -> None:
    ns = site.namespace
    _app(reg, ns, "t", "/bin/true")
    with _manager(reg, ns):
        dying = agents.start("n1", cpus=2)
        dying._launch_some = lambda: None  # type: ignore[method-assign]  # claims, never launches
        poll_until(lambda: _window(reg, ns, "n1").open, what="window open")
        names = ["c0", "c1", "c2"]
        _jobs(reg, ns, "t", names, resources={"nodePackingCount": 2})
        poll_until(lambda: dying.stats["claims"] == 2, what="two jobs claimed by n1")
        claimed = [j for j in reg.get_many(Job, names, ns)
                   if j is not None and j.status.placement is not None and j.status.placement.nodes == ["n1"]]
        assert len(claimed) == 2 and all(j.status.state is JobState.PREPROCESSED for j in claimed)
        dying.stop(timeout=DEADLINE)  # its lease goes, and its Node with it
        assert dying.wait(DEADLINE)
        agents.start("n2", cpus=2)
        jobs = poll_until(lambda: _all_finished(reg, ns, names), what="every job finished on n2")
    for j in jobs:
        assert j.status.placement is not None and j.status.placement.nodes == ["n2"]
        assert sum(1 for e in j.status.history if e.to_state is JobState.RUNNING) == 1


def test_describe_of_a_job_waiting_in_a_window_says_why_without_a_write(reg: Registry, site: SiteConfig,
                                                                      agents: Agents) -> None:
    ns = site.namespace
    _app(reg, ns, "nap", "sleep 30")
    with _manager(reg, ns):
        a = agents.start("n1", cpus=1)
        poll_until(lambda: _window(reg, ns, "n1").open, what="window open")
        _jobs(reg, ns, "nap", ["first", "second", "third"])
        poll_until(lambda: a.stats["claims"] == 1, what="the first job claimed")
        third = reg.get(Job, "third", ns)
        conds = poll_until(lambda: [c for c in current_conditions(reg.get(Job, "third", ns), Surroundings(reg, ns))
                                    if c.reason == "InClaimWindow"], what="the job's reason")
        assert conds[0].message == "waiting for a free slot; 1 node takes jobs themselves; 1 job ahead"
        # nothing was written for it while it waits
        assert reg.get(Job, "third", ns).metadata.resource_version == third.metadata.resource_version
        assert third.status.conditions == []


def test_a_claim_never_lands_after_its_window_is_closed(reg: Registry, site: SiteConfig) -> None:
    """The fence of every claim: the window key's revision it was opened at."""
    ns = site.namespace
    _app(reg, ns, "t", "/bin/true")
    (job,) = _jobs(reg, ns, "t", ["late"])
    key = window_key(ns, "n9")
    opened = reg.store.txn([], [st.Put(key, Window(1, True).encode())]).revision
    reg.store.txn([], [st.Put(key, Window(2, False).encode())])  # placement closes it
    with pytest.raises(Conflict):
        reg.write_status_patches([(job, {"message": "claimed"})], compares=[st.Compare(key, "mod", "==", opened)])
    assert reg.get(Job, "late", ns).status.message == ""


def test_agents_that_do_not_acquire_get_no_window_and_placement_binds_as_before(reg: Registry, site: SiteConfig,
                                                                              agents: Agents) -> None:
    ns = site.namespace
    _app(reg, ns, "t", "/bin/true")
    with _manager(reg, ns):
        a = agents.start("n1", acquire=False)
        _jobs(reg, ns, "t", ["p0", "p1"])
        jobs = poll_until(lambda: _all_finished(reg, ns, ["p0", "p1"]), what="both finished")
    assert a.stats["claims"] == 0 and not _window(reg, ns, "n1").open
    assert all(j.status.history[0].by == "placement" for j in jobs)


def test_the_sites_agents_acquire_setting_turns_claims_off_for_its_agents(reg: Registry, site: SiteConfig) -> None:
    site.extra["agents_acquire"] = False
    a = NodeAgent(reg, name="n1", cpus=2, site_config=site, log_to_file=False)
    assert not a.acquire and not a.reporter.spec.acquires and not a.claims.enabled
    del site.extra["agents_acquire"]  # off by default
    assert not NodeAgent(reg, name="n3", cpus=2, site_config=site, log_to_file=False).acquire
    site.extra["agents_acquire"] = True
    b = NodeAgent(reg, name="n2", cpus=2, site_config=site, log_to_file=False, acquire=False)
    assert not b.acquire  # the agent's own switch wins


def test_a_job_no_node_could_hold_gets_its_never_fits_words_and_the_windows_stay_open(
        reg: Registry, site: SiteConfig, agents: Agents) -> None:
    ns = site.namespace
    _app(reg, ns, "t", "/bin/true")
    with _manager(reg, ns):
        agents.start("n1", cpus=2)
        poll_until(lambda: _window(reg, ns, "n1").open, what="window open")
        _jobs(reg, ns, "t", ["huge"], resources={"ranksPerNode": 100})

        def never_fits() -> Any:
            j = reg.get(Job, "huge", ns)
            return [c for c in j.status.conditions if c.type == "Unschedulable" and c.reason == "NeverFits"]

        (cond,) = poll_until(never_fits, what="the NeverFits condition")
        assert cond.message == "needs 100 CPUs per node; largest node has 2"
        _jobs(reg, ns, "t", ["small"])
        (small,) = poll_until(lambda: _all_finished(reg, ns, ["small"]), what="a job that fits still runs")
    assert small.status.history[0].by == "n1" and _window(reg, ns, "n1").open


def test_agents_take_the_highest_priority_first(reg: Registry, site: SiteConfig,
                                                                agents: Agents) -> None:
    ns = site.namespace
    _app(reg, ns, "nap", "sleep 0.2")
    _jobs(reg, ns, "nap", ["low0", "low1"])
    _jobs(reg, ns, "nap", ["high0", "high1"], priority=5)
    # The agent first, its Node advertising that it acquires: a manager that saw the jobs
    # before any node would otherwise bind the first one itself (windows open only on nodes
    # whose agents acquire).
    agents.start("n1", cpus=1)  # one job at a time: the order is the claims' order
    poll_until(lambda: any(n.name == "n1" and n.spec.acquires for n in reg.list(Node, ns)[0]),
               what="n1 registered, acquiring")
    with _manager(reg, ns):
        done = poll_until(lambda: _all_finished(reg, ns, ["low0", "low1", "high0", "high1"]), what="all finished")
    order = [j.name for j in sorted(done, key=lambda j: _interval(j)[0])]
    # (within one priority an agent takes a random half of the 2 x free-slots oldest: racing
    # agents then collide on few jobs; so the order within a priority is only roughly by age)
    assert set(order[:2]) == {"high0", "high1"} and set(order[2:]) == {"low0", "low1"}
    assert all(j.status.history[0].by == "n1" for j in done)


def test_a_dag_child_is_claimed_by_the_agent_that_writes_its_parents_end(reg: Registry, site: SiteConfig,
                                                                         agents: Agents) -> None:
    ns = site.namespace
    _app(reg, ns, "t", "/bin/true")
    with _manager(reg, ns):
        a = agents.start("n1")
        poll_until(lambda: _window(reg, ns, "n1").open, what="window open")
        # one transaction: the child exists before the parent can end
        reg.create_many([Job(metadata={"name": n, "namespace": ns},  # type: ignore[arg-type]
                             spec={"app": "t", "workdir": f"w/{n}", "parents": p})  # type: ignore[arg-type]
                         for n, p in (("parent", []), ("child", ["parent"]))])
        parent, child = poll_until(lambda: _all_finished(reg, ns, ["parent", "child"]), what="both finished")
    # the child's release is the agent's, taken with the parent's end (no placement write):
    # every step up to PREPROCESSED says n1, and the child ran once, after its parent's end
    released = [e for e in child.status.history if e.to_state in
                (JobState.AWAITING_PARENTS, JobState.READY, JobState.STAGED_IN, JobState.PREPROCESSED)]
    assert [e.by for e in released if e.to_state is not JobState.AWAITING_PARENTS] == ["n1"] * 3, released
    assert a.stats["follow_claims"] == 1
    assert _interval(child)[0] >= _interval(parent)[1]
    assert child.status.attempts == 1


def test_a_child_with_a_parent_still_running_is_not_claimed_with_the_other_parents_end(
        reg: Registry, site: SiteConfig, agents: Agents) -> None:
    ns = site.namespace
    _app(reg, ns, "t", "/bin/true")
    _app(reg, ns, "nap", "sleep 1")
    with _manager(reg, ns):
        a = agents.start("n1", cpus=4)
        poll_until(lambda: _window(reg, ns, "n1").open, what="window open")
        _jobs(reg, ns, "nap", ["slow"])
        _jobs(reg, ns, "t", ["fast"])
        _jobs(reg, ns, "t", ["sink"], parents=["fast", "slow"])
        fast, slow, sink = poll_until(lambda: _all_finished(reg, ns, ["fast", "slow", "sink"]), what="all finished")
    # whichever end claimed it (or placement released it), the sink started after both ends
    start = _interval(sink)[0]
    assert start >= _interval(fast)[1] and start >= _interval(slow)[1]
    assert sink.status.attempts == 1
    assert a.stats["launched"] == 3


def test_a_childs_claim_refused_with_its_parents_end_leaves_the_end_written_and_the_child_run_once(
        reg: Registry, site: SiteConfig, agents: Agents) -> None:
    ns = site.namespace
    _app(reg, ns, "t", "/bin/true")
    _app(reg, ns, "nap", "sleep 1")
    with _manager(reg, ns):
        a = agents.start("n1", cpus=4)
        follow = a.writer.follow
        assert follow is not None
        touched: list[str] = []

        def follow_then_move_the_other_parent(ends: list[tuple[Job, dict[str, Any]]]) -> Any:
            rider = follow(ends)
            if rider is not None and not touched:
                # the other parent changes after it was read: the claim's compare must fail
                old = reg.get(Job, "done", ns)
                new = old.model_copy(deep=True)
                new.metadata.labels = {"touched": "yes"}
                reg.update(old, new)
                touched.append("done")
            return rider

        a.writer.follow = follow_then_move_the_other_parent
        poll_until(lambda: _window(reg, ns, "n1").open, what="window open")
        _jobs(reg, ns, "nap", ["last"])
        _jobs(reg, ns, "t", ["done"])
        _jobs(reg, ns, "t", ["sink"], parents=["done", "last"])
        done, last, sink = poll_until(lambda: _all_finished(reg, ns, ["done", "last", "sink"]), what="all finished")
    assert touched == ["done"]  # the claim was tried with last's end, and refused
    assert a.stats["follow_claims"] == 0 and a.stats["claim_conflicts"] >= 1
    assert _interval(sink)[0] >= _interval(last)[1] and sink.status.attempts == 1
    assert last.status.attempts == 1 and done.metadata.labels == {"touched": "yes"}
