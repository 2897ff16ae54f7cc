"""The ``local`` scheduler plugin: an allocation is the batch script run as a process group
on this machine (its node agents are processes here) — a laptop's or a login node's queue.

Each submit starts ``_local_runner.py`` (by path) detached (its own session): it runs
the script, enforces the wall time (SIGTERM to the group, SIGKILL after a grace) and writes
a JSON record of how the allocation ended. The scheduler id is ``local-<pid>``; the state
directory keeps ``<id>.json`` (pid, process start time, job name) and ``<id>.record``, so
``status`` and ``cancel`` work for allocations started by an earlier controller manager.
Nothing queues: a submitted allocation runs at once.

The allocation inherits the controller manager's environment. When that environment has
``BALSAM_LOCAL_OWNER=PID`` (``balsamctl up`` sets it for the controller manager it starts),
each allocation ends, as if cancelled, when process PID ends: ``up`` killed outright leaves
no node agent behind.

A submit is idempotent by job name, across processes: ``find``, the start and the ``.json``
are done under an exclusive ``flock`` of ``<state dir>/.submit.lock``. ``balsamctl up``
submits its own allocation the moment it creates the BatchJob (its agents then start while
the controller manager is still starting: the restart chain is no longer manager → submit →
agents one after the other); the batch reconciler's submit of that BatchJob finds it and
records its id.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from ._procinfo import start_ticks as _start_ticks
from .scheduler import JobInfo, PartitionInfo, SchedulerError, SubmitRequest, parse_time

KILL_WAIT = 10.0
#: The runner, run by path so that it does not import the controllers package (_local_runner.py).
RUNNER = str(Path(__file__).with_name("_local_runner.py"))
OWNER_ENV = "BALSAM_LOCAL_OWNER"


def state_dir(site_path: Path) -> Path:
    """Where the local plugin of a site keeps its allocations' ``.json`` and ``.record`` files."""
    return Path(site_path) / "logs" / "batch" / "local"


def _owner_arg(owner: int | None = None) -> list[str]:
    """``--owner PID:TICKS`` for the runner when ``owner`` (else ``BALSAM_LOCAL_OWNER``) names
    a process (one already gone gets ticks that match nothing: the allocation ends at once)."""
    if owner is None:
        try:
            owner = int(os.environ.get(OWNER_ENV, ""))
        except ValueError:
            return []
    return ["--owner", f"{owner}:{_start_ticks(owner) or 'gone'}"]


class LocalScheduler:
    name = "local"

    def __init__(self, state_dir: Path, kill_wait: float = KILL_WAIT, owner: int | None = None) -> None:
        """``owner``: the pid whose end ends the allocations submitted here (default:
        ``$BALSAM_LOCAL_OWNER``)."""
        self.state_dir = Path(state_dir)
        self.kill_wait = kill_wait
        self.owner = owner
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    def _meta(self, sid: str) -> dict[str, str] | None:
        try:
            data = json.loads((self.state_dir / f"{sid}.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def alive(self, sid: str) -> bool:
        """Whether allocation ``sid`` is still running here (its runner has not ended)."""
        return self._alive(sid)

    def _alive(self, sid: str) -> bool:
        child = self._children.get(sid)
        if child is not None and child.poll() is not None:  # reap our own child
            del self._children[sid]
        meta = self._meta(sid)
        if meta is None:
            return False
        return _start_ticks(int(meta["pid"])) == meta.get("ticks")

    def find(self, job_name: str) -> str | None:
        for meta_file in self.state_dir.glob("local-*.json"):
            sid = meta_file.stem
            meta = self._meta(sid)
            if meta is not None and meta.get("jobName") == job_name:
                return sid
        return None

    def submit(self, req: SubmitRequest) -> str:
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            with open(self.state_dir / ".submit.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # released with the file: one submitter at a time
                existing = self.find(req.job_name)
                if existing is not None:
                    return existing
                req.output.parent.mkdir(parents=True, exist_ok=True)
                with open(req.output, "ab") as out:
                    proc = subprocess.Popen(
                        [sys.executable, RUNNER,
                         "--wall-seconds", str(req.wall_time_min * 60), "--kill-wait", str(self.kill_wait),
                         "--record-dir", str(self.state_dir), *_owner_arg(self.owner), "--", str(req.script)],
                        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                        env={**os.environ, **req.env},
                    )  # fmt: skip
                sid = f"local-{proc.pid}"
                self._children[sid] = proc
                meta = {"pid": str(proc.pid), "ticks": _start_ticks(proc.pid) or "", "jobName": req.job_name}
                (self.state_dir / f"{sid}.json").write_text(json.dumps(meta))
        except OSError as e:
            raise SchedulerError("failed", f"cannot start the local allocation: {e}") from None
        return sid

    def status(self, ids: Sequence[str]) -> dict[str, JobInfo]:
        out: dict[str, JobInfo] = {}
        for sid in ids:
            rec = self._record(sid)
            if rec is not None:
                out[sid] = JobInfo(sid, "finished", str(rec.get("state", "COMPLETED")), "",
                                   parse_time(str(rec.get("startTime", ""))), parse_time(str(rec.get("endTime", ""))),
                                   str(rec.get("exitCode")))
            elif self._alive(sid):
                out[sid] = JobInfo(sid, "running", "RUNNING")
            # else: gone without a record (killed outright): vanished
        return out

    def _record(self, sid: str) -> dict[str, object] | None:
        try:
            data = json.loads((self.state_dir / f"{sid}.record").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def cancel(self, scheduler_id: str) -> None:
        if not self._alive(scheduler_id):
            return
        meta = self._meta(scheduler_id)
        assert meta is not None
        try:
            os.kill(int(meta["pid"]), signal.SIGTERM)
        except ProcessLookupError:
            return
        except PermissionError as e:
            raise SchedulerError("failed", f"cannot cancel {scheduler_id}: {e}") from None

    def partitions(self) -> list[PartitionInfo]:
        cpus = os.cpu_count() or 1
        return [PartitionInfo("local", 1, 1, cpus, "infinite", True, True)]
