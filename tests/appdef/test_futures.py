"""Python apps as futures (seed: "Python App Futures"), end to end through real processes."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import textwrap
import time

import pytest

import apis
from apis import App, Job, JobState
from apis import _futures as futures
from apis._pycodec import RemoteTraceback
from tests._deadline import DEADLINE

from .apps import Adder, Echo, Failer, Raiser, Sleeper, WhereAmI
from .conftest import REPO

pytestmark = pytest.mark.timeout(3 * DEADLINE)  # a safety net above every wait's own deadline

#: Balsam's default job takes a whole node; these share the 4-CPU node.
PACK = {"node_packing_count": 4}


def test_adder_submit_result_is_the_seed_example(site):
    job = Adder.submit("test/123", x=3, y=7)
    assert job.result() == 3 + 7
    assert job.state == "JOB_FINISHED"
    assert job.status.result == 10  # readable in `balsamctl get job -o yaml`
    assert job.parameters == {"x": "3", "y": "7"}


def test_arguments_and_results_that_json_cannot_carry_go_through_cloudpickle(site):
    job = Adder.submit("test/tuples", x=(1, 2), y=(3,))
    assert job.result(timeout=DEADLINE) == (1, 2, 3)
    assert "$cloudpickle" in job.status.result


def test_a_large_result_is_kept_in_a_file_in_the_workdir(site):
    job = Adder.submit("test/large", x="a" * 40_000, y="b")
    assert job.result(timeout=DEADLINE) == "a" * 40_000 + "b"
    ref = job.status.result
    assert ref["$file"] == str(job.resolve_workdir(site.data_path) / "job.result.pkl")
    assert os.path.getsize(ref["$file"]) == ref["bytes"]


def test_an_exception_raised_by_run_is_reraised_by_result(site):
    job = Raiser.submit("test/raise", message="x must be positive")
    with pytest.raises(ValueError, match="x must be positive") as raised:
        job.result(timeout=DEADLINE)
    cause = raised.value.__cause__  # where it was raised, in the job's process
    assert isinstance(cause, RemoteTraceback) and "raise ValueError(message)" in str(cause), cause
    assert job.state == "FAILED"
    assert job.status.exception == "ValueError: x must be positive"
    assert "Traceback" in (job.status.output_tail or "")
    assert "raise ValueError(message)" in (job.resolve_workdir(site.data_path) / "job.out").read_text()


def test_result_timeout_raises_concurrent_futures_timeout_and_nowait_raises_no_result(site):
    job = Sleeper.submit("test/sleep", seconds=600, **PACK)
    with pytest.raises(concurrent.futures.TimeoutError):
        job.result(timeout=0.1)
    with pytest.raises(Job.NoResult):
        job.result_nowait()
    assert not job.done()
    job.state = "FAILED"  # a user gives up on it: its agent kills the process
    job.save()
    with pytest.raises(Job.Failed):
        job.result(timeout=DEADLINE)


def test_result_nowait_and_done_once_finished(site):
    job = Adder.submit("test/nowait", x=1, y=2)
    job.result(timeout=DEADLINE)
    fresh = Job.objects.get(id=job.id)
    assert fresh.done()
    assert fresh.result_nowait() == 3


def test_a_failed_shell_job_raises_with_its_return_code_and_output_tail(site):
    job = Failer.submit("test/failer")
    with pytest.raises(Job.Failed) as err:
        job.result(timeout=DEADLINE)
    assert err.value.return_code == 3
    assert "about to fail" in err.value.output_tail
    assert "return code 3" in str(err.value)


def test_a_finished_shell_job_result_is_none(site):
    job = Echo.submit("test/echo", text="hi")
    assert job.result(timeout=DEADLINE) is None


def test_run_sees_site_config_data_path_and_its_workdir(site):
    job = WhereAmI.submit("test/where")
    got = job.result(timeout=DEADLINE)
    workdir = str(site.data_path / "test/where")
    assert got == {"data_path": str(site.data_path), "cwd": workdir, "workdir": workdir, "job": job.id}


def test_template_values_that_look_like_shell_run_as_literal_strings(site, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "keep").write_text("x")
    nasty = ["; rm -rf ~", "$(touch pwned)", "`touch pwned2`", "a && touch pwned3"]
    jobs = [Echo.submit(f"test/quote/{i}", text=t) for i, t in enumerate(nasty)]
    for job, text in zip(jobs, nasty, strict=True):
        assert job.result(timeout=DEADLINE) is None
        wd = job.resolve_workdir(site.data_path)
        assert (wd / "job.out").read_text() == text + "\n"
        assert not list(wd.glob("pwned*"))
    assert (home / "keep").exists()


def test_submit_refuses_unknown_keywords_like_a_call_would(site):
    with pytest.raises(TypeError):
        Adder.submit("test/bad", x=1, z=2)
    with pytest.raises(apis.Invalid):
        Echo.submit("test/bad", txt="typo")


def test_submit_save_false_for_bulk_create_and_wait_all(site):
    jobs = Job.objects.bulk_create([Adder.submit(f"test/bulk/{i}", x=i, y=i, save=False, **PACK) for i in range(20)])
    res = Job.objects.wait(jobs, return_when="ALL_COMPLETED", timeout=120, poll_interval=10)
    assert len(res.done) == 20 and not res.not_done
    assert sorted(j.result() for j in res.done) == [2 * i for i in range(20)]


def test_map_creates_one_job_per_item_in_chunks_in_order_and_each_result_comes_back(site):
    site_job_count = Job.objects.count()
    jobs = Adder.map("test/map/{i}", ({"x": i, "y": 10} for i in range(23)), first_chunk=4, chunk=8, **PACK)
    assert [j.workdir.as_posix() for j in jobs] == [f"test/map/{i}" for i in range(23)]
    assert all(j.metadata.resource_version for j in jobs)  # saved, each
    assert Job.objects.count() == site_job_count + 23
    assert [j.spec.resources.node_packing_count for j in jobs] == [4] * 23
    assert sorted(j.result() for j in Job.objects.as_completed(jobs, timeout=DEADLINE)) == [i + 10 for i in range(23)]


def test_map_takes_a_workdir_function_and_checks_each_item_like_submit(site):
    jobs = Adder.map(lambda i: f"test/map-fn/{i:03d}", [{"x": 1, "y": 2}], **PACK)
    assert [j.workdir.as_posix() for j in jobs] == ["test/map-fn/000"]
    assert jobs[0].result(timeout=DEADLINE) == 3
    n = Job.objects.count()
    with pytest.raises(TypeError):  # not a parameter of run(): refused before anything is written
        Adder.map("test/map-bad/{i}", [{"x": 1, "z": 2}], **PACK)
    with pytest.raises(TypeError, match="unknown Job keyword"):
        Adder.map("test/map-bad/{i}", [{"x": 1, "y": 2}], colour="red")
    with pytest.raises(TypeError, match="parameters"):  # the items are the parameters
        Adder.map("test/map-bad/{i}", [{"x": 1, "y": 2}], parameters={"x": 1})
    assert Job.objects.count() == n


def test_wait_first_completed_returns_with_the_fast_job_done(site):
    slow = Sleeper.submit("test/wait-first/slow", seconds=30, **PACK)
    fast = Adder.submit("test/wait-first/fast", x=1, y=1, **PACK)
    res = Job.objects.wait([slow, fast], return_when="FIRST_COMPLETED", timeout=DEADLINE)
    assert [j.id for j in res.done] == [fast.id]
    assert [j.id for j in res.not_done] == [slow.id]
    slow.state = "FAILED"
    slow.save()


def test_wait_first_exception_returns_at_the_first_failure(site):
    slow = Sleeper.submit("test/wait-exc/slow", seconds=30, **PACK)
    bad = Raiser.submit("test/wait-exc/bad", message="no", **PACK)
    ok = Adder.submit("test/wait-exc/ok", x=1, y=1, **PACK)
    res = Job.objects.wait([slow, bad, ok], return_when="FIRST_EXCEPTION", timeout=DEADLINE)
    assert bad.id in [j.id for j in res.done]
    assert slow.id in [j.id for j in res.not_done]
    slow.state = "FAILED"
    slow.save()


def test_wait_timeout_returns_what_is_done(site):
    slow = Sleeper.submit("test/wait-timeout", seconds=600, **PACK)
    res = Job.objects.wait([slow], timeout=0.2)
    assert not res.done and [j.id for j in res.not_done] == [slow.id]
    with pytest.raises(concurrent.futures.TimeoutError):
        list(Job.objects.as_completed([slow], timeout=0.2))
    slow.state = "FAILED"
    slow.save()


def test_as_completed_over_200_python_jobs_yields_each_once_in_completion_order(site):
    jobs = Job.objects.bulk_create(
        [Adder.submit(f"test/asc/{i}", x=i, y=1, save=False, **PACK) for i in range(200)])
    first = jobs[:3]
    for j in first:  # some are finished before as_completed starts
        j.result(timeout=DEADLINE)
    seen = []
    for job in Job.objects.as_completed(jobs, timeout=150):
        assert job.done()
        seen.append((job.id, int(job.metadata.resource_version), job.result()))
    assert sorted(name for name, _, _ in seen) == sorted(j.id for j in jobs)  # each once
    revisions = [rv for _, rv, _ in seen]
    assert revisions == sorted(revisions)  # in the order their terminal write landed
    by_name = {j.id: i for i, j in enumerate(jobs)}
    assert all(value == by_name[name] + 1 for name, _, value in seen)


def test_a_thousand_outstanding_futures_share_one_store_watch(site):
    reg = apis.default_registry()
    watcher = futures.watcher_for(reg, "default")
    jobs = Job.objects.bulk_create([Sleeper.submit(f"test/many/{i}", seconds=600, save=False,
                                                   tags={"batch": "many"}) for i in range(1000)])
    before = len(reg.store._watches)  # the SQLite store: its open watches
    opened = watcher.watches_opened
    res = Job.objects.wait(jobs, timeout=0.5)
    assert len(res.not_done) >= 990
    assert watcher.watches_opened - opened <= 1
    assert len(reg.store._watches) <= max(before, len(futures.watched_prefixes("default")))
    Job.objects.filter(tags={"batch": "many"}).update(state="FAILED")
    assert Job.objects.wait(jobs, timeout=DEADLINE).not_done == []


def test_the_futures_watch_index_entries_not_the_jobs_themselves():
    prefixes = futures.watched_prefixes("ns1")
    assert all(p.startswith("/index/jobs/") and "/ns1/" in p for p, _ in prefixes)
    assert sorted(p.split("/")[-2] for p, deletions in prefixes if not deletions) == ["FAILED", "JOB_FINISHED"]


def test_a_waited_job_deleted_before_it_ends_wakes_its_waiter_with_job_deleted(site):
    reg = apis.default_registry()
    watcher = futures.watcher_for(reg, "default")
    job = Sleeper.submit("test/deleted", seconds=600)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(Job.objects.wait, [job], timeout=DEADLINE)
        deadline = time.monotonic() + DEADLINE
        while job.name not in watcher._sinks:  # the waiter has read it (not terminal): the watch decides
            assert time.monotonic() < deadline and not waiting.done()
            time.sleep(0.01)
        Job.objects.get(name=job.name).delete()
        res = waiting.result(timeout=DEADLINE)
    assert [j.name for j in res.done] == [job.name]
    with pytest.raises(futures.JobDeleted):
        futures.outcome(job)  # what result() raises for it


def test_a_class_defined_in_main_runs_by_value(site, tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        from balsam.api import ApplicationDefinition, Job, site_config
        import balsam.api

        class Multiplier(ApplicationDefinition):
            factor = 6

            def run(self, x):
                return x * self.factor

        balsam.api.use(site={str(site.path)!r})
        job = Multiplier.submit("test/by-value", x=7)
        print(job.result(timeout={DEADLINE}))
    """))
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=2 * DEADLINE, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "42"
    app = App.objects.get(name="multiplier")
    assert app.spec.python.module is None and app.spec.python.payload


