"""The scheduler plugin interface, and the one way plugins run a scheduler's commands.

A plugin speaks to one batch system (``Site.spec.scheduler``):

* ``submit(req) -> scheduler id``: queue the rendered batch script. Idempotent per
  ``req.job_name``: a plugin that can look the name up returns the id of a job it already
  submitted under that name (a submit whose answer was lost to a timeout, a controller that
  died between submit and write) instead of queueing a second allocation.
* ``status(ids) -> {id: JobInfo}``: the state of MANY jobs in ONE call. An id missing from
  the answer is one the scheduler no longer knows at all (vanished).
* ``cancel(id)``: end a queued or running job; cancelling a finished or unknown job is not
  an error.
* ``partitions() -> [PartitionInfo]``: the queues and their nodes.

Every failure is a :class:`SchedulerError` whose ``kind`` says what went wrong — the
command failed (``failed``), did not answer within its timeout (``timeout``), printed
something we could not parse (``garbage``), or refused the request for good
(``rejected``: an impossible node count, an unknown partition; retrying cannot help). The
reconcilers turn these into conditions and retries; nothing here raises anything else.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

#: Seconds a scheduler command may take before it counts as hung (env BALSAM_SCHEDULER_TIMEOUT).
DEFAULT_CALL_TIMEOUT = 15.0

ErrorKind = Literal["failed", "timeout", "garbage", "rejected", "unsupported"]
Phase = Literal["queued", "running", "finished"]


class SchedulerError(Exception):
    """A scheduler command failed; ``kind`` is one of failed|timeout|garbage|rejected|unsupported."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message

    @property
    def reason(self) -> str:
        """A CamelCase condition reason: ``SchedulerTimeout``, ``SchedulerGarbage``, ..."""
        return {
            "failed": "SchedulerCommandFailed",
            "timeout": "SchedulerTimeout",
            "garbage": "SchedulerGarbage",
            "rejected": "SubmitRejected",
            "unsupported": "SchedulerUnsupported",
        }[self.kind]

    @property
    def permanent(self) -> bool:
        return self.kind in ("rejected", "unsupported")


@dataclass(frozen=True)
class SubmitRequest:
    """What a plugin needs to queue one BatchJob's script."""

    job_name: str  # unique per BatchJob (namespace, name, uid): the idempotence key
    script: Path  # the rendered batch script
    output: Path  # where the allocation's stdout/stderr go
    num_nodes: int
    wall_time_min: float
    queue: str | None = None
    project: str | None = None
    optional_params: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)  # extra environment for the submit


@dataclass(frozen=True)
class JobInfo:
    """One scheduler job as the scheduler reports it."""

    id: str
    phase: Phase
    state: str  # the scheduler's own word: PENDING, RUNNING, TIMEOUT, ...
    reason: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    exit_code: str | None = None

    def describe(self) -> str:
        why = f" ({self.reason})" if self.reason and self.reason not in ("None", "(null)") else ""
        return f"{self.state}{why}"


@dataclass(frozen=True)
class PartitionInfo:
    name: str
    nodes: int
    idle_nodes: int
    cpus_per_node: int
    max_time: str = ""
    available: bool = True
    default: bool = False


class SchedulerPlugin(Protocol):
    name: str

    def submit(self, req: SubmitRequest) -> str: ...

    def status(self, ids: Sequence[str]) -> dict[str, JobInfo]: ...

    def cancel(self, scheduler_id: str) -> None: ...

    def partitions(self) -> list[PartitionInfo]: ...


def landed_or_raise(error: SchedulerError, find: Callable[[str], str | None], job_name: str) -> str:
    """The scheduler id of a submission that timed out but landed anyway (never queue an
    allocation twice); any other submit error is raised again."""
    if error.kind == "timeout":
        landed = find(job_name)
        if landed is not None:
            return landed
    raise error


def call_timeout() -> float:
    try:
        return float(os.environ.get("BALSAM_SCHEDULER_TIMEOUT", DEFAULT_CALL_TIMEOUT))
    except ValueError:
        return DEFAULT_CALL_TIMEOUT


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def one_line(self) -> str:
        """The command's complaint in one line (stderr, else stdout), for messages."""
        text = (self.stderr.strip() or self.stdout.strip() or f"exit status {self.returncode}").splitlines()
        line = text[-1] if text else ""
        return line[:300]


def run(argv: Sequence[str], timeout: float, env: Mapping[str, str] | None = None,
        input_text: str | None = None) -> Completed:
    """Run a scheduler command with a hard timeout. The command runs in its own process group,
    which is killed on timeout (a hung ``squeue`` leaves nothing behind). Raises
    SchedulerError(timeout) or SchedulerError(failed) when it cannot be started."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    try:
        proc = subprocess.Popen(
            list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
            env=full_env, start_new_session=True, text=True, errors="replace",
        )  # fmt: skip
    except OSError as e:
        raise SchedulerError("failed", f"{argv[0]}: cannot run: {e.strerror or e}") from None
    try:
        out, err = proc.communicate(input_text, timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.communicate()
        raise SchedulerError("timeout", f"{argv[0]} did not answer within {timeout:g}s") from None
    return Completed(tuple(argv), proc.returncode, out or "", err or "")


def parse_time(text: str) -> datetime | None:
    """A scheduler's ISO-ish local timestamp, or None (``N/A``, ``Unknown``, garbage)."""
    text = text.strip()
    if not text or not text[0].isdigit():
        return None
    try:
        return datetime.fromisoformat(text).astimezone()
    except ValueError:
        return None
