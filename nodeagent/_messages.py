"""What the agent's parts tell its loop: typed messages on one queue, handled by ``match``.

Threads (store watches, the lease keeper, spawners, the reaper, the Python worker pool) never
touch the loop's state; they put one of these on the loop's queue. The loop drains the queue
each turn and dispatches on the message's type (``NodeAgent._handle``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apis import JobState
from apis._windows import Window

from ._run import Process, Run


@dataclass(frozen=True, slots=True)
class JobsChanged:
    """Store events under this node's ``boundnode`` index: ``(PUT|DELETE, job name)``."""

    events: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class AppsChanged:
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Resync:
    """List every job bound here again (at start, after a lost watch, a new lease)."""


@dataclass(frozen=True, slots=True)
class AllocationChanged:
    """Our BatchJob's key changed: is the allocation over?"""


@dataclass(frozen=True, slots=True)
class LeaseLost:
    lease: int


@dataclass(frozen=True, slots=True)
class Stop:
    reason: str


@dataclass(frozen=True, slots=True)
class Spawned:
    """The run's process is started (queued before any :class:`Exited` of it)."""

    run: Run
    proc: Process


@dataclass(frozen=True, slots=True)
class SpawnFailed:
    run: Run
    to: JobState  # FAILED (never ran: template, App) or RUN_ERROR (could not start)
    message: str


@dataclass(frozen=True, slots=True)
class SpawnSkipped:
    """Cancelled before it was started: nothing ran."""

    run: Run


@dataclass(frozen=True, slots=True)
class SpawnDeferred:
    """The machine (full disk, no fds...) kept it from starting: try again later."""

    run: Run
    message: str


@dataclass(frozen=True, slots=True)
class Exited:
    """The process ``pid`` ended with ``code`` (negative: killed by that signal), or, for a
    warm Python worker, the job it ran ended (``died`` says whether the worker died with it)."""

    pid: int
    code: int
    died: str = ""  # a warm worker that died under its job: how, for the job's message
    outcome: dict[str, Any] | None = None  # a warm worker's job: its result or exception (no handoff file)


@dataclass(frozen=True, slots=True)
class WindowChanged:
    """This node's claim window key (apis/_windows.py) as placement last wrote it, with the
    key's mod revision (0: no key: closed)."""

    window: Window
    revision: int


@dataclass(frozen=True, slots=True)
class JobsClaimable:
    """Jobs entered the ``claimable`` index: look for some to claim (one message per wake-up,
    however many keys arrived meanwhile)."""


Message = (JobsChanged | AppsChanged | Resync | AllocationChanged | LeaseLost | Stop | Spawned
           | SpawnFailed | SpawnSkipped | SpawnDeferred | Exited | WindowChanged | JobsClaimable)

#: How a thread hands a message to the loop (the loop queue's ``put``).
Post = Callable[[Message], None]