def test_sync_registers_apps_that_balsamctl_lists(site):
    Adder.sync()
    Echo.sync()
    app = App.objects.get(name="adder")
    assert app.spec.python.module == "tests.appdef.apps" and app.spec.python.payload is None
    assert app.spec.python.hooks == []
    assert set(app.spec.parameters) == {"x", "y"}
    from click.testing import CliRunner

    from kubectl_like.cli import cli as balsamctl

    res = CliRunner().invoke(balsamctl, ["get", "apps", "--site", str(site.path)])
    assert res.exit_code == 0, res.output
    assert "adder" in res.output and "python:tests.appdef.apps.Adder" in res.output
    assert "echo" in res.output


def test_sync_updates_the_app_when_the_class_changes(site):
    class Versioned(Adder):
        app_name = "versioned"
        environment_variables = {"V": "1"}

    first = Versioned.sync()
    assert Versioned.sync().metadata.resource_version == first.metadata.resource_version  # unchanged

    class Versioned2(Adder):
        app_name = "versioned"
        environment_variables = {"V": "2"}

    second = Versioned2.sync()
    assert second.spec.environment == {"V": "2"}
    assert second.metadata.generation == first.metadata.generation + 1
    assert second.spec.python.payload  # defined in a function: by value


def test_job_state_helpers_without_waiting(site):
    job = Adder.submit("test/states", x=0, y=0)
    job.result(timeout=DEADLINE)
    assert JobState(job.state) is JobState.JOB_FINISHED
