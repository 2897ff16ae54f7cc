"""What the reader adds and shows: describe, get -o wide and -o yaml say why a job waits —
including what nobody alive could write (no controller manager, no node agent) — and the
same words in each; dependency cycles refused at apply; Events in get events and describe."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from apis import Job, JobState, Node, Registry, set_condition, transition
from controllers._events import EventRecorder, PendingEvent
from controllers._leader import LeaderElector

from .conftest import Site, hello_app, job_doc, write_yaml


def apply(site: Site, *docs: dict[str, object]) -> None:
    write_yaml(site.path / "m.yaml", [hello_app(), *docs])
    r = site.run("apply", "-f", str(site.path / "m.yaml"))
    assert r.exit_code == 0, r.stderr


def edit_job(reg: Registry, name: str, fn) -> Job:
    def edit(j: Job) -> None:
        fn(j)

    return reg.mutate(Job, name, edit)


@contextmanager
def manager_alive(site: Site) -> Iterator[None]:
    """The namespace's leader lease held, as a running controller manager holds it."""
    elector = LeaderElector(site.registry().store, site.namespace, "test-manager", ttl=60)
    assert elector.try_acquire()
    try:
        yield
    finally:
        elector.step_down()


def conditions_section(text: str) -> str:
    return text.split("Conditions:", 1)[1].split("Events:", 1)[0]


def test_no_controller_manager_is_seen_from_the_lease(site: Site) -> None:
    apply(site, job_doc("j", parameters={"name": "x"}))
    r = site.run("describe", "job", "j")
    assert r.exit_code == 0, r.stderr
    conds = conditions_section(r.stdout)
    assert "NoControllerManager" in conds and "no controller manager is running for namespace" in conds
    wide = site.run("get", "jobs", "-o", "wide").stdout
    assert "NoControllerManager" in wide.splitlines()[1]
    assert "reason: NoControllerManager" in site.run("get", "job", "j", "-o", "yaml").stdout
    with manager_alive(site):  # a manager holds the lease: the reason goes away
        assert "NoControllerManager" not in site.run("describe", "job", "j").stdout


def test_no_node_agent_capacity_and_suspended(site: Site) -> None:
    with manager_alive(site):
        no_node_agent_capacity_and_suspended(site)


def no_node_agent_capacity_and_suspended(site: Site) -> None:
    apply(site, job_doc("j", parameters={"name": "x"}), job_doc("s", parameters={"name": "y"}, suspend=True))
    reg = site.registry()
    for name in ("j", "s"):
        edit_job(reg, name, lambda j: setattr(j.status, "state", JobState.PREPROCESSED))
    out = site.run("describe", "job", "j").stdout
    assert "NoNodeAgent" in conditions_section(out) and "no node agent is running" in out
    assert "NoNodeAgent" in site.run("get", "job", "j", "-o", "wide").stdout
    # A node whose CPUs are mostly busy, and placement's stored reason: the free slot is added.
    node = Node(metadata={"name": "n1"}, spec={"hostname": "n1", "cpus": 4},
                status={"busyCpus": [0, 1]})
    reg.create(node)
    edit_job(reg, "j", lambda j: set_condition(j.status.conditions, "Waiting", "True", "WaitingForCapacity",
                                               "needs 4 idle CPUs on one node; every node that could hold it is busy"))
    out = conditions_section(site.run("describe", "job", "j").stdout)
    assert "WaitingForCapacity" in out and "NoNodeAgent" not in out
    assert "needs 4 idle CPUs on one node" in out and "the largest free slot is 2 idle CPUs on n1" in out
    s = conditions_section(site.run("describe", "job", "s").stdout)
    assert "Suspended" in s and "spec.suspend is true" in s


def test_waiting_for_parents_shows_their_states(site: Site) -> None:
    apply(site, job_doc("p", parameters={"name": "x"}), job_doc("q", parameters={"name": "y"}),
          job_doc("c", parameters={"name": "z"}, parents=["p", "q"]))
    reg = site.registry()
    edit_job(reg, "p", lambda j: setattr(j.status, "state", JobState.PREPROCESSED))
    edit_job(reg, "c", lambda j: (setattr(j.status, "state", JobState.AWAITING_PARENTS),
                                  set_condition(j.status.conditions, "Waiting", "True", "WaitingForParents",
                                                "waiting for its 2 parent job(s) to finish: p, q")))
    out = conditions_section(site.run("describe", "job", "c").stdout)
    assert "waiting for 2 of its 2 parent job(s) to finish: p (PREPROCESSED), q (CREATED)" in out


def test_a_cycle_in_one_apply_is_refused_and_nothing_is_written(site: Site) -> None:
    write_yaml(site.path / "c.yaml", [hello_app(), job_doc("a", parents=["b"]), job_doc("b", parents=["a"])])
    line = site.run("apply", "-f", str(site.path / "c.yaml")).one_error()
    assert "dependency cycle: a → b → a" in line
    write_yaml(site.path / "s.yaml", [hello_app(), job_doc("self", parents=["self"])])
    assert "dependency cycle: self → self" in site.run("apply", "-f", str(site.path / "s.yaml")).one_error()
    assert site.registry().list(Job, site.namespace)[0] == []


