"""What the agent keeps per job it launches: a :class:`Run` and its unwritten :class:`Step` s.

A Run is owned by the supervisor (``runs`` by job name, ``by_pid`` while its process lives);
the status writer reads its steps and clears them once written; the job source compares it
with the job as last read (:func:`still_ours`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from apis import RUNNABLE, Job, JobState, Placement, utcnow

S = JobState


class Process(Protocol):
    """What the agent uses of a job's process (``subprocess.Popen`` or a forked/worker one)."""

    pid: int
    returncode: int | None


@dataclass
class ForkedProcess:
    """A process the agent did not start itself (forked by the fork server, a warm worker)."""

    pid: int
    returncode: int | None = None


@dataclass(eq=False)
class Step:
    """One state change of a job, to be written by the status writer."""

    to: JobState
    message: str
    return_code: int | None = None
    output_tail: str | None = None
    result: dict[str, Any] | None = None  # a Python app's handoff: result or exception
    at: datetime = field(default_factory=utcnow)  # when it happened (history's time, not the write's)


@dataclass(eq=False)
class Run:
    """A job this agent launches (or failed to launch): its process and its unwritten steps."""

    name: str
    snapshot: Job  # the job as last read or written (its resourceVersion is the CAS base)
    placement: Placement
    proc: Process | None = None
    pid: int = 0
    workdir: Path | None = None
    started: bool = False  # our → RUNNING write is committed
    attempt: int = 0
    steps: list[Step] = field(default_factory=list)
    exited: bool = False
    finished: bool = False  # the final step is queued (or written)
    cancelled: str = ""  # why we killed it for good (result will not be written)
    signalled: str = ""  # why we signalled it (timeout / stop): its end is RUN_TIMEOUT
    kill_sent: int = 0  # 0 none, 1 SIGTERM, 2 SIGKILL
    spawned_at: float = 0.0  # time.monotonic() when its process was known started
    result_path: str | None = None  # a Python app's handoff file
    worker: bool = False  # ran in a warm Python worker (its exit is the worker's, if it died)

    @property
    def live(self) -> bool:
        return self.pid != 0 and not self.exited


def same_binding(a: Placement | None, b: Placement | None) -> bool:
    return a is not None and b is not None and a.nodes == b.nodes and a.cpus == b.cpus and a.gpus == b.gpus


def still_ours(run: Run, job: Job | None, node: str) -> str:
    """'' when ``job`` (as just read) is consistent with our run of it, else why it no longer is."""
    if job is None:
        return "the job was deleted"
    p = job.status.placement
    if not run.started:
        if job.status.state in RUNNABLE and same_binding(p, run.placement):
            return ""
    elif (job.status.state is S.RUNNING and job.status.attempts == run.attempt and p is not None
          and p.nodes and p.nodes[0] == node):
        return ""
    st_msg = f": {job.status.message}" if job.status.message else ""
    return f"the job was moved to {job.status.state.value}{st_msg}"
