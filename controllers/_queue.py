"""A rate-limited work queue with client-go's guarantees.

* A key is never handed to two workers at once: a key added while it is being processed
  is parked and handed out again after ``done``.
* Repeated adds of a waiting key collapse into one.
* ``add_rate_limited`` requeues with per-key exponential backoff (5 ms doubling to
  1,000 s, reset by ``forget``); ``add_after`` requeues at a time.
* ``get_batch`` hands out up to ``n`` ready keys at once so a controller can write their
  steps in one store transaction.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

BASE_DELAY = 0.005
MAX_DELAY = 1000.0


class ShutDown(Exception):
    """The queue was shut down."""


class WorkQueue(Generic[K]):
    def __init__(self, base_delay: float = BASE_DELAY, max_delay: float = MAX_DELAY) -> None:
        self._cond = threading.Condition()
        self._queue: dict[K, None] = {}  # insertion-ordered set of ready keys
        self._dirty: set[K] = set()  # keys waiting (in _queue, or parked while processing)
        self._processing: set[K] = set()
        self._delayed: list[tuple[float, int, K]] = []  # (ready_at, seq, key) heap
        self._delayed_at: dict[K, float] = {}
        self._seq = itertools.count()
        self._failures: dict[K, int] = {}
        self._base = base_delay
        self._max = max_delay
        self._shutdown = False

    # --- adding ------------------------------------------------------------------

    def add(self, key: K) -> None:
        if key in self._dirty:
            # Already waiting (queued, or parked while processing): nothing to do, and no lock.
            # Safe without it: the key leaves ``_dirty`` only when a worker takes it, after
            # this caller's change was made, so that worker sees the change.
            return
        with self._cond:
            self._add_locked(key)

    def add_many(self, keys: list[K]) -> None:
        with self._cond:
            for k in keys:
                self._add_locked(k)

    def _add_locked(self, key: K) -> None:
        if self._shutdown or key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return  # handed out again by done()
        self._queue[key] = None
        self._cond.notify()

    def add_after(self, key: K, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            if self._shutdown:
                return
            at = time.monotonic() + delay
            prev = self._delayed_at.get(key)
            if prev is not None and prev <= at:
                return  # an earlier wake-up is already scheduled
            self._delayed_at[key] = at
            heapq.heappush(self._delayed, (at, next(self._seq), key))
            self._cond.notify()

    def add_rate_limited(self, key: K) -> float:
        """Requeue after this key's next backoff delay; returns the delay."""
        with self._cond:
            n = self._failures.get(key, 0)
            self._failures[key] = n + 1
        delay = min(self._base * (2**n), self._max)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        with self._cond:
            self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        with self._cond:
            return self._failures.get(key, 0)

    # --- taking ------------------------------------------------------------------

    def _promote_delayed_locked(self, now: float) -> float | None:
        """Move due delayed keys to the queue; returns seconds to the next due one."""
        while self._delayed:
            at, _, key = self._delayed[0]
            if self._delayed_at.get(key) != at:
                heapq.heappop(self._delayed)  # superseded entry
                continue
            if at > now:
                return at - now
            heapq.heappop(self._delayed)
            del self._delayed_at[key]
            self._add_locked(key)
        return None

    def get_batch(self, n: int = 1, timeout: float | None = None) -> list[K]:
        """Up to ``n`` ready keys (marked processing), waiting at most ``timeout``
        seconds for the first one. Raises ShutDown once shut down and drained."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                now = time.monotonic()
                next_due = self._promote_delayed_locked(now)
                if self._queue:
                    out: list[K] = []
                    for key in itertools.islice(self._queue, n):
                        out.append(key)
                    for key in out:
                        del self._queue[key]
                        self._dirty.discard(key)
                        self._processing.add(key)
                    return out
                if self._shutdown:
                    raise ShutDown()
                wait = next_due
                if deadline is not None:
                    left = deadline - now
                    if left <= 0:
                        return []
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)

    def done(self, key: K) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._queue[key] = None
                self._cond.notify()

    # --- state -------------------------------------------------------------------

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)

    def idle(self) -> bool:
        """Nothing ready and nothing being processed (delayed keys may still wait)."""
        with self._cond:
            return not self._queue and not self._processing

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()
