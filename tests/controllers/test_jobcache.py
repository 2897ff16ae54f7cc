"""The Job informer keeps live jobs only: terminal ones leave it, yet every surface that reads
the store still sees them, dependents of finished parents still start, and the counts by
state stay exact."""

from __future__ import annotations

from collections import Counter

from click.testing import CliRunner

from apis import Job, JobState, Registry
from controllers import JobInformer
from kubectl_like.cli import cli
from tests._deadline import DEADLINE
from tests._support import poll_until

from .conftest import force, make_job

S = JobState


def job_cache(manager) -> JobInformer:  # type: ignore[no-untyped-def]
    """The manager's Job informer, once it leads and has listed."""
    poll_until(lambda: manager.informers.get("Job") is not None, DEADLINE, "the manager to lead")
    return manager.informers["Job"]  # type: ignore[no-any-return]


def store_counts(registry: Registry) -> dict[str, int]:
    return dict(Counter(j.status.state.value for j in registry.list(Job)[0]))


def test_a_finished_job_leaves_the_cache_but_get_describe_and_objects_still_see_it(registry, app, lifecycle):
    registry.create(make_job("done"))
    force(registry, "done", S.JOB_FINISHED)
    jobs = job_cache(lifecycle)
    poll_until(lambda: jobs.state_of("done") is S.JOB_FINISHED, DEADLINE, "the manager to see done finish")
    assert jobs.get("done") is None and "done" not in jobs.names()
    assert jobs.is_evicted("done")
    # every reader of the store still sees it
    assert registry.get(Job, "done").status.state is S.JOB_FINISHED
    assert [j.name for j in Job.objects.using(registry).filter(state="JOB_FINISHED")] == ["done"]
    url = registry.store.url
    out = CliRunner().invoke(cli, ["--store", url, "get", "jobs", "-o", "name"])
    assert out.exit_code == 0, out.output
    assert "job.balsam.io/done" in out.output or "done" in out.output.split()
    out = CliRunner().invoke(cli, ["--store", url, "describe", "job", "done"])
    assert out.exit_code == 0, out.output
    assert "JOB_FINISHED" in out.output


def test_a_dependent_created_after_its_parent_finished_and_left_the_cache_still_starts(registry, app, lifecycle):
    registry.create(make_job("p"))
    force(registry, "p", S.JOB_FINISHED)
    jobs = job_cache(lifecycle)
    poll_until(lambda: jobs.is_evicted("p"), DEADLINE, "p to leave the cache")
    registry.create(make_job("kid", ("p",)))
    poll_until(lambda: registry.get(Job, "kid").status.state is S.PREPROCESSED, DEADLINE, "kid to start")


def test_a_dependent_of_a_failed_parent_that_left_the_cache_sees_it_failed(registry, app, lifecycle):
    registry.create(make_job("p"))
    force(registry, "p", S.FAILED)
    jobs = job_cache(lifecycle)
    poll_until(lambda: jobs.is_evicted("p"), DEADLINE, "p to leave the cache")
    assert jobs.state_of("p") is S.FAILED
    registry.create(make_job("kid", ("p",), onParentFailure="Fail"))
    poll_until(lambda: registry.get(Job, "kid").status.state is S.FAILED, DEADLINE, "kid to fail with its parent")


def test_counts_by_state_follow_every_change_incrementally(registry, app, lifecycle):
    jobs = job_cache(lifecycle)
    registry.create_many([make_job(f"j{i}") for i in range(6)])
    force(registry, "j0", S.JOB_FINISHED)
    force(registry, "j1", S.FAILED)
    force(registry, "j2", S.JOB_FINISHED)
    poll_until(lambda: jobs.is_evicted("j2") and jobs.is_evicted("j1"), DEADLINE, "terminal jobs to leave")
    force(registry, "j2", S.RESTART_READY)  # a finished job run again comes back into the cache
    registry.delete(Job, "j1")  # a failed job that left the cache is deleted
    registry.mutate(Job, "j0", lambda j: j.metadata.labels.update({"k": "v"}))  # a label on a finished one
    lifecycle.wait_idle(DEADLINE)
    poll_until(lambda: jobs.state_counts() == store_counts(registry), DEADLINE,
               f"counts {jobs.state_counts()} to match the store's {store_counts(registry)}")
    assert jobs.get("j2") is not None and jobs.state_of("j1") is None


def test_start_up_never_decodes_terminal_jobs_and_counts_them(registry, app, monkeypatch):
    registry.create_many([make_job(f"j{i}") for i in range(10)])
    for i in range(7):
        force(registry, f"j{i}", S.FAILED if i == 0 else S.JOB_FINISHED)
    decoded: list[str] = []
    real = registry.decode

    def spy(kind, kv):  # type: ignore[no-untyped-def]
        decoded.append(kv.key.rsplit("/", 1)[1])
        return real(kind, kv)

    monkeypatch.setattr(registry, "decode", spy)
    inf = JobInformer(registry)
    inf.start()
    try:
        assert sorted(decoded) == ["j7", "j8", "j9"]
        assert sorted(inf.names()) == ["j7", "j8", "j9"]
        assert inf.state_counts() == store_counts(registry)
        assert inf.state_of("j0") is S.FAILED and inf.state_of("j3") is S.JOB_FINISHED
        assert inf.state_of("nope") is None
    finally:
        inf.stop()


def test_counts_stay_exact_when_a_relist_finds_a_job_that_left_the_cache_deleted(registry, app):
    import threading

    registry.create_many([make_job(f"j{i}") for i in range(4)])
    force(registry, "j0", S.FAILED)
    force(registry, "j1", S.JOB_FINISHED)
    inf = JobInformer(registry)
    inf.start()
    try:
        assert inf.is_evicted("j0") and inf.is_evicted("j1")
        inf._stop.set()  # pause the watch while the store moves on and compacts
        assert inf._thread is not None
        inf._thread.join(DEADLINE)
        seen = inf.revision
        registry.delete(Job, "j0")
        registry.delete(Job, "j1")
        force(registry, "j2", S.JOB_FINISHED)
        registry.store.compact(registry.store.current_revision())
        assert inf._reflector is not None
        inf._stop.clear()
        stream = inf._reflector.events(resource_version=seen, stop=inf._stop)
        inf._thread = threading.Thread(target=inf._run, args=(stream,), daemon=True)
        inf._thread.start()
        poll_until(lambda: inf.state_counts() == store_counts(registry), DEADLINE,
                   f"counts {inf.state_counts()} to match the store's {store_counts(registry)}")
        assert inf.state_of("j0") is None and inf.state_of("j1") is None
        assert inf.state_of("j2") is S.JOB_FINISHED and inf.get("j2") is None
    finally:
        inf.stop()
