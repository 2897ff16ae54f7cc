"""The lease keeper: the agent's store lease, kept alive on a thread of its own, and the
guardian that fences our jobs by it (``_fence.py``, docs/design.md "One live run of a job").

* The lease is renewed every ``ttl / 3`` s (every ``ttl / 10`` s after a failed renewal).
  Each successful renewal tells the guardian the moment until which the store surely cannot
  expire it (the request was sent after ``deadline - ttl``); the guardian SIGKILLs our jobs
  ``fence_margin`` before that moment if no renewal moves it (a SIGSTOPped agent, a store out
  of reach), so no job outlives the Node that claims it.
* A renewal answered "lease not found" posts :class:`LeaseLost`: the loop registers again.
* The thread also watches who supervises the agent (an allocation's runner) and the guardian
  itself; when either is gone it posts :class:`Stop`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

import store as st

from ._fence import Guardian, runner_gone
from ._messages import LeaseLost, Post, Stop


class LeaseKeeper:
    def __init__(self, store: st.Store, ttl: float, post: Post, log: logging.Logger, *,
                 supervisor: tuple[int, str] | None = None, stopping: Callable[[], bool] = lambda: False) -> None:
        self.store = store
        self.ttl = float(ttl)
        self.post = post
        self.log = log
        # (pid, start ticks) of the process that supervises this agent (an allocation's
        # runner): when it is gone, nobody would stop us at the allocation's end, so we stop.
        self.supervisor = supervisor
        self.stopping = stopping
        # The guardian kills our jobs this long before the lease could expire unrenewed.
        self.fence_margin = min(1.0, 0.1 * self.ttl)
        self.guardian: Guardian | None = None
        self.lease = 0
        self.deadline = 0.0  # time.monotonic() until which our lease is surely valid
        self.fenced_at = 0.0  # when the guardian last killed our jobs (a late renewal)

    def open(self) -> None:
        """Start the guardian (the first lease is taken with :meth:`grant`)."""
        if self.guardian is None:
            self.guardian = Guardian(self.fence_margin)

    def grant(self) -> None:
        sent = time.monotonic()
        self.lease = self.store.lease_grant(self.ttl)
        self._valid_until(sent + self.ttl)

    def _valid_until(self, deadline: float) -> None:
        fence_at = self.deadline - self.fence_margin
        if self.deadline and time.monotonic() >= fence_at:
            self.fenced_at = fence_at  # renewed too late: the guardian killed our jobs then
        self.deadline = deadline
        if self.guardian is not None:
            self.guardian.lease_until(deadline)

    # --- the guardian's view of our job processes ------------------------------------

    def guard(self, pgid: int) -> None:
        """``pgid`` is a job's process group: kill it if the lease could expire under it."""
        if self.guardian is not None:
            self.guardian.add(pgid)

    def unguard(self, pgid: int) -> None:
        """``pgid`` was reaped; the guardian hears of it with the loop turn's :meth:`flush_guard`."""
        if self.guardian is not None:
            self.guardian.remove_later(pgid)

    def flush_guard(self) -> None:
        if self.guardian is not None:
            self.guardian.flush_removals()

    def killed_by_guardian(self, spawned_at: float) -> bool:
        """Whether a SIGKILL we did not send to a run started at ``spawned_at`` was the
        guardian's (its lease ran out before a renewal, or is about to)."""
        return spawned_at <= self.fenced_at or time.monotonic() >= self.deadline - self.fence_margin

    def supervision_lost(self) -> str:
        """Why this agent must stop on its own, or "": its runner or its guardian is gone."""
        gone = runner_gone(self.supervisor)
        if gone:
            return gone
        if self.guardian is not None and not self.guardian.alive():
            return "stopped: its job guardian is gone (its jobs would outlive it unsupervised)"
        return ""

    # --- the keepalive thread -----------------------------------------------------------

    def keep_alive(self, closed: threading.Event) -> None:
        """The thread's body: renew until ``closed`` is set."""
        interval = max(0.05, self.ttl / 3)
        while not closed.wait(interval):
            lost = self.supervision_lost()
            if lost and not self.stopping():
                self.post(Stop(lost))
            lease = self.lease
            try:
                sent = time.monotonic()
                self.store.lease_keepalive(lease)
                if lease == self.lease:
                    self._valid_until(sent + self.ttl)
                interval = max(0.05, self.ttl / 3)
            except st.LeaseNotFound:
                if not closed.is_set() and lease == self.lease:
                    self.post(LeaseLost(lease))
                interval = max(0.05, self.ttl / 3)
            except Exception as e:  # noqa: BLE001 - store hiccup: try again soon
                if closed.is_set():
                    return
                self.log.warning("lease keepalive failed: %s", e)
                interval = max(0.05, self.ttl / 10)

    def revoke(self) -> None:
        """Give the lease back (deletes the Node and its index keys)."""
        if not self.lease:
            return
        try:
            self.store.lease_revoke(self.lease)
        except st.LeaseNotFound:
            pass
        except Exception as e:  # noqa: BLE001
            self.log.warning("could not revoke lease %d: %s", self.lease, e)

    def give_up(self) -> None:
        """Registration failed: revoke quietly and forget the lease."""
        with contextlib.suppress(Exception):
            self.store.lease_revoke(self.lease)
        self.lease = 0

    def close(self) -> None:
        if self.guardian is not None:
            self.guardian.close()  # kills what is left of our jobs, if anything
