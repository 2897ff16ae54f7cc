"""The Job informer: live jobs in full, terminal jobs out of the cache, counts by state.

A controller manager over 10^6 jobs mostly holds finished ones, which no reconciler changes:
the dependency reconciler only asks a finished parent's *state*; placement, hooks and
transfers never look at them. So a job that reaches JOB_FINISHED or FAILED leaves the cache
once its event has reached the handlers (they still see the transition), and at start-up a
terminal job's stored bytes are only peeked at (``apis._codec.stored_job_state``), never
decoded into a model.

What remains per terminal job is the reflector's key -> revision entry (which it needs to
relist without repeats) and, for FAILED jobs only, the name in a set, so that

* ``state_of(name)`` answers JOB_FINISHED / FAILED for a job that left the cache without
  reading the store (a dependent created after its parent finished still starts), and
* ``state_counts()`` stays exact as jobs change, incrementally (no scan).

``get``, ``describe`` and the Python client read the store, so they still see every job.

A job's last event (the node agent's write that finishes it) is not decoded either: the job
leaves the cache right after its handlers, and they read only what decides (its state, name,
spec, labels). When the stored bytes show a terminal state and the same generation, labels,
annotations and no deletion, the handlers receive the cached job with that state and the
event's revision (``_decode_fast``: one orjson parse, ~1/10 of a pydantic decode); its
other status fields (history, return code) are the previous version's, and nothing keeps it.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any

import store as st
from apis import TERMINAL, Job, JobState, Registry
from apis._codec import shallow_copy, stored_job_head, stored_job_state

from ._informer import Indexer, Informer

_TERMINAL_VALUES = frozenset(s.value for s in TERMINAL)
#: stored value -> member: a dict lookup, not ``JobState(value)`` (EnumMeta.__call__, ~7x dearer)
_STATE_OF: dict[str, JobState] = {s.value: s for s in JobState}
_FAILED = JobState.FAILED.value
_FINISHED = JobState.JOB_FINISHED.value
_FINISHED_BYTES = b'"JOB_FINISHED"'
_FAILED_BYTES = b'"FAILED"'


def is_terminal(job: Job) -> bool:
    return job.status.state in TERMINAL


class JobInformer(Informer[Job]):
    def __init__(self, registry: Registry, namespace: str = "default",
                 indexers: dict[str, Indexer[Job]] | None = None) -> None:
        super().__init__(registry, Job, namespace, indexers, evict=is_terminal, peek_evict=self._peek_terminal)
        self._counts: Counter[str] = Counter()
        self._failed: set[str] = set()  # FAILED jobs that left the cache
        self._peek = threading.local()

    # --- start-up: peek, do not decode ------------------------------------------------

    def _peek_terminal(self, value: bytes) -> bool:
        state = stored_job_state(value)
        self._peek.state = state
        return state in _TERMINAL_VALUES

    def _peeked(self, kv: st.KeyValue) -> None:
        state: str = self._peek.state
        name = kv.key[self._prefix_len:]
        with self._lock:
            self._counts[state] += 1
            if state == _FAILED:
                self._failed.add(name)

    # --- a job's last event: no decode --------------------------------------------------

    def _decode_fast(self, name: str, kv: st.KeyValue) -> Job | None:
        old = self._items.get(name)
        if old is None or not (_FINISHED_BYTES in kv.value or _FAILED_BYTES in kv.value):
            return None  # (a byte search rules out most events before any parse)
        state, meta = stored_job_head(kv.value)
        if state not in _TERMINAL_VALUES:
            return None
        md = old.metadata
        if (meta.get("generation", 0) != md.generation or meta.get("labels", {}) != md.labels
                or meta.get("annotations", {}) != md.annotations or "deletionTimestamp" in meta
                or meta.get("finalizers", []) != md.finalizers):
            return None  # more than the state moved: decode it
        status = shallow_copy(old.status, {"state": _STATE_OF[state]})
        metadata = shallow_copy(md, {"resource_version": str(kv.mod_revision)})
        return shallow_copy(old, {"status": status, "metadata": metadata})

    # --- accounting -------------------------------------------------------------------

    def _evicted_state(self, name: str) -> str:
        return _FAILED if name in self._failed else _FINISHED

    def _account(self, name: str, old: Job | None, new: Job | None, existed: bool) -> None:
        # (A JobState is a StrEnum: a member is its value as a dict key, so the counts take
        # members as they are, without the enum's slow ``.value`` property, ~0.5 µs a read.)
        counts = self._counts
        if old is not None:
            before: str | None = old.status.state
        elif existed:
            before = self._evicted_state(name)
            self._failed.discard(name)
        else:
            before = None
        if before is not None:
            counts[before] -= 1
            if counts[before] <= 0:
                del counts[before]
        if new is not None:
            counts[new.status.state] += 1

    def _evicted(self, name: str, obj: Job) -> None:
        if obj.status.state is JobState.FAILED:
            self._failed.add(name)

    def _evicted_deleted(self, name: str, prev: st.KeyValue | None) -> None:
        state = stored_job_state(prev.value) if prev is not None and prev.value else None
        state = state or self._evicted_state(name)
        self._failed.discard(name)
        self._counts[state] -= 1
        if self._counts[state] <= 0:
            del self._counts[state]

    # --- reads ------------------------------------------------------------------------

    def state_of(self, name: str) -> JobState | None:
        """The job's state: from the cache for a live job, JOB_FINISHED / FAILED for one that
        left it, None when the store has no such job (as far as this informer has seen)."""
        job = self._items.get(name)
        if job is not None:
            return job.status.state
        if self.is_evicted(name):
            return _STATE_OF[self._evicted_state(name)]
        return None

    def state_counts(self) -> dict[str, int]:
        """How many jobs are in each state (every job of the namespace, live or not)."""
        with self._lock:
            return {str(k): v for k, v in self._counts.items()}


def crossed_an_end(old: Job | None, new: Job | None) -> bool:
    """Whether a job's event moves it across an end: it reached one, vanished, or left one (a
    user's retry). Its children's fate may change with it."""
    if new is None:
        return old is not None
    if old is not None and old.status.state == new.status.state:
        return False
    return new.status.state in TERMINAL or (old is not None and old.status.state in TERMINAL)


def job_state(jobs: Informer[Any], name: str) -> JobState | None:
    """``name``'s state from a Job cache: a :class:`JobInformer` answers for jobs that left
    it too; a plain informer only for those it holds."""
    if isinstance(jobs, JobInformer):
        return jobs.state_of(name)
    job = jobs.get(name)
    return None if job is None else job.status.state  # type: ignore[no-any-return]


def jobs_of_app(jobs: Informer[Any], app: str, states: Iterable[JobState]) -> list[Job]:
    """The cached jobs in ``states`` that run ``app`` (an App that changes may change what
    their next steps are)."""
    return [j for s in states for j in jobs.by_index("state", s.value) if j.spec.app == app]
