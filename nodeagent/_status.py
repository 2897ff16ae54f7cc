"""The status writer: every job transition that became ready, in one compare-and-swap write.

Each loop turn ends with :meth:`StatusWriter.flush`: every run with unwritten steps goes out in
ONE transaction of status patches (``Registry.write_status_patches``: CAS on each job; one per
:data:`CHUNK` jobs; the job as last read or written plus the steps' status fields, no copy,
decode or validation of the whole job). Under
load, work piles up while a turn runs, so batches grow by themselves; idle, a single exit is
written at once. Results (urgent) go out within :data:`BATCH_WINDOW` of the previous job write.
A ``→ RUNNING`` with nothing after it is written only once it is :data:`START_DELAY` old, each
run on its own clock: a batch of results does not take along the runs that started a moment
ago (with 8 warm workers, 7 of them at every flush). So a job that starts and ends within
that time is written once (``→ RUNNING → RUN_DONE``); history keeps both steps, each with the
time it happened (:attr:`Step.at`), not the time of the write.

If the CAS fails (someone else wrote one of the jobs), the writer re-reads those jobs and has
the job source observe them: a job the user moved away (``FAILED``, ``RESTART_READY``,
deleted, re-bound elsewhere) has its run cancelled (process group killed, result dropped —
never written over the user's); the others are written again on their fresh versions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from apis import (
    TRANSITIONS,
    Conflict,
    HistoryEvent,
    Job,
    JobState,
    NotFound,
    Registry,
    StoreUnavailable,
)
from apis._lifecycle import HISTORY_CAP
from apis._states import check_transition

from ._run import Run

if TYPE_CHECKING:
    import store as st

if TYPE_CHECKING:
    from ._source import JobSource
    from ._supervisor import Supervisor

S = JobState


@dataclass(slots=True)
class Rider:
    """Claims (``_claims.py``) to ride in the writer's next transaction, with their fence: a
    job's end and the claim of the next job on its slot go out in one write. ``landed`` gets
    the claimed jobs as stored and the revision; ``refused``: the transaction failed on a CAS
    (the claims are not retried with it); ``unknown``: the store did not answer."""

    patches: list[tuple[Job, dict[str, Any]]]
    compares: list[st.Compare]
    landed: Callable[[list[Job], int], None]
    refused: Callable[[], None]
    unknown: Callable[[], None]

#: Largest number of jobs written in one transaction.
CHUNK = 2000
#: Results written within this long of the previous job write share its transaction (s).
BATCH_WINDOW = 0.005
#: A ``→ RUNNING`` with no result to ride along is written at most this late (s).
START_DELAY = 0.01
_FINAL = (S.RUN_DONE, S.RUN_ERROR, S.RUN_TIMEOUT)


def status_patch(run: Run, base: Job) -> dict[str, Any]:
    """The status fields the run's unwritten steps change, as a patch of ``base``'s status
    (for ``Registry.write_status_patches``: the job is not copied, decoded or validated again,
    only the status is shallow-copied and the object encoded once). The same moves, checks
    and history entries as :func:`~apis.transition`, each step at its own time (the test of
    the status writer holds it to a whole-job update made with ``transition``)."""
    st = base.status
    state = st.state
    history = list(st.history)
    f: dict[str, Any] = {}
    for step in run.steps:
        to = step.to
        if to not in TRANSITIONS[state]:
            check_transition(state, to)  # raises IllegalTransition, as transition() does
        history.append(HistoryEvent(from_state=state, to_state=to, time=step.at, message=step.message))  # type: ignore[call-arg]  # alias 'from'/'to'
        state = to
        f["message"] = step.message
        if to is S.RUNNING:
            f["start_time"] = step.at
            f["attempts"] = f.get("attempts", st.attempts) + 1
            f["return_code"] = f["output_tail"] = f["result"] = f["exception"] = f["exception_data"] = None
        elif to in _FINAL:
            f["end_time"] = step.at
            f["return_code"] = step.return_code
            f["output_tail"] = step.output_tail
            if step.result is not None:
                f["result"] = step.result.get("result")
                f["exception"] = step.result.get("exception")
                f["exception_data"] = step.result.get("exceptionData")
        elif to is S.RESTART_READY:
            f["placement"] = None
    if len(history) > HISTORY_CAP:
        del history[: len(history) - HISTORY_CAP]
    f["state"] = state
    f["history"] = history
    return f


class StatusWriter:
    def __init__(self, registry: Registry, log: logging.Logger) -> None:
        self.registry = registry
        self.log = log
        self.source: JobSource  # set by the agent once all parts exist
        self.supervisor: Supervisor
        self.dirty: dict[str, Run] = {}
        self.last_revision = 0  # of our last job write (a claim window's ack names it: _claims.py)
        self.rider: Rider | None = None  # claims for the next transaction: it goes out at once
        #: Asked, before a write, for claims of the children its ends make ready (``_claims.py``,
        #: :meth:`Claimer.follow`): they ride in the same transaction (None: claims off).
        self.follow: Callable[[list[tuple[Job, dict[str, Any]]]], Rider | None] | None = None
        self._fresh: dict[str, float] = {}  # dirty runs whose only steps are → RUNNING: since when
        self.start_delay = START_DELAY
        self._urgent_since: float | None = None
        self._start_since: float | None = None
        self._last_write = 0.0
        self.stats = {"job_writes": 0, "job_txns": 0, "conflicts": 0}

    def mark(self, run: Run, urgent: bool) -> None:
        """``run`` has steps to write; ``urgent``: one of them is a result."""
        self.dirty[run.name] = run
        now = time.monotonic()
        if urgent:
            self._fresh.pop(run.name, None)
            if self._urgent_since is None:
                self._urgent_since = now
        else:
            self._fresh.setdefault(run.name, now)
            if self._start_since is None:
                self._start_since = now

    def forget(self, run: Run) -> None:
        self.dirty.pop(run.name, None)
        self._fresh.pop(run.name, None)
        run.steps.clear()

    def due(self, *, stopping: bool, retry_at: float, others_running: bool = True) -> float | None:
        """When the pending job writes should go out (monotonic time), None if there are none.
        ``others_running``: jobs run, start or wait here whose results could share the write;
        when none does, a result goes out at once (a DAG's next job waits on it)."""
        if not self.dirty:
            return None
        if stopping:
            return retry_at
        if self._urgent_since is not None:
            due = max(self._urgent_since, self._last_write + BATCH_WINDOW) if others_running else self._urgent_since
        else:
            due = (self._start_since or 0.0) + self.start_delay
        return max(due, retry_at)

    def flush(self, *, stopping: bool, retry_at: float, others_running: bool = True) -> bool:
        """Write every ready step of every job; False if the store refused (back off)."""
        due = self.due(stopping=stopping, retry_at=retry_at, others_running=others_running)
        if self.rider is not None:
            due = time.monotonic()  # claims wait for nothing: the ready steps ride with them
        elif due is None or due > time.monotonic():
            return True
        # A run whose → RUNNING is younger than START_DELAY stays for later: its result may
        # still come in time to share one write with it.
        ripe = time.monotonic() - self.start_delay
        fresh = self._fresh
        runs = [r for r in self.dirty.values() if stopping or fresh.get(r.name, 0.0) <= ripe]
        ok = True
        for i in range(0, max(1, len(runs)), CHUNK):
            ok = self._write(runs[i : i + CHUNK], stopping) and ok
        self._last_write = time.monotonic()
        if not self.dirty:
            self._urgent_since = self._start_since = None
        else:
            left = [t for n, t in fresh.items() if n in self.dirty]
            self._start_since = min(left) if left else None
            if len(left) == len(self.dirty):  # every result went out: only fresh starts wait
                self._urgent_since = None
            elif self._urgent_since is None:  # refused or conflicting: the rest is still due
                self._urgent_since = time.monotonic()
        return ok

    def _write(self, runs: list[Run], stopping: bool) -> bool:
        starts = self._fresh
        for _attempt in range(5):
            runs = [r for r in runs if self.dirty.get(r.name) is r and r.steps]
            rider, self.rider = self.rider, None
            if not runs and rider is None:
                return True
            patches = [(r.snapshot, status_patch(r, r.snapshot)) for r in runs]
            if rider is None and _attempt == 0 and not stopping and self.follow is not None and patches:
                rider = self.follow(patches)  # refused, the ends are written again without it
            written: list[Job] = []
            try:
                if rider is None:
                    rev = self.registry.write_status_patches(patches, written=written)
                else:
                    rev = self.registry.write_status_patches([*patches, *rider.patches], written=written,
                                                             compares=rider.compares)
            except (Conflict, NotFound):
                if rider is not None:
                    rider.refused()  # ours again alone: the conflict may have been a claim's
                    continue
                self.stats["conflicts"] += 1
                try:
                    fresh = self.source.read([r.name for r in runs])
                except StoreUnavailable:
                    return False
                for name, job in fresh:
                    self.source.observe(name, job, stopping=stopping)
                continue
            except StoreUnavailable as e:
                if rider is not None:
                    rider.unknown()
                self.log.warning("writing %d job(s) failed: %s; will retry", len(runs), e)
                return False
            if rider is not None:
                rider.landed(written[len(runs):], rev)
                del written[len(runs):]
                if not runs:
                    self.last_revision = max(self.last_revision, rev)
                    return True
            self.stats["job_txns"] += 1
            self.stats["job_writes"] += len(runs)
            self.last_revision = max(self.last_revision, rev)
            for r, new in zip(runs, written, strict=True):
                r.snapshot = new
                if any(s.to is S.RUNNING for s in r.steps):
                    r.started = True
                    r.attempt = new.status.attempts
                r.steps.clear()
                del self.dirty[r.name]
                starts.pop(r.name, None)
                if r.finished:
                    self.supervisor.forget(r)
            return True
        return False  # still conflicting after retries: again a little later
