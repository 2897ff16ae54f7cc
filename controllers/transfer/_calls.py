"""Provider calls, made off the reconcile loop.

Submitting to Globus is a network round trip; a reconciler must not wait for it. A
reconciler asks :meth:`ProviderCalls.call` for the outcome of a call identified by a key: the
first ask starts it in a small thread pool and answers None; when it ends, the task's key is
enqueued again (``wake``) and the next ask gets the outcome. :meth:`poll` batches: every
active task of one provider that asked since the last round is polled in ONE provider call,
at most every ``provider.poll_interval`` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .providers import ProviderStatus, TransferProvider

KEEP_RESULTS_S = 300.0


class Lost:
    """The provider does not know this task id (a local provider after a restart)."""

    def __repr__(self) -> str:
        return "LOST"


LOST = Lost()
PollAnswer = ProviderStatus | Exception | Lost


@dataclass
class Outcome:
    value: Any = None
    error: Exception | None = None
    at: float = field(default_factory=time.monotonic)


@dataclass
class _PollState:
    wanted: dict[str, str] = field(default_factory=dict)  # provider task id -> task name
    in_flight: bool = False
    last_start: float = 0.0


class ProviderCalls:
    def __init__(self, workers: int = 2) -> None:
        self._workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="transfer-call")
        self._lock = threading.Lock()
        self._outcomes: dict[str, dict[Hashable, Outcome]] = {}  # task name -> key -> outcome
        self._running: set[tuple[str, Hashable]] = set()
        self._polls: dict[int, _PollState] = {}
        self._answers: dict[str, tuple[float, PollAnswer]] = {}
        self._wake: Callable[[str], None] = lambda name: None
        self.poll_calls = 0

    def set_waker(self, wake: Callable[[str], None]) -> None:
        self._wake = wake

    # --- one-off calls (submit, cancel) -------------------------------------------------

    def call(self, task: str, key: Hashable, fn: Callable[[], Any]) -> Outcome | None:
        """The outcome of call ``key`` for ``task``, starting it on the first ask."""
        with self._lock:
            out = self._outcomes.get(task, {}).get(key)
            if out is not None:
                return out
            if (task, key) in self._running:
                return None
            self._running.add((task, key))
        self._pool.submit(self._run, task, key, fn)
        return None

    def _run(self, task: str, key: Hashable, fn: Callable[[], Any]) -> None:
        try:
            out = Outcome(value=fn())
        except Exception as e:  # noqa: BLE001 - the reconciler decides what an error means
            out = Outcome(error=e)
        with self._lock:
            self._running.discard((task, key))
            self._outcomes.setdefault(task, {})[key] = out
        self._wake(task)

    def forget(self, task: str, keep: Callable[[Hashable], bool] = lambda k: False) -> None:
        """Drop ``task``'s recorded outcomes (those ``keep`` rejects)."""
        with self._lock:
            outs = self._outcomes.get(task)
            if outs:
                for k in [k for k in outs if not keep(k)]:
                    del outs[k]
                if not outs:
                    del self._outcomes[task]

    def fire(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` in the pool, ignoring its result (cancel a deleted task)."""

        def run() -> None:
            try:
                fn()
            except Exception:  # noqa: BLE001 - best effort
                pass

        self._pool.submit(run)

    # --- batched polls -----------------------------------------------------------------

    def poll(self, provider: TransferProvider, provider_task_id: str, task: str,
             interval: float) -> PollAnswer | None:
        """The newest answer about ``provider_task_id`` not yet taken, or None (a poll round
        that includes it starts when the last one is ``interval`` seconds old; ``task`` is
        woken when it ends)."""
        now = time.monotonic()
        with self._lock:
            got = self._answers.pop(provider_task_id, None)
            if got is not None:
                return got[1]
            state = self._polls.setdefault(id(provider), _PollState())
            state.wanted[provider_task_id] = task
            if state.in_flight or now - state.last_start < interval:
                return None
            state.in_flight = True
            state.last_start = now
            wanted, state.wanted = state.wanted, {}
        self._pool.submit(self._poll_round, provider, state, wanted)
        return None

    def _poll_round(self, provider: TransferProvider, state: _PollState, wanted: dict[str, str]) -> None:
        try:
            answers: dict[str, Any] = dict(provider.poll(list(wanted)))
        except Exception as e:  # noqa: BLE001 - every task of the round gets the error
            answers = {tid: e for tid in wanted}
        now = time.monotonic()
        with self._lock:
            self.poll_calls += 1
            state.in_flight = False
            for tid in wanted:
                self._answers[tid] = (now, answers.get(tid, LOST))
            for tid in [t for t, (at, _) in self._answers.items() if now - at > KEEP_RESULTS_S]:
                del self._answers[tid]
        for name in set(wanted.values()):
            self._wake(name)

    def close(self) -> None:
        """End a term: queued calls are cancelled, running ones finish on their own. The
        reconciler that owns this may lead again (a controller manager that lost its lease
        and won it back reuses reconcilers it was given): the next term gets a fresh pool,
        and calls and polls cancelled here count as not started, so they are made again."""
        with self._lock:
            pool = self._pool
            self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="transfer-call")
            self._running.clear()
            self._polls.clear()
        pool.shutdown(wait=False, cancel_futures=True)
