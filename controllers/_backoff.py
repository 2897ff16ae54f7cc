"""Waiting out a store outage: exponential backoff and one log line per outage.

Every long-running loop of the controller manager (leader election, informers) and ``up``
meets an unreachable store (etcd down) or an unwritable one (a full disk under SQLite) the
same way: it waits 0.1 s doubling to 5 s between tries, says once what it waits for, and
once that the store answers again. No traceback, no exit.
"""

from __future__ import annotations

import logging
import threading
import time

import store as st
from apis import StoreUnavailable

log = logging.getLogger(__name__)

MAX_BACKOFF = 5.0

#: What an unreachable or unwritable store raises through the raw store or the registry.
STORE_TROUBLE = (st.Unavailable, st.WatchClosed, StoreUnavailable)


class Backoff:
    """Exponential waits (0.1 s doubling to MAX_BACKOFF) and one log line per outage."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.delay = 0.0
        self.failing_since: float | None = None

    def failed(self, error: BaseException, stop: threading.Event) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            log.warning("%s: store unavailable (%s); retrying with backoff", self.what, error)
        self.delay = min(MAX_BACKOFF, max(0.1, self.delay * 2))
        stop.wait(self.delay)

    def ok(self) -> None:
        if self.failing_since is not None:
            log.warning("%s: store reachable again after %.1fs", self.what, time.monotonic() - self.failing_since)
        self.failing_since = None
        self.delay = 0.0
