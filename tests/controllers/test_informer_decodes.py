"""The Job cache does not decode what it already knows (issue 19): a job's finishing event
reaches the handlers as the cached job with its new state, and a write announced with
``expect`` (placement's bindings) is handed out as the object written. Anything more than
the state moving is decoded as before."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from apis import Job, JobState, Placement, Registry
from controllers import JobInformer
from tests._support import poll_until

from .conftest import force, make_job

S = JobState


@pytest.fixture
def cache(registry: Registry, app: Any) -> Iterator[tuple[JobInformer, list[tuple[str, Job | None, Job | None]]]]:
    registry.create(make_job("j"))
    jobs = JobInformer(registry)
    seen: list[tuple[str, Job | None, Job | None]] = []
    jobs.add_handler(lambda typ, old, new: seen.append((typ, old, new)))  # type: ignore[arg-type]
    jobs.start()
    try:
        yield jobs, seen
    finally:
        jobs.stop()


def _event_to(seen: list[tuple[str, Job | None, Job | None]], state: JobState) -> tuple[Job, Job]:
    poll_until(lambda: any(n is not None and n.status.state is state for _, _, n in seen), 60,
               f"the handlers to see {state.value}")
    typ, old, new = next(e for e in seen if e[2] is not None and e[2].status.state is state)
    assert typ == "MODIFIED" and old is not None and new is not None
    return old, new


def test_a_finishing_event_reaches_the_handlers_without_a_decode(registry: Registry, cache: Any) -> None:
    jobs, seen = cache
    done = force(registry, "j", S.JOB_FINISHED, return_code=0)
    old, new = _event_to(seen, S.JOB_FINISHED)
    assert new.spec is old.spec  # the cached job, not a new model from the bytes
    assert new.metadata.resource_version == done.metadata.resource_version
    assert old.status.state is S.CREATED  # the cached object itself is not changed
    assert jobs.get("j") is None and jobs.state_of("j") is S.JOB_FINISHED
    assert jobs.state_counts() == {"JOB_FINISHED": 1}


def test_a_failing_event_is_remembered_as_failed(registry: Registry, cache: Any) -> None:
    jobs, seen = cache
    force(registry, "j", S.FAILED)
    _event_to(seen, S.FAILED)
    assert jobs.state_of("j") is S.FAILED and jobs.state_counts() == {"FAILED": 1}


def test_a_finishing_event_that_changed_more_than_the_state_is_decoded(registry: Registry, cache: Any) -> None:
    _, seen = cache

    def finish_and_label(j: Job) -> None:
        j.status.state = S.JOB_FINISHED
        j.metadata.labels["k"] = "v"

    registry.mutate(Job, "j", finish_and_label)
    old, new = _event_to(seen, S.JOB_FINISHED)
    assert new.metadata.labels == {"k": "v"}
    assert new.spec is not old.spec


def test_an_expected_write_is_handed_out_as_written_when_its_event_arrives(registry: Registry,
                                                                           cache: Any) -> None:
    jobs, seen = cache
    poll_until(lambda: jobs.get("j") is not None, 60, "j in the cache")
    cached = jobs.get("j")
    assert cached is not None
    new = cached.status_copy()
    new.status.message = "bound"
    # announce the write before it is made (its revision is the store's next: nothing else writes
    # here), so the watch event cannot overtake the announcement
    rev = registry.store.current_revision() + 1
    announced = new.status_copy()
    announced.metadata = announced.metadata.model_copy(update={"resource_version": str(rev)})
    jobs.expect([announced])
    _, (written,) = registry.write([], [(cached, new)])
    assert written.metadata.resource_version == str(rev)
    poll_until(lambda: jobs.get("j") is announced, 60, "the event to hand out the announced object")
    assert seen[-1][2] is announced


def test_an_expected_write_overtaken_by_another_is_dropped(registry: Registry, cache: Any) -> None:
    jobs, _ = cache
    poll_until(lambda: jobs.get("j") is not None, 60, "j in the cache")
    cached = jobs.get("j")
    assert cached is not None
    stale = cached.status_copy()
    stale.metadata = stale.metadata.model_copy(update={"resource_version": "1"})  # older than any event to come
    jobs.expect([stale])
    force(registry, "j", S.AWAITING_PARENTS)
    poll_until(lambda: (j := jobs.get("j")) is not None and j.status.state is S.AWAITING_PARENTS, 60,
               "the later write to be decoded")
    assert jobs.get("j") is not stale


# --- a write held before it is made (hold / release): its event may come first ---------------


def _cached(jobs: JobInformer) -> Job:
    poll_until(lambda: jobs.get("j") is not None, 60, "j in the cache")
    job = jobs.get("j")
    assert job is not None
    return job


def _seen_up_to(jobs: JobInformer, rev: int) -> None:
    poll_until(lambda: jobs.revision >= rev, 60, f"the informer to reach revision {rev}")


def _held_write(registry: Registry, jobs: JobInformer, holds: int = 1) -> tuple[Job, Job]:
    """The cached ``j`` and the stored result of a status write to it made under ``holds``
    holds (the writer's side of hold/release): (cached, written)."""
    cached = _cached(jobs)
    new = cached.status_copy()
    new.status.message = "bound"
    for _ in range(holds):
        jobs.hold(["j"])
    _, (written,) = registry.write([], [(cached, new)])
    return cached, written


def test_a_held_write_whose_event_comes_first_is_handed_out_as_written(registry: Registry, cache: Any) -> None:
    jobs, seen = cache
    cached, written = _held_write(registry, jobs)
    _seen_up_to(jobs, int(written.metadata.resource_version or 0))  # the event came before the announcement
    assert jobs.get("j") is cached and all(n is not written for _, _, n in seen)
    jobs.expect([written])
    jobs.release(["j"])
    assert jobs.get("j") is written  # handed out as written: not decoded
    assert seen[-1] == ("MODIFIED", cached, written)


def test_another_writers_event_under_a_hold_is_decoded_at_the_release(registry: Registry, cache: Any) -> None:
    jobs, seen = cache
    cached = _cached(jobs)
    jobs.hold(["j"])
    moved = force(registry, "j", S.AWAITING_PARENTS)
    _seen_up_to(jobs, int(moved.metadata.resource_version or 0))
    assert jobs.get("j") is cached
    jobs.release(["j"])  # our own write failed: nothing announced
    now = jobs.get("j")
    assert now is not None and now.status.state is S.AWAITING_PARENTS
    assert now.metadata.resource_version == moved.metadata.resource_version
    assert seen[-1][0] == "MODIFIED" and seen[-1][2] is now


def test_a_delete_under_a_hold_waits_for_the_release_and_keeps_its_order(registry: Registry, cache: Any) -> None:
    jobs, seen = cache
    cached, written = _held_write(registry, jobs, holds=2)  # two writes in flight: the first release does not let the events go
    registry.delete(Job, "j")
    _seen_up_to(jobs, int(written.metadata.resource_version or 0) + 1)
    jobs.expect([written])
    jobs.release(["j"])
    assert jobs.get("j") is cached
    jobs.release(["j"])
    assert jobs.get("j") is None
    assert [(typ, new) for typ, _, new in seen[-2:]] == [("MODIFIED", written), ("DELETED", None)]
    assert not jobs._undecoded and not jobs._parked  # nothing left behind


def test_a_released_write_overtaken_by_the_jobs_end_does_not_bring_it_back(
        registry: Registry, cache: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A held write's event is applied by the writer's thread at the release; the job may end
    meanwhile (a trivial job runs in ms), its finishing event applied by the watch's thread and
    the job evicted, before the writer's older event is stored. The older event must not put
    the job back: placement would hold its room forever (a bench chain stalled on it)."""
    jobs, seen = cache
    cached, written = _held_write(registry, jobs)
    rv = int(written.metadata.resource_version or 0)
    _seen_up_to(jobs, rv)  # parked
    decode = jobs._decode

    def decode_then_finish(kv: Any) -> Any:
        obj = decode(kv)
        if kv.mod_revision == rv:  # the writer's event, decoded at the release: now the job ends
            done = force(registry, "j", S.JOB_FINISHED)
            _seen_up_to(jobs, int(done.metadata.resource_version or 0))
            assert jobs.get("j") is None  # ended and evicted by the watch's thread
        return obj

    monkeypatch.setattr(jobs, "_decode", decode_then_finish)
    jobs.expect([written])
    jobs.release(["j"])
    assert jobs.get("j") is None
    assert jobs.state_of("j") is S.JOB_FINISHED
    assert seen[-1][2] is not None and seen[-1][2].status.state is S.JOB_FINISHED


def test_a_job_that_leaves_the_cache_is_in_no_index_while_its_handlers_run(registry: Registry, app: Any) -> None:
    """A finishing event takes the job out at once (issue 19, sixth round): the handlers still
    receive old -> new, and nothing of the cache (items, indexes) shows the ended job meanwhile."""
    registry.create(make_job("p"))
    registry.create(make_job("c", parents=("p",)))
    jobs = JobInformer(registry, indexers={"state": lambda j: (j.status.state.value,),
                                           "children": lambda j: tuple(j.spec.parents)})
    during: list[tuple[Job | None, list[str], list[str]]] = []

    def handler(typ: str, old: Job | None, new: Job | None) -> None:
        if new is not None and new.name == "p" and new.status.state is S.JOB_FINISHED:
            during.append((jobs.get("p"), [j.name for j in jobs.by_index("state", "JOB_FINISHED")],
                           [j.name for j in jobs.by_index("children", "p")]))

    jobs.add_handler(handler)  # type: ignore[arg-type]
    jobs.start()
    try:
        force(registry, "p", S.JOB_FINISHED, return_code=0)
        poll_until(lambda: during, 60, "the handlers to see p finish")
        assert during == [(None, [], ["c"])]  # gone from the cache; its child still indexed under it
        assert jobs.index_values("state") == ["CREATED"]
        assert jobs.state_of("p") is S.JOB_FINISHED and jobs.state_counts() == {"CREATED": 1, "JOB_FINISHED": 1}
    finally:
        jobs.stop()


def test_a_written_through_end_leaves_the_cache_before_its_handlers_run(registry: Registry, app: Any) -> None:
    """``apply_local`` (a controller's own write, written through) takes an ending job out
    before the handlers run, as the watch path does: they see old -> new, and the cache and
    its indexes no longer show it."""
    registry.create(make_job("p"))
    jobs = JobInformer(registry, indexers={"state": lambda j: (j.status.state.value,)})
    during: list[tuple[Job | None, list[str]]] = []

    def handler(typ: str, old: Job | None, new: Job | None) -> None:
        if new is not None and new.status.state is S.JOB_FINISHED:
            assert old is not None and old.status.state is S.CREATED
            during.append((jobs.get("p"), [j.name for j in jobs.by_index("state", "JOB_FINISHED")]))

    jobs.add_handler(handler)  # type: ignore[arg-type]
    jobs.start()
    try:
        poll_until(lambda: jobs.get("p") is not None, 60, "p in the cache")
        jobs.hold(["p"])  # the watch's event of this write waits: apply_local delivers it
        done = force(registry, "p", S.JOB_FINISHED, return_code=0)
        jobs.apply_local(done)
        assert during == [(None, [])]
        jobs.release(["p"])
        assert jobs.state_of("p") is S.JOB_FINISHED and jobs.state_counts() == {"JOB_FINISHED": 1}
    finally:
        jobs.stop()


def test_a_job_that_left_failed_and_finishes_later_is_counted_once(registry: Registry, cache: Any) -> None:
    """A job out of the cache (FAILED) that a user moves to JOB_FINISHED leaves again at once:
    the counts move from FAILED, and state_of follows."""
    jobs, seen = cache
    force(registry, "j", S.FAILED)
    _event_to(seen, S.FAILED)
    force(registry, "j", S.JOB_FINISHED, return_code=0)
    poll_until(lambda: jobs.state_of("j") is S.JOB_FINISHED, 60, "j to be known finished")
    assert jobs.get("j") is None
    assert jobs.state_counts() == {"JOB_FINISHED": 1}


def test_an_index_whose_value_did_not_move_keeps_answering(registry: Registry, app: Any) -> None:
    """Only the indexes whose values moved are rewritten: a node index stays put across a
    state change, and a state index across a node change."""
    registry.create(make_job("j"))
    jobs = JobInformer(registry, indexers={
        "state": lambda j: (j.status.state.value,),
        "node": lambda j: tuple(j.status.placement.nodes) if j.status.placement else ()})
    jobs.start()
    try:
        force(registry, "j", S.PREPROCESSED, placement=Placement(nodes=["n1"], cpus=[0]))
        poll_until(lambda: [x.name for x in jobs.by_index("node", "n1")] == ["j"], 60, "j on n1")
        force(registry, "j", S.RUNNING)
        poll_until(lambda: jobs.index_values("state") == ["RUNNING"], 60, "j RUNNING")
        assert [x.name for x in jobs.by_index("node", "n1")] == ["j"]
        force(registry, "j", S.RUNNING, placement=Placement(nodes=["n2"], cpus=[0]))
        poll_until(lambda: jobs.index_values("node") == ["n2"], 60, "j on n2 only")
        assert [x.name for x in jobs.by_index("state", "RUNNING")] == ["j"]
        assert jobs.by_index("node", "n1") == []
        assert jobs.indexed("node", "n2") and not jobs.indexed("node", "n1") and not jobs.indexed("nodes", "n2")
    finally:
        jobs.stop()
