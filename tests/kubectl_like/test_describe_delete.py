"""balsamctl describe and delete."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from ruamel.yaml import YAML

from apis import App, BatchJob, HistoryEvent, Job, JobState, Node, Placement, set_condition, utcnow
from apis._registry import index_prefix
from apis.analytics import EventLogQuery
from controllers._manager import default_reconcilers
from controllers.hooks import NoHooks
from tests._deadline import DEADLINE
from tests._support import poll_until, running_manager

from .conftest import Site, hello_app, job_doc, write_yaml


def apply(site: Site, tmp_path: Path, docs: list[dict[str, object]], name: str = "m.yaml") -> Path:
    f = write_yaml(tmp_path / name, docs)
    r = site.run("apply", "-f", str(f))
    assert r.exit_code == 0, r.stderr
    return f


def test_describe_job_shows_spec_status_conditions_and_history(site: Site, tmp_path: Path) -> None:
    apply(site, tmp_path, [hello_app(), job_doc("sim", "runs/sim", labels={"experiment": "foo"},
                                                parameters={"name": "world"}, resources={"numNodes": 2})])
    t0 = utcnow() - timedelta(minutes=5)

    def run_and_fail(j: Job) -> None:
        path = [("CREATED", "READY", "no parents"), ("READY", "STAGED_IN", ""), ("STAGED_IN", "PREPROCESSED", ""),
                ("PREPROCESSED", "RUNNING", "started on nid0001"), ("RUNNING", "RUN_ERROR", "exit code 3"),
                ("RUN_ERROR", "FAILED", "retry limit reached")]
        for i, (a, b, msg) in enumerate(path):
            by = {"READY": "dependency", "FAILED": "hook"}.get(b)  # the others: the node agent's, or older
            j.status.history.append(HistoryEvent.model_validate(
                {"from": a, "to": b, "time": t0 + timedelta(seconds=10 * i), "message": msg, "by": by}))
        j.status.state = JobState.FAILED
        j.status.return_code = 3
        j.status.attempts = 2
        j.status.message = "retry limit reached"
        j.status.placement = Placement(batch_job="bj-1", nodes=["nid0001", "nid0002"], cpus=[0, 1, 2], gpus=[0])
        set_condition(j.status.conditions, "Unschedulable", "False", "Placed", "fits now")

    site.registry().mutate(Job, "sim", run_and_fail)
    r = site.run("describe", "job", "sim")
    assert r.exit_code == 0, r.stderr
    out = r.stdout
    lines = out.splitlines()
    assert lines[0].split() == ["Name:", "sim"]
    assert any(ln.split() == ["Labels:", "experiment=foo"] for ln in lines)
    assert "last-applied-configuration" not in out
    # Spec in kubectl's Title Case, nested.
    assert "Spec:" in lines and any(ln.split() == ["Workdir:", "runs/sim"] for ln in lines)
    assert any(ln.split() == ["Num", "Nodes:", "2"] for ln in lines)
    # Status: state, return code, attempts, placement, message.
    status = out[out.index("\nStatus:"):]
    for want in (["State:", "FAILED"], ["Return", "Code:", "3"], ["Attempts:", "2"], ["Batch", "Job:", "bj-1"],
                 ["Nodes:", "nid0001,", "nid0002"], ["Message:", "retry", "limit", "reached"]):
        assert any(ln.split() == want for ln in status.splitlines()), want
    # Conditions table.
    cond = out[out.index("\nConditions:") + 1:]
    assert cond.splitlines()[1].split() == ["Type", "Status", "Reason", "Age", "Message"]
    assert cond.splitlines()[3].split()[:3] == ["Unschedulable", "False", "Placed"]
    # Events from the history, oldest first, failures as Warning.
    ev = out[out.index("\nEvents:") + 1:].splitlines()[1:]
    assert ev[0].split() == ["Type", "Reason", "Age", "From", "Message"]
    rows = [ln.split() for ln in ev[2:]]
    assert [r[1] for r in rows] == ["READY", "STAGED_IN", "PREPROCESSED", "RUNNING", "RUN_ERROR", "FAILED"]
    assert [r[0] for r in rows] == ["Normal"] * 4 + ["Warning"] * 2
    # FROM is the component that made the move (not the previous state).
    assert rows[0][2].startswith("5m") and rows[0][3] == "dependency" and " ".join(rows[0][4:]) == "no parents"
    assert rows[4][3] == "node-agent" and " ".join(rows[4][4:]) == "exit code 3"
    assert rows[5][3] == "hook"


def test_describe_fresh_job_and_other_kinds(site: Site, tmp_path: Path) -> None:
    apply(site, tmp_path, [hello_app(), job_doc("new", "w/new")])
    out = site.run("describe", "job", "new").stdout
    assert "Events:  <none>" in out and "State:" in out
    # No controller manager runs for the namespace: the one condition says so.
    assert out.split("Conditions:", 1)[1].split("Events:")[0].count("NoControllerManager") == 1
    out = site.run("describe", "app", "hello").stdout
    assert "Kind:" in out and "Command:" in out and "echo hello {{ name }}" in out
    out = site.run("describe", "site", "site").stdout
    assert "Path:" in out and str(site.path.resolve()) in out
    site.registry().create(BatchJob.model_validate({"metadata": {"name": "bj"}, "spec": {"numNodes": 2}}))
    out = site.run("describe", "batchjob", "bj").stdout
    assert "pending_submission" in out and "Conditions:  <none>" in out


def test_describe_several_by_selector_and_missing(site: Site, tmp_path: Path) -> None:
    apply(site, tmp_path, [hello_app(), job_doc("a", "w/a", labels={"g": "1"}), job_doc("b", "w/b", labels={"g": "1"}),
                           job_doc("c", "w/c")])
    out = site.run("describe", "jobs", "-l", "g=1").stdout
    assert out.count("\nName:") + out.startswith("Name:") == 2
    r = site.run("describe", "job", "a", "ghost")
    assert r.exit_code == 1 and r.stdout.startswith("Name:")
    assert r.stderr == 'Error from server (NotFound): jobs.balsam.io "ghost" not found\n'


def index_keys_left(site: Site, state: str) -> int:
    reg = site.registry()
    return reg.store.count(index_prefix(Job, "state", site.namespace, state))


def test_delete_by_name(any_site: Site, tmp_path: Path) -> None:
    site = any_site
    apply(site, tmp_path, [hello_app(), job_doc("a", "w/a"), job_doc("b", "w/b"), job_doc("c", "w/c")])
    r = site.run("delete", "job", "a", "b")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == 'job.balsam.io "a" deleted\njob.balsam.io "b" deleted\n'
    reg = site.registry()
    assert reg.names(Job, site.namespace) == ["c"]
    assert index_keys_left(site, "CREATED") == 1  # the index keys went with the objects


def test_delete_missing_name_reports_not_found_and_deletes_the_rest(any_site: Site, tmp_path: Path) -> None:
    site = any_site
    apply(site, tmp_path, [hello_app(), job_doc("a", "w/a")])
    r = site.run("delete", "job", "ghost", "a")
    assert r.exit_code == 1
    assert r.stdout == 'job.balsam.io "a" deleted\n'
    assert r.stderr == 'Error from server (NotFound): jobs.balsam.io "ghost" not found\n'
    rev = site.revision()
    line = site.run("delete", "job", "ghost").one_error()
    assert line == 'Error from server (NotFound): jobs.balsam.io "ghost" not found'
    assert site.revision() == rev
    r = site.run("delete", "job", "ghost", "--ignore-not-found")
    assert r.exit_code == 0 and r.stderr == ""


def test_delete_by_selector_state_and_all(any_site: Site, tmp_path: Path) -> None:
    site = any_site
    apply(site, tmp_path, [hello_app()] + [job_doc(f"j{n}", f"w/{n}", labels={"experiment": "foo" if n < 4 else "bar"})
                                           for n in range(8)])
    reg = site.registry()
    for n in (0, 5):
        reg.mutate(Job, f"j{n}", lambda j: setattr(j.status, "state", JobState.FAILED), site.namespace)
    r = site.run("delete", "jobs", "-l", "experiment=foo", "--state", "FAILED")
    assert r.stdout == 'job.balsam.io "j0" deleted\n'
    r = site.run("delete", "jobs", "-l", "experiment in (foo)")
    assert sorted(r.stdout.splitlines()) == [f'job.balsam.io "j{n}" deleted' for n in (1, 2, 3)]
    r = site.run("delete", "jobs", "-l", "experiment=foo")
    assert r.exit_code == 0 and r.stdout == "" and "No resources found" in r.stderr
    assert index_keys_left(site, "FAILED") == 1
    rev = site.revision()
    r = site.run("delete", "jobs", "--all", "--dry-run")
    assert len(r.stdout.splitlines()) == 4 and r.stdout.endswith("deleted (dry run)\n")
    assert site.revision() == rev
    r = site.run("delete", "jobs", "--all")
    assert len(r.stdout.splitlines()) == 4
    assert reg.count(Job, site.namespace) == 0
    assert reg.count(App, site.namespace) == 1
    assert index_keys_left(site, "CREATED") == 0 and index_keys_left(site, "FAILED") == 0


def test_delete_by_file(any_site: Site, tmp_path: Path) -> None:
    site = any_site
    f = apply(site, tmp_path, [hello_app(), job_doc("a", "w/a"), job_doc("b", "w/b")])
    apply(site, tmp_path, [job_doc("keep", "w/k")], "keep.yaml")
    r = site.run("delete", "-f", str(f))
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines() == ['app.balsam.io "hello" deleted', 'job.balsam.io "a" deleted',
                                     'job.balsam.io "b" deleted']
    assert site.registry().names(Job, site.namespace) == ["keep"]
    r = site.run("delete", "-f", str(f))
    assert r.exit_code == 1 and len(r.err_lines) == 3 and all("(NotFound)" in ln for ln in r.err_lines)
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: [\n")
    rev = site.revision()
    line = site.run("delete", "-f", str(bad)).one_error()
    assert "invalid YAML" in line and "(no objects were deleted)" in line
    assert site.revision() == rev


def test_delete_usage_errors(site: Site, tmp_path: Path) -> None:
    assert "no name, label selector, or --all" in site.run("delete", "jobs").one_error()
    assert "cannot be combined" in site.run("delete", "job", "a", "-l", "x=y").one_error()
    f = write_yaml(tmp_path / "x.yaml", [hello_app()])
    assert "cannot be combined" in site.run("delete", "job", "a", "-f", str(f)).one_error()


def test_delete_races_with_a_writer_leave_no_stale_index(site: Site, tmp_path: Path) -> None:
    """An object that moves between delete's read and its write is re-read: no stale index key."""
    import kubectl_like.commands.delete as delete_mod

    apply(site, tmp_path, [hello_app(), job_doc("racy", "w/r")])
    reg = site.registry()
    real = delete_mod.get_named
    moved = []

    def get_then_move(*a: object, **kw: object) -> object:
        out = real(*a, **kw)  # type: ignore[arg-type]
        if not moved:
            reg.mutate(Job, "racy", lambda j: setattr(j.status, "state", JobState.READY))
            moved.append(1)
        return out

    delete_mod.get_named = get_then_move  # type: ignore[assignment]
    try:
        r = site.run("delete", "job", "racy")
    finally:
        delete_mod.get_named = real
    assert r.exit_code == 0, r.stderr
    assert reg.count(Job) == 0
    assert index_keys_left(site, "READY") == 0 and index_keys_left(site, "CREATED") == 0


