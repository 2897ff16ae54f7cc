"""Events: what the controllers tell ``balsamctl get events`` and ``describe``.

An Event is written for a situation that matters (docs/design.md "Conditions and Events"):
a job's condition that is a problem (``Unschedulable``, ``ParentFailed``, ``DependencyCycle``,
``RetriesExhausted``, a stalled transfer, ...) appearing or changing, and a job failing or
being retried. Plain waits (``Waiting``: parents, capacity) and the steps of the happy path
are not events — at 10^6 jobs they would be 10^6 writes for nothing a user looks for.

Repeats aggregate: one situation of one object is one Event (its name is a digest of the
object's uid, the component, reason and message) whose ``count`` grows. Events expire: each
is written under a store lease shared by every Event of a time window (a new lease every
``ttl/4`` seconds, living ``1.25 * ttl``), so an Event vanishes between ``ttl`` and
``1.25 * ttl`` after its last write, and a million jobs hold a handful of leases, not a
million timers. Writing them is best effort: a failed Event write is logged, never retried
against the step it describes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import store as st
from apis import ApiError, Event, Job, JobState, ObjectMeta, ObjectReference, Registry, Resource, utcnow

log = logging.getLogger(__name__)

#: Seconds an Event lives after its last write (``BALSAM_EVENT_TTL`` overrides it).
DEFAULT_TTL = 3600.0
TTL_ENV = "BALSAM_EVENT_TTL"
#: Condition types whose appearance is not an Event: ordinary waits.
QUIET_CONDITIONS = frozenset({"Waiting"})
#: Reasons that are Normal (the rest of the event-worthy ones are Warnings).
NORMAL_REASONS = frozenset({"Retrying", "Resumed"})
KNOWN_CAP = 10_000  # Events remembered per recorder (to count repeats without a read)


@dataclass(frozen=True, slots=True)
class PendingEvent:
    obj: Resource
    type: str
    reason: str
    message: str


def default_ttl() -> float:
    try:
        return float(os.environ.get(TTL_ENV, "") or DEFAULT_TTL)
    except ValueError:
        return DEFAULT_TTL


def job_events(old: Job, new: Job) -> list[PendingEvent]:
    """The Events a step of one job makes: problem conditions that appeared or changed, and
    a move to FAILED (unless a Failed condition set in the same step says it) or to
    RESTART_READY (a retry)."""
    out: list[PendingEvent] = []
    before = {(c.type, c.reason, c.message) for c in old.status.conditions if c.status == "True"}
    failed_said = False
    for c in new.status.conditions:
        if c.status != "True" or c.type in QUIET_CONDITIONS or (c.type, c.reason, c.message) in before:
            continue
        reason = c.reason or c.type
        out.append(PendingEvent(new, "Normal" if reason in NORMAL_REASONS else "Warning", reason, c.message))
        failed_said = failed_said or c.type == "Failed"
    s0, s1 = old.status.state, new.status.state
    if s1 != s0:
        if s1 is JobState.FAILED and not failed_said:
            out.append(PendingEvent(new, "Warning", "Failed", new.status.message))
        elif s1 is JobState.RESTART_READY:
            out.append(PendingEvent(new, "Normal", "Retrying", new.status.message))
    return out


def event_name(obj: Resource, component: str, reason: str, message: str) -> str:
    digest = hashlib.sha1(f"{obj.metadata.uid}\0{component}\0{reason}\0{message}".encode()).hexdigest()[:12]
    return f"{obj.name[:200]}.{digest}"


class EventRecorder:
    """Writes one component's Events: aggregated, under a lease per time window."""

    def __init__(self, registry: Registry, component: str, ttl: float | None = None) -> None:
        self.registry = registry
        self.component = component
        self.ttl = ttl if ttl is not None else default_ttl()
        self._lease = 0
        self._lease_renew_at = 0.0
        self._known: OrderedDict[tuple[str, str], Event] = OrderedDict()

    def _window_lease(self) -> int:
        now = time.monotonic()
        if not self._lease or now >= self._lease_renew_at:
            self._lease = self.registry.store.lease_grant(self.ttl * 1.25)
            self._lease_renew_at = now + self.ttl / 4
        return self._lease

    def record(self, events: Sequence[PendingEvent]) -> None:
        """Write these Events (repeats of known ones as count + 1), best effort."""
        if not events:
            return
        now = utcnow()
        try:
            self._write(events, now)
        except (ApiError, st.StoreError) as e:
            log.warning("events of %s not written: %s", self.component, e)

    def _write(self, events: Sequence[PendingEvent], now: datetime) -> None:
        lease = self._window_lease()
        creates: list[Event] = []
        updates: list[tuple[Event, Event]] = []
        seen: set[tuple[str, str]] = set()
        for ev in events:
            name = event_name(ev.obj, self.component, ev.reason, ev.message)
            key = (ev.obj.namespace, name)
            if key in seen:
                continue
            seen.add(key)
            old = self._known.get(key)
            if old is None:
                creates.append(self._new(ev, name, now))
            else:
                updates.append((old, self._repeat(old, now)))
        try:
            self._remember(self.registry.write(creates, updates, lease=lease))
            return
        except ApiError:
            pass  # one of them expired, or another manager wrote it: one at a time, reading first
        except st.LeaseNotFound:
            self._lease = 0
            lease = self._window_lease()
        for obj in [*creates, *(n for _, n in updates)]:
            key = (obj.namespace, obj.name)
            self._known.pop(key, None)
            try:
                cur = self.registry.try_get(Event, obj.name, obj.namespace)
                if cur is None:
                    fresh = obj.model_copy(update={"count": 1, "first_timestamp": now,
                                                   "metadata": obj.metadata.model_copy(update={"resource_version": None})})
                    self._remember(self.registry.write([fresh], [], lease=lease))
                else:
                    self._remember(self.registry.write([], [(cur, self._repeat(cur, now))], lease=lease))
            except ApiError as e:
                log.debug("event %s not written: %s", obj.name, e)

    def _remember(self, written: tuple[list[Resource], list[Resource]]) -> None:
        for obj in (*written[0], *written[1]):
            if isinstance(obj, Event):
                key = (obj.namespace, obj.name)
                self._known[key] = obj
                self._known.move_to_end(key)
        while len(self._known) > KNOWN_CAP:
            self._known.popitem(last=False)

    def _new(self, ev: PendingEvent, name: str, now: datetime) -> Event:
        o = ev.obj
        return Event(
            metadata=ObjectMeta(name=name, namespace=o.namespace),
            involved_object=ObjectReference(kind=o.KIND, name=o.name, namespace=o.namespace, uid=o.metadata.uid),
            reason=ev.reason, message=ev.message, type=ev.type,  # type: ignore[arg-type]
            count=1, first_timestamp=now, last_timestamp=now, reporting_controller=self.component,
        )

    @staticmethod
    def _repeat(old: Event, now: datetime) -> Event:
        return old.model_copy(update={"count": old.count + 1, "last_timestamp": now})
