"""Events: what makes one, repeats counted on one Event, and expiry through the shared
window lease (a short TTL, polled for — no sleep decides)."""

from __future__ import annotations

from apis import Event, Job, JobState, Registry, set_condition, transition
from apis._registry import WatchEvent
from controllers._events import EventRecorder, PendingEvent, job_events
from tests._deadline import DEADLINE
from tests._support import poll_until

from .conftest import make_job


def made(registry: Registry, name: str = "j") -> Job:
    return registry.create(make_job(name))


def test_only_problems_and_failures_make_events(registry, app):
    old = made(registry)
    new = old.status_copy()
    set_condition(new.status.conditions, "Waiting", "True", "WaitingForCapacity", "needs 4 idle CPUs")
    assert job_events(old, new) == []  # plain waits are not events
    set_condition(new.status.conditions, "Unschedulable", "True", "NeverFits", "needs 64 CPUs per node")
    [ev] = job_events(old, new)
    assert (ev.type, ev.reason, ev.message) == ("Warning", "NeverFits", "needs 64 CPUs per node")
    assert job_events(new, new) == []  # unchanged: nothing new to say
    failing = new.status_copy()
    transition(failing, JobState.FAILED, "gave up")
    assert [(e.type, e.reason) for e in job_events(new, failing)] == [("Warning", "Failed")]


def test_repeats_aggregate_into_one_event_with_a_count(registry, app):
    job = made(registry)
    rec = EventRecorder(registry, "placement", ttl=600)
    pending = [PendingEvent(job, "Warning", "NeverFits", "needs 64 CPUs per node")]
    rec.record(pending)
    rec.record(pending)
    rec.record(pending)
    [ev] = registry.list(Event)[0]
    assert ev.count == 3 and ev.reporting_controller == "placement"
    assert ev.involved_object.name == "j" and ev.involved_object.uid == job.metadata.uid
    assert ev.first_timestamp is not None and ev.last_timestamp is not None
    assert ev.last_timestamp >= ev.first_timestamp
    # Another recorder (a new controller manager) knows nothing of it: it reads and counts on.
    EventRecorder(registry, "placement", ttl=600).record(pending)
    [ev] = registry.list(Event)[0]
    assert ev.count == 4


def test_events_expire_after_their_ttl(registry, app):
    job = made(registry)
    rec = EventRecorder(registry, "dependency", ttl=1.0)
    # Followed through a watch, not by listing: with a 1 s TTL a test thread descheduled for
    # a second would list only after the expiry.
    w = registry.watch(Event, start_revision=registry.store.current_revision() + 1)
    seen: list[WatchEvent[Event]] = []

    def changes(n: int) -> bool:
        seen.extend(w.poll(0.2))
        return len(seen) >= n

    try:
        rec.record([PendingEvent(job, "Warning", "ParentFailed", "parent job p failed")])
        poll_until(lambda: changes(2), DEADLINE, "the event to be made, then to expire")
        assert [e.type for e in seen[:2]] == ["ADDED", "DELETED"]
        assert not registry.list(Event)[0]
        # A later repeat (its lease gone with it) makes it again, count 1.
        rec.record([PendingEvent(job, "Warning", "ParentFailed", "parent job p failed")])
        poll_until(lambda: changes(3), DEADLINE, "the event to be made again")
        assert seen[2].type == "ADDED" and seen[2].object.count == 1
    finally:
        w.close()
    assert registry.get(Job, "j").status.state is JobState.CREATED  # the job itself never expires
