"""Lifecycle hooks of ApplicationDefinitions, run by the controller manager's hook processes."""

from __future__ import annotations

import json

import pytest

from apis import ApplicationDefinition, Job
from tests._deadline import DEADLINE

from .apps import (
    Adder,
    BrokenHook,
    Gather,
    HangingHook,
    OutageHook,
    Retrier,
    SkipsToTheEnd,
    SkipsToTheEndAroundTheSetter,
    Spawner,
    Timeouter,
    Writer,
)

pytestmark = pytest.mark.timeout(3 * DEADLINE)  # a safety net above every wait's own deadline

PACK = {"node_packing_count": 4}


def test_preprocess_reads_its_parents_workdirs(site):
    parents = [Writer.submit(f"hooks/gather/p{i}", value=f"v{i}", **PACK) for i in range(3)]
    child = Gather.submit("hooks/gather/child", parent_ids=[p.id for p in parents], **PACK)
    assert child.result(timeout=DEADLINE) is None
    assert child.data["parents_seen"] == ["v0", "v1", "v2"]
    wd = child.resolve_workdir(site.data_path)
    assert (wd / "job.out").read_text() == "v0,v1,v2\n"
    assert [h.to_state.value for h in child.status.history].count("PREPROCESSED") == 1
    assert "set by preprocess hook" in [h.message for h in child.status.history]


def test_postprocess_creates_a_child_job_that_runs(site):
    parent = Spawner.submit("hooks/spawner", data={"n": 41}, **PACK)
    assert parent.result(timeout=DEADLINE) is None
    child = Job.objects.get(id=parent.data["child"])
    assert child.parent_ids == [parent.id]
    assert child.tags == {"spawned-by": parent.id}
    assert child.result(timeout=DEADLINE) == 42


def test_handle_error_edits_data_and_restarts_once_then_fails(site):
    job = Retrier.submit("hooks/retrier", **PACK)
    with pytest.raises(Job.Failed) as err:
        job.result(timeout=DEADLINE)
    assert err.value.return_code == 7
    assert job.data == {"retries": 1}
    assert job.status.attempts == 2
    states = [h.to_state.value for h in job.status.history]
    assert states.count("RUN_ERROR") == 2 and states.count("RESTART_READY") == 1
    assert states[-1] == "FAILED"


def test_a_hook_that_raises_fails_the_job_with_the_exception_and_traceback(site):
    job = BrokenHook.submit("hooks/broken", **PACK)
    with pytest.raises(Job.Failed):
        job.result(timeout=DEADLINE)
    assert job.status.message.startswith("preprocess hook failed: RuntimeError: preprocess exploded")
    assert "Traceback" in job.status.message and 'raise RuntimeError("preprocess exploded")' in job.status.message
    assert job.status.history[-1].message == job.status.message
    out = (job.resolve_workdir(site.data_path) / "job.hooks.out").read_text()
    assert "RuntimeError: preprocess exploded" in out
    # The reconcilers carry on.
    assert Adder.submit("hooks/after-broken", x=1, y=1, **PACK).result(timeout=DEADLINE) == 2


def test_a_hook_that_meets_a_store_outage_runs_again_and_its_job_does_not_fail(site):
    job = OutageHook.submit("hooks/outage", **PACK)
    assert job.result(timeout=DEADLINE) is None
    assert job.data == {"preprocessed": True}
    states = [h.to_state.value for h in job.status.history]
    assert "FAILED" not in states and states.count("PREPROCESSED") == 1, states
    out = (job.resolve_workdir(site.data_path) / "job.hooks.out").read_text()
    assert "Unavailable" in out and "nonexistent-balsam-store-dir" in out  # the first attempt met it


def test_a_hook_that_hangs_past_its_time_limit_fails_the_job(site):
    job = HangingHook.submit("hooks/hanging", **PACK)
    with pytest.raises(Job.Failed):
        job.result(timeout=DEADLINE)
    assert "preprocess hook failed: did not finish within its time limit of 1s" in job.status.message
    assert Adder.submit("hooks/after-hang", x=2, y=2, **PACK).result(timeout=DEADLINE) == 4


def test_handle_timeout_that_takes_the_default_is_bounded_by_the_retry_limit(site):
    job = Timeouter.submit("hooks/timeouter", wall_time_min=0.01, retry={"limit": 1}, **PACK)
    with pytest.raises(Job.Failed):
        job.result(timeout=DEADLINE)
    states = [h.to_state.value for h in job.status.history]
    assert states.count("RUN_TIMEOUT") == 2 and states.count("RESTART_READY") == 1
    assert "gave up after 2 attempt(s)" in job.status.message
    log = (job.resolve_workdir(site.data_path) / "timeouts.log").read_text().splitlines()
    assert [json.loads(x)["job"] for x in log] == [job.id, job.id]


def test_hooks_are_skipped_for_apps_that_do_not_define_them(site):
    job = Adder.submit("hooks/none", x=1, y=2, **PACK)
    assert job.result(timeout=DEADLINE) == 3
    assert not (job.resolve_workdir(site.data_path) / "job.hooks.out").exists()


def test_an_app_declared_in_yaml_with_python_module_and_class_runs_its_hooks(site):
    from apis import App, parse_object

    doc = {
        "apiVersion": "balsam.io/v1", "kind": "App", "metadata": {"name": "spawner-from-git"},
        "spec": {"command": "true", "python": {"module": "tests.appdef.apps", "class": "Spawner"}},
    }
    App.objects.registry.create(parse_object(doc, [App]))
    Adder.sync()
    parent = Job.objects.create(app_id="spawner-from-git", workdir="hooks/yaml", data={"n": 1}, **PACK)
    assert parent.result(timeout=DEADLINE) is None
    assert Job.objects.get(id=parent.data["child"]).result(timeout=DEADLINE) == 2


def test_hooks_of_a_class_sent_by_value_run(site):
    class Annotated(ApplicationDefinition):  # defined in a function: cannot be imported by path
        command_template = "true"

        def postprocess(self):
            self.job.data = {**self.job.data, "annotated": True}

    app = Annotated.sync()
    assert app.spec.python.payload and app.spec.python.module is None
    job = Annotated.submit("hooks/by-value", **PACK)
    assert job.result(timeout=DEADLINE) is None
    assert job.data == {"annotated": True}


def test_a_hook_that_sets_a_state_the_table_refuses_fails_its_job(site):
    job = SkipsToTheEnd.submit("hooks/skips", **PACK)
    with pytest.raises(Job.Failed):
        job.result(timeout=DEADLINE)
    assert job.status.message.startswith(
        "preprocess hook failed: IllegalTransition: illegal state transition STAGED_IN -> JOB_FINISHED"), \
        job.status.message
    states = [h.to_state.value for h in job.status.history]
    assert states[-2:] == ["STAGED_IN", "FAILED"] and "RUNNING" not in states
    assert not (job.resolve_workdir(site.data_path) / "ran").exists()


def test_a_hook_that_writes_a_refused_state_around_the_setter_fails_its_job(site):
    job = SkipsToTheEndAroundTheSetter.submit("hooks/skips-around", **PACK)
    with pytest.raises(Job.Failed):
        job.result(timeout=DEADLINE)
    assert job.status.message == "postprocess hook set state JOB_FINISHED, which is not allowed from RUN_DONE"
    states = [h.to_state.value for h in job.status.history]
    assert states[-2:] == ["RUN_DONE", "FAILED"] and "JOB_FINISHED" not in states
