"""At most one live run of a job: the agent's guardian, fencing of earlier runs, and the
agent's supervisor (docs/design.md, "One live run of a job").

* :class:`Guardian` — the agent's side of ``_guardian.py``: every job process group is
  registered with a separate small process that SIGKILLs them all when the agent dies, and
  when the agent's store lease is about to expire unrenewed (a stopped or wedged agent), so a
  job's process never outlives the lease under which the placement reconciler leaves it bound.
* :func:`fence_earlier_runs` — before a job starts in a workdir where a run already wrote
  ``job.out`` (a re-run), every process on this host that carries the job's identity in its
  environment (``BALSAM_JOB_KEY`` + ``BALSAM_SITE_PATH``, which a job's own children inherit)
  is SIGKILLed with its process group and awaited: the second line, for an orphan whose
  guardian was killed too (``kill -9`` of a whole process tree).
* :func:`process_start_ticks` — a process's identity (pid + start time), for the supervisor
  check: an allocation's agents stop when the runner that started them is gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from store.process import start_ticks

log = logging.getLogger(__name__)

#: Environment of a job: ``<namespace>/<job name>``, its identity for fencing.
JOB_KEY_ENV = "BALSAM_JOB_KEY"
#: Environment of an allocation's agents: ``PID:TICKS`` of the runner that supervises them.
SUPERVISOR_ENV = "BALSAM_AGENT_SUPERVISOR"
_GUARDIAN = str(Path(__file__).with_name("_guardian.py"))


#: The start time (clock ticks) of a live process, or None if it is gone or a zombie: with the
#: pid, it names one process even after pid reuse (the one reader of /proc/PID/stat for it).
process_start_ticks = start_ticks


def runner_gone(supervisor: tuple[int, str] | None) -> str:
    """Why an agent must stop because the allocation runner that started it is gone, or ""
    (no runner named, or it still lives): the one check of the supervisor's identity."""
    if supervisor is not None and process_start_ticks(supervisor[0]) != supervisor[1]:
        return f"stopped: its allocation runner (pid {supervisor[0]}) is gone"
    return ""


def parse_supervisor(value: str | None) -> tuple[int, str] | None:
    """``PID:TICKS`` from :data:`SUPERVISOR_ENV`; None when unset or malformed."""
    if not value or ":" not in value:
        return None
    pid, _, ticks = value.partition(":")
    try:
        return int(pid), ticks
    except ValueError:
        return None


class Guardian:
    """The agent's guardian process (``_guardian.py``): a pipe of ``+``/``-``/``L`` lines."""

    def __init__(self, margin: float, stderr: int | None = None) -> None:
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            [sys.executable, "-S", _GUARDIAN, f"{margin:g}"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=stderr, start_new_session=True, close_fds=True,
        )  # fmt: skip
        self.broken = False
        self._removals: list[int] = []

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _send(self, line: str) -> None:
        with self._lock:
            if self.broken or self._proc.stdin is None:
                return
            try:
                self._proc.stdin.write(line.encode())
                self._proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError) as e:
                self.broken = True
                log.error("the job guardian (pid %d) is gone: %s", self._proc.pid, e)

    def add(self, pgid: int) -> None:
        with self._lock:  # a warm worker's pid, reaped for its last job, now runs the next one
            if pgid in self._removals:
                self._removals = [g for g in self._removals if g != pgid]
        self._send(f"+ {pgid}\n")

    def remove(self, pgid: int) -> None:
        self._send(f"- {pgid}\n")

    def remove_later(self, pgid: int) -> None:
        """``remove``, sent with the next :meth:`flush_removals` (the agent's loop sends the
        turn's removals in one write: one pipe write and one guardian wake-up per turn, not per
        job). Until then the guardian would kill a reaped group: nothing of it is left."""
        with self._lock:
            self._removals.append(pgid)

    def flush_removals(self) -> None:
        with self._lock:
            if not self._removals:
                return
            lines, self._removals = "".join(f"- {g}\n" for g in self._removals), []
        self._send(lines)

    def lease_until(self, deadline: float) -> None:
        """The lease is valid until at least ``deadline`` (``time.monotonic()``)."""
        self._send(f"L {deadline!r}\n")

    def alive(self) -> bool:
        return not self.broken and self._proc.poll() is None

    def close(self, timeout: float = 5.0) -> None:
        """End it (it kills whatever is still registered) and wait for it."""
        with self._lock:
            self.broken = True
            if self._proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self._proc.stdin.close()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _environ(pid: str) -> bytes | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read()
    except OSError:  # gone, or another user's
        return None


def find_runs(job_key: str, site_path: Path) -> list[int]:
    """Pids of live processes on this host that belong to job ``job_key`` of this site."""
    key = f"{JOB_KEY_ENV}={job_key}\0".encode()
    site = f"BALSAM_SITE_PATH={site_path}\0".encode()
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        env = _environ(entry)
        if env is not None and key in b"\0" + env and site in b"\0" + env and process_start_ticks(int(entry)):
            found.append(int(entry))
    return found


def fence_earlier_runs(job_key: str, site_path: Path, timeout: float = 30.0) -> list[int]:
    """Kill every live process of job ``job_key`` on this host (with its process group) and
    wait until they are gone. Returns the pids killed; raises TimeoutError if one survives."""
    pids = find_runs(job_key, site_path)
    if not pids:
        return []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if process_start_ticks(p) is not None]  # a zombie is dead
        if not left:
            return pids
        if time.monotonic() >= deadline:
            raise TimeoutError(f"an earlier run of the job is still alive (pid {left[0]})")
        time.sleep(0.01)