def test_a_job_released_by_placement_shows_every_collapsed_step(site: Site, tmp_path: Path) -> None:
    """The manager's default reconcilers release a plain job in its binding write (issue 19):
    describe, `get -o yaml` and the analytics event log still list each step, by placement."""
    reg = site.registry()
    apply(site, tmp_path, [hello_app()])
    reg.create(Node(metadata={"name": "n0", "namespace": site.namespace},  # type: ignore[arg-type]
                    spec={"hostname": "n0", "cpus": 4, "gpus": 0}))
    with running_manager(reg, default_reconcilers(NoHooks())) as (mgr, _):
        apply(site, tmp_path, [job_doc("plain", "w/plain", parameters={"name": "x"})], name="j.yaml")
        poll_until(lambda: reg.get(Job, "plain", site.namespace).status.placement is not None, DEADLINE, "bound")
        assert mgr.wait_idle(DEADLINE)
    steps = [("READY", "no parents"), ("STAGED_IN", "no stage-in transfers"), ("PREPROCESSED", "no preprocess hook")]
    out = site.run("describe", "job", "plain").stdout
    rows = [ln.split(None, 4) for ln in out.split("\nEvents:", 1)[1].splitlines() if ln.strip()][2:]
    assert [(r[1], r[3], r[4]) for r in rows] == [(s, "placement", m) for s, m in steps]
    doc = YAML(typ="safe").load(site.run("get", "job", "plain", "-o", "yaml").stdout)
    hist = doc["status"]["history"]
    assert [(h["from"], h["to"], h["message"], h["by"]) for h in hist] == [
        ("CREATED", "READY", "no parents", "placement"), ("READY", "STAGED_IN", "no stage-in transfers", "placement"),
        ("STAGED_IN", "PREPROCESSED", "no preprocess hook", "placement")]
    assert doc["status"]["state"] == "PREPROCESSED" and doc["status"]["placement"]["nodes"] == ["n0"]
    log = EventLogQuery(reg, site.namespace).filter(job_id="plain").order_by("timestamp")
    assert [(e.from_state, e.to_state) for e in log] == [
        ("CREATED", "READY"), ("READY", "STAGED_IN"), ("STAGED_IN", "PREPROCESSED")]
