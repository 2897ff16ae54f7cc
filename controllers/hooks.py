"""The seam where lifecycle hooks plug in (``preprocess``, ``postprocess``,
``handle_error``, ``handle_timeout``).

The hook reconciler asks a :class:`HookRunner` whether an App has a hook and, if so, for
its outcome. Hooks run outside the reconciler (``controllers/hookpool.py``: a pool of processes with a
time limit), so ``outcome`` may answer "not yet" (None): the reconciler then returns
``requeue_after`` and the runner enqueues the job again when the hook ends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from apis import App, Job

HookName = Literal["preprocess", "postprocess", "handle_error", "handle_timeout"]


@dataclass(frozen=True)
class HookOutcome:
    """What a hook decided: the state to move to (None: the hook's default), a message,
    fields of ``spec.data`` it changed, and Jobs it created."""

    state: str | None = None
    message: str = ""
    data: dict[str, Any] | None = None
    fields: dict[str, Any] | None = None  # other Balsam fields the hook assigned (num_nodes, tags, ...)
    new_jobs: list[Job] = field(default_factory=list)
    error: str | None = None  # the hook raised or timed out: the job goes FAILED with this
    #: The error was the store being away (the hook read it during an outage): the hook runs
    #: again after a backoff instead; the job is not FAILED.
    transient: bool = False


class HookRunner(Protocol):
    def has_hook(self, app: App | None, hook: HookName) -> bool: ...

    def outcome(self, job: Job, app: App, hook: HookName) -> HookOutcome | None:
        """The hook's outcome for this job's current attempt, starting it if needed;
        None while it runs."""
        ...

    def set_waker(self, wake: Callable[[str], None]) -> None:
        """``wake(job_name)`` is called when a hook finishes."""
        ...


class NoHooks:
    """Apps without Python hooks: every step takes its default."""

    def has_hook(self, app: App | None, hook: HookName) -> bool:
        return False

    def outcome(self, job: Job, app: App, hook: HookName) -> HookOutcome | None:
        raise AssertionError("NoHooks has no hooks to run")

    def set_waker(self, wake: Callable[[str], None]) -> None:
        return None
