"""``Job.objects.filter(...).watch()``: typed ADDED / MODIFIED / DELETED events of a query, resumable
from a revision, on both store backends."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

import apis
from apis import BadRequest, Job, JobState, WatchEvent
from tests._deadline import DEADLINE
from tests.apis.conftest import Backend


def _job(backend: Backend, name: str, run: str) -> Job:
    return backend.registry.create(Job(name=name, namespace=backend.namespace, app_id="echo", workdir=name,
                                       parameters={"x": "1"}, tags={"run": run}))


def _take(events: Iterator[WatchEvent[Job]], n: int) -> list[tuple[str, str]]:
    """The next ``n`` events as (type, name)."""
    out = []
    for ev in events:
        out.append((ev.type, ev.object.name))
        if len(out) == n:
            return out
    raise AssertionError(f"the watch ended after {out}")


@pytest.fixture
def mgr(backend: Backend) -> apis.Manager[Job]:
    backend.app()
    return Job.objects.using(backend.registry, namespace=backend.namespace)


def test_a_watch_lists_then_follows_changes_of_the_query(backend: Backend, mgr: apis.Manager[Job]) -> None:
    _job(backend, "a", "1")
    _job(backend, "other", "2")
    stream = mgr.filter(tags={"run": "1"}).watch(timeout=DEADLINE)
    assert _take(stream, 1) == [("ADDED", "a")]
    _job(backend, "b", "1")
    _job(backend, "c", "2")  # not in the query: never shown
    backend.registry.mutate(Job, "a", lambda j: apis.transition(j, JobState.AWAITING_PARENTS), backend.namespace)
    backend.registry.delete(Job, "b", backend.namespace)
    assert _take(stream, 3) == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    stream.close()


def test_events_are_typed_objects_that_remember_their_client(backend: Backend, mgr: apis.Manager[Job]) -> None:
    stream = mgr.all().watch(timeout=DEADLINE)
    _job(backend, "a", "1")
    ev = next(stream)
    assert isinstance(ev.object, Job) and ev.object.state == JobState.CREATED
    assert ev.revision == int(ev.object.metadata.resource_version or 0)
    ev.object.data = {"k": 1}
    ev.object.save()  # through the watch's store, outside any using() block
    assert backend.registry.get(Job, "a", backend.namespace).spec.data == {"k": 1}
    stream.close()


def test_an_object_leaving_or_entering_the_query_is_deleted_or_added(backend: Backend,
                                                                     mgr: apis.Manager[Job]) -> None:
    _job(backend, "a", "1")
    stream = mgr.filter(tags={"run": "1"}).watch(timeout=DEADLINE)
    assert _take(stream, 1) == [("ADDED", "a")]
    backend.registry.mutate(Job, "a", lambda j: j.metadata.labels.update(run="2"), backend.namespace)
    backend.registry.mutate(Job, "a", lambda j: j.metadata.labels.update(run="1"), backend.namespace)
    assert _take(stream, 2) == [("DELETED", "a"), ("ADDED", "a")]
    stream.close()


def test_a_watch_resumes_after_a_revision(backend: Backend, mgr: apis.Manager[Job]) -> None:
    _job(backend, "a", "1")
    stream = mgr.all().watch(timeout=DEADLINE)
    first = next(stream)
    stream.close()
    # changes made while nobody watched
    _job(backend, "b", "1")
    backend.registry.mutate(Job, "a", lambda j: apis.transition(j, JobState.AWAITING_PARENTS), backend.namespace)
    resumed = mgr.all().watch(resource_version=first.revision, timeout=DEADLINE)
    assert _take(resumed, 2) == [("ADDED", "b"), ("MODIFIED", "a")]
    resumed.close()


def test_a_watch_ends_when_stop_is_set(backend: Backend, mgr: apis.Manager[Job]) -> None:
    stop = threading.Event()
    seen: list[str] = []
    t = threading.Thread(target=lambda: seen.extend(e.type for e in mgr.all().watch(stop=stop)), daemon=True)
    t.start()
    _job(backend, "a", "1")
    deadline = time.monotonic() + DEADLINE
    while not seen and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    t.join(DEADLINE)
    assert not t.is_alive() and seen == ["ADDED"]


def test_a_watch_relists_after_a_compaction(backend: Backend, mgr: apis.Manager[Job]) -> None:
    _job(backend, "a", "1")
    _job(backend, "b", "1")
    first = next(mgr.all().watch(timeout=DEADLINE))
    backend.registry.delete(Job, "b", backend.namespace)
    _job(backend, "c", "1")
    backend.registry.store.compact(backend.registry.store.current_revision())
    resumed = mgr.all().watch(resource_version=first.revision, timeout=DEADLINE)
    got = set(_take(resumed, 2))
    resumed.close()
    # "b" was never shown to this stream: only what the store holds now is reported
    assert ("ADDED", "c") in got


@pytest.mark.parametrize("rv", ["abc", -1])
def test_a_bad_resource_version_is_refused(mgr: apis.Manager[Job], rv: object) -> None:
    with pytest.raises(BadRequest, match="resource_version"):
        mgr.all().watch(resource_version=rv)  # type: ignore[arg-type]


def test_a_sliced_query_cannot_be_watched(mgr: apis.Manager[Job]) -> None:
    with pytest.raises(BadRequest, match="sliced"):
        mgr.all()[:3].watch()


def test_a_resumed_watch_reports_deletions_of_matching_objects_it_never_showed(
        backend: Backend, mgr: apis.Manager[Job]) -> None:
    """``watch(resource_version=N)`` lists nothing, so the objects it must report DELETED are
    known only from the store's previous value of each deleted key (etcd's prev_kv)."""
    _job(backend, "a", "1")
    _job(backend, "b", "1")
    _job(backend, "other", "2")
    rv = backend.registry.store.current_revision()
    backend.registry.delete(Job, "other", backend.namespace)  # deleted, but never in the query
    backend.registry.delete(Job, "a", backend.namespace)
    _job(backend, "c", "1")
    backend.registry.delete(Job, "c", backend.namespace)  # made and deleted after N: shown both ways
    resumed = mgr.filter(tags={"run": "1"}).watch(resource_version=rv, timeout=DEADLINE)
    assert _take(resumed, 3) == [("DELETED", "a"), ("ADDED", "c"), ("DELETED", "c")]
    backend.registry.delete(Job, "b", backend.namespace)  # after the watch began, too
    ev = next(resumed)
    assert (ev.type, ev.object.name, ev.object.metadata.labels) == ("DELETED", "b", {"run": "1"})
    resumed.close()