def test_a_cycle_in_one_bulk_create_is_refused(site: Site) -> None:
    apply(site)
    reg = site.registry()
    jobs = [Job(metadata={"name": n, "namespace": site.namespace},
                spec={"app": "hello", "workdir": n, "parents": ps, "parameters": {"name": n}})
            for n, ps in (("x", []), ("y", ["x", "z"]), ("z", ["y"]))]
    try:
        reg.create_many(jobs)
    except Exception as e:  # noqa: BLE001
        assert "dependency cycle" in str(e) and "y → z → y" in str(e)
    else:
        raise AssertionError("a cycle was accepted")
    assert reg.list(Job, site.namespace)[0] == []


def test_get_events_and_describe_list_them_with_the_component(site: Site) -> None:
    apply(site, job_doc("j", parameters={"name": "x"}), job_doc("k", parameters={"name": "y"}))
    reg = site.registry()
    j, k = reg.get(Job, "j", site.namespace), reg.get(Job, "k", site.namespace)
    rec = EventRecorder(reg, "placement", ttl=600)
    rec.record([PendingEvent(j, "Warning", "NeverFits", "needs 64 CPUs per node; largest node has 4")])
    rec.record([PendingEvent(j, "Warning", "NeverFits", "needs 64 CPUs per node; largest node has 4")])
    EventRecorder(reg, "dependency", ttl=600).record([PendingEvent(k, "Warning", "ParentFailed", "parent p failed")])
    out = site.run("get", "events").stdout.splitlines()
    assert out[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert any("(x2 over" in ln and "NeverFits" in ln and "job/j" in ln for ln in out[1:])
    only_j = site.run("get", "events", "--for", "job/j").stdout
    assert "job/j" in only_j and "job/k" not in only_j
    wide = site.run("get", "events", "-o", "wide").stdout
    assert "SOURCE" in wide and "placement" in wide
    described = site.run("describe", "job", "j").stdout.split("Events:", 1)[1]
    row = next(ln for ln in described.splitlines() if "NeverFits" in ln)
    assert "placement" in row and "(x2 over" in row
    assert site.run("get", "jobs", "--for", "job/j").one_error() == "error: --for is only supported with 'get events'"
    assert "expected KIND/NAME" in site.run("get", "events", "--for", "j").one_error()


def test_describe_shows_the_component_that_made_each_move(site: Site) -> None:
    apply(site, job_doc("j", parameters={"name": "x"}))
    reg = site.registry()

    def moved(j: Job) -> None:
        transition(j, JobState.READY, "no parents")
        j.status.history[-1].by = "dependency"
        transition(j, JobState.FAILED, "given up by hand", by_user=True)

    reg.mutate(Job, "j", moved, site.namespace)
    events = site.run("describe", "job", "j").stdout.split("Events:", 1)[1].splitlines()
    ready = next(ln for ln in events if " READY " in ln)
    failed = next(ln for ln in events if " FAILED " in ln)
    assert ready.split()[3] == "dependency"
    assert failed.split()[3] == "user"
    assert "CREATED" not in ready  # FROM is the component, not the previous state


def test_explain(site: Site, tmp_path: Path) -> None:
    r = site.run("explain", "job.spec.resources")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:3] == ["GROUP:      balsam.io", "KIND:       Job", "VERSION:    v1"]
    assert "FIELD: resources <Object>" in lines
    assert "DESCRIPTION:" in lines and "FIELDS:" in lines
    assert "  numNodes\t<integer>" in lines and "  gpusPerRank\t<number>" in lines
    top = site.run("explain", "job").stdout
    assert "  spec\t<Object> -required-" in top.splitlines()
    assert "  parents\t<[]string>" in site.run("explain", "jobs.spec").stdout.splitlines()
    assert "One of: Wait, Fail." in site.run("explain", "job.spec").stdout
    assert site.run("explain", "event").exit_code == 0
    assert site.run("explain", "job.nosuch").one_error() == \
        "error: field \"nosuch\" does not exist in job (see 'balsamctl explain job')"
    assert "nosuchkind" in site.run("explain", "nosuchkind").one_error()


def test_after_up_died_a_job_it_was_running_shows_no_manager_and_no_node_agent(site: Site) -> None:
    """up killed: its manager and agents are gone, the job it ran is left RUNNING (kill -9)
    or RUN_TIMEOUT (its agent's last write). Both missing pieces are shown, not only the manager."""
    apply(site, job_doc("ran", parameters={"name": "x"}), job_doc("killed", parameters={"name": "y"}))
    reg = site.registry()
    edit_job(reg, "ran", lambda j: setattr(j.status, "state", JobState.RUNNING))
    edit_job(reg, "killed", lambda j: setattr(j.status, "state", JobState.RUN_TIMEOUT))
    for name in ("ran", "killed"):
        conds = conditions_section(site.run("describe", "job", name).stdout)
        assert "NoControllerManager" in conds and "NoNodeAgent" in conds, conds
        assert "no node agent is running" in conds
    # An agent registered: the job's way on is open again; only the manager is missing.
    reg.create(Node(metadata={"name": "n1"}, spec={"hostname": "n1", "cpus": 4}))
    conds = conditions_section(site.run("describe", "job", "killed").stdout)
    assert "NoControllerManager" in conds and "NoNodeAgent" not in conds
