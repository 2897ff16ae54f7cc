"""The transfer provider plug-in interface: submit a batch, poll many tasks in one call, cancel.

A provider turns one :class:`apis.TransferTask` (items of one direction between the site and
one location) into a task of its own and reports on it. Calls may block (network, disk): the
transfer reconcilers make them from a small worker pool (``_calls.py``), never from the
reconcile loop. Local providers (file://, http://) do the copying in their own threads, so
their ``submit`` only queues work and ``poll`` only reads counters.
"""

from __future__ import annotations

import abc
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from apis import TransferItem, TransferTask
from apis._paths import UnsafePath, check_local_transfer_path


@dataclass(frozen=True)
class ItemError:
    index: int  # into the task's spec.items
    message: str
    permanent: bool = False  # retrying cannot help


@dataclass(frozen=True)
class ProviderStatus:
    """What a provider says about one of its tasks. ``failed`` lists the items that failed
    (on ``Succeeded`` it is empty); ``None`` on ``Failed`` means the provider cannot tell
    which items failed, so all of them count as failed."""

    state: Literal["Active", "Succeeded", "Failed"]
    bytes_transferred: int = 0
    files_transferred: int = 0
    message: str = ""
    failed: list[ItemError] | None = field(default_factory=list)


class TransferProviderError(Exception):
    """A provider call failed (the task was not submitted, or could not be polled)."""


class AuthRequired(TransferProviderError):
    """The provider needs the user to sign in or consent: ``str(e)`` says which command to run."""

    def __init__(self, message: str, reason: str = "LoginRequired") -> None:
        super().__init__(message)
        self.reason = reason


class TransferProvider(abc.ABC):
    #: The ``provider`` of the TransferTasks it serves (``globus``, ``file``, ``http``).
    name: ClassVar[str]
    #: Seconds between two poll rounds (one call covers every active task).
    poll_interval: float = 2.0

    @abc.abstractmethod
    def submit(self, task: TransferTask, indices: Sequence[int]) -> str:
        """Start moving ``task.spec.items[i]`` for ``i`` in ``indices``; returns the
        provider's task id. Raises AuthRequired or TransferProviderError."""

    @abc.abstractmethod
    def poll(self, task_ids: Sequence[str]) -> dict[str, ProviderStatus | Exception]:
        """Status of many tasks in one call; an id missing from the answer is unknown to
        the provider (lost: for a local provider, the controller restarted)."""

    @abc.abstractmethod
    def cancel(self, task_id: str) -> None:
        """Stop a task (best effort)."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release threads and connections."""


# --- local providers: the work runs in the provider's own threads -------------------------


@dataclass
class _LocalTask:
    pending: int
    bytes: int = 0
    files: int = 0
    failed: list[ItemError] = field(default_factory=list)
    cancelled: bool = False
    finished_at: float | None = None


KEEP_FINISHED_S = 600.0


class LocalProvider(TransferProvider):
    """A provider whose items are moved by this process: one pool job per item, counters
    per task. Subclasses implement :meth:`transfer_item`."""

    poll_interval = 0.05  # a poll only reads counters

    def __init__(self, workers: int = 4) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"transfer-{self.name}")
        self._tasks: dict[str, _LocalTask] = {}
        self._lock = threading.Lock()

    @abc.abstractmethod
    def transfer_item(self, task: TransferTask, item: TransferItem, progress: Callable[[int], None]) -> int:
        """Move one item (call ``progress(nbytes)`` as bytes arrive); returns files moved.
        Raises :class:`ItemFailed` (or any OSError) when it cannot."""

    def submit(self, task: TransferTask, indices: Sequence[int]) -> str:
        tid = f"{self.name}-{uuid.uuid4().hex[:16]}"
        state = _LocalTask(pending=len(indices))
        with self._lock:
            self._tasks[tid] = state
        for i in indices:
            self._pool.submit(self._run, tid, state, task, i)
        return tid

    def _run(self, tid: str, state: _LocalTask, task: TransferTask, index: int) -> None:
        def progress(n: int) -> None:
            with self._lock:
                state.bytes += n

        try:
            if state.cancelled:
                raise ItemFailed("cancelled", permanent=True)
            item = task.spec.items[index]
            try:  # a link made by a job (a parent) must not send a copy outside data/
                check_local_transfer_path(item.destination if task.spec.direction == "in" else item.source)
            except UnsafePath as e:
                raise ItemFailed(str(e), permanent=True) from None
            files = self.transfer_item(task, item, progress)
            with self._lock:
                state.files += files
        except ItemFailed as e:
            with self._lock:
                state.failed.append(ItemError(index, str(e), e.permanent))
        except Exception as e:  # noqa: BLE001 - every failure becomes the item's message
            with self._lock:
                state.failed.append(ItemError(index, describe_os_error(e)))
        finally:
            with self._lock:
                state.pending -= 1
                if state.pending == 0:
                    state.finished_at = time.monotonic()

    def poll(self, task_ids: Sequence[str]) -> dict[str, ProviderStatus | Exception]:
        out: dict[str, ProviderStatus | Exception] = {}
        with self._lock:
            for tid in task_ids:
                st = self._tasks.get(tid)
                if st is None:
                    continue
                if st.pending > 0:
                    out[tid] = ProviderStatus("Active", st.bytes, st.files)
                    continue
                failed = sorted(st.failed, key=lambda e: e.index)
                if failed:
                    first = failed[0].message
                    msg = f"{len(failed)} item(s) failed: {first}"
                    out[tid] = ProviderStatus("Failed", st.bytes, st.files, msg, failed)
                else:
                    out[tid] = ProviderStatus("Succeeded", st.bytes, st.files, "done")
            # Finished tasks are kept a while: a reconciler whose write of the outcome
            # conflicted asks again.
            now = time.monotonic()
            for tid in [t for t, s in self._tasks.items() if s.finished_at and now - s.finished_at > KEEP_FINISHED_S]:
                del self._tasks[tid]
        return out

    def cancel(self, task_id: str) -> None:
        with self._lock:
            st = self._tasks.get(task_id)
            if st is not None:
                st.cancelled = True

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class ItemFailed(Exception):
    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def describe_os_error(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    return f"{type(e).__name__}: {e}"
