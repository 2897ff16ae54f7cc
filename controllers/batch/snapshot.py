"""One ``status`` call for every active BatchJob of a scheduler, shared by their reconciles.

The BatchJob reconciler looks at one BatchJob per request, but asks the scheduler about all
of them at once: the first reconcile after ``ttl`` seconds calls ``plugin.status`` with the
ids of every queued/running/pending_deletion BatchJob of that plugin, and the reconciles
that follow within ``ttl`` read that answer. A failure is cached the same way, so a hung
``squeue`` costs one timeout per ``ttl``, not one per BatchJob.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .scheduler import JobInfo, SchedulerError, SchedulerPlugin


@dataclass
class _Snap:
    at: float
    asked: frozenset[str]
    infos: dict[str, JobInfo]
    error: SchedulerError | None


class StatusSnapshots:
    def __init__(self, ttl: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._snaps: dict[int, _Snap] = {}
        self._lock = threading.Lock()
        self.calls = 0

    def lookup(self, plugin: SchedulerPlugin, scheduler_id: str, active_ids: Iterable[str]) -> JobInfo | None:
        """The scheduler's view of ``scheduler_id`` (None: the scheduler does not know it),
        from a snapshot at most ``ttl`` old; SchedulerError if the last call failed."""
        with self._lock:
            snap = self._snaps.get(id(plugin))
            fresh = snap is not None and self.clock() - snap.at < self.ttl and scheduler_id in snap.asked
            if not fresh:
                ids = frozenset({scheduler_id, *active_ids})
                self.calls += 1
                try:
                    snap = _Snap(0.0, ids, plugin.status(sorted(ids)), None)
                except SchedulerError as e:
                    snap = _Snap(0.0, ids, {}, e)
                snap.at = self.clock()
                self._snaps[id(plugin)] = snap
            assert snap is not None
            if snap.error is not None:
                raise snap.error
            return snap.infos.get(scheduler_id)

    def invalidate(self, plugin: SchedulerPlugin) -> None:
        with self._lock:
            self._snaps.pop(id(plugin), None)
