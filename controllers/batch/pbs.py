"""The ``pbs`` scheduler plugin (PBS Pro / OpenPBS, as on ALCF's Polaris and Aurora):
``qsub``, ``qselect``, ``qstat -f -F json``, ``qdel``.

* **submit**: ``qsub -N NAME -o OUT -j oe -l select=N[:system=S] -l walltime=H:MM:SS
  [-l place=P] [-l filesystems=F] [-q QUEUE] [-A PROJECT] SCRIPT``; ``system``, ``place`` and
  ``filesystems`` come from the Site (``spec.pbs``), the rest from the BatchJob. Each
  ``optionalParams`` entry becomes ``-l key=value`` (a key starting with ``-`` is a flag
  written as given), so ``-x filesystems=home:eagle`` replaces the Site's file systems. PBS
  counts wall time in seconds: ``wallTimeMin: 0.25`` asks for ``0:00:15``. Before queueing,
  ``qselect -x -N NAME`` looks for a job already submitted under the name (a lost answer):
  an allocation is never queued twice.
* **status**: ``qstat -f -F json ID...`` for all of them in one call; the ids PBS answers
  "Job has finished, use -x" about are asked again with ``qstat -x -f -F json`` (the job
  history). ``job_state`` Q/H/W/T/S/M/U is queued, R/E/B running, F/X finished. A finished
  job's ``Exit_status`` says how it ended: 0 COMPLETED, -29 (JOB_EXEC_KILL_WALLTIME) or a
  comment about the walltime TIMEOUT, 256+signal or none at all (deleted before it ran)
  CANCELLED, anything else FAILED; that word is ``status.schedulerState`` and the comment
  is in the message. A live job's ``schedulerState`` is PBS's own letter (``Q``, ``R``...).
* **cancel**: ``qdel ID``; "Unknown Job Id" and "Job has finished" mean done already.
* **partitions**: ``qstat -Q -f -F json`` (queues with their limits).

The node list is not the plugin's business: the batch script reads ``$PBS_NODEFILE``
(``script.py``). Every command runs with the scheduler timeout; its complaint is the
SchedulerError's message word for word (``qsub: Unknown queue``), and a submit PBS refuses
for good (unknown queue, resources over the queue's limits) is ``rejected``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from .scheduler import (
    Completed,
    JobInfo,
    PartitionInfo,
    Phase,
    SchedulerError,
    SubmitRequest,
    call_timeout,
    landed_or_raise,
    run,
)

QUEUED = frozenset("QHWTSMU")
RUNNING = frozenset("REB")
FINISHED = frozenset("FX")
#: PBS Pro's JOB_EXEC_KILL_WALLTIME: the MoM killed the job at its walltime.
EXIT_WALLTIME = -29
#: Exit statuses above this are 256 + the number of the signal that ended the job.
SIGNAL_BASE = 256
_ID = re.compile(r"^\d+(?:\[\d*\])?(?:\.[A-Za-z0-9_.-]+)?$")
_UNKNOWN = re.compile(r"Unknown Job Id (\S+)")
_HISTORY = re.compile(r"(\S+) Job has finished, use -x")
# qsub's refusals that no retry can change (PBS's own messages, lower case).
_REJECTED = ("unknown queue", "exceeds queue", "exceeds server", "illegal attribute or resource value",
             "unknown resource", "unauthorized request", "job violates queue", "invalid account",
             "queue is not enabled", "not allowed", "bad uid", "cannot be satisfied", "invalid project")
_GONE = ("unknown job id", "job has finished", "request invalid for state of job")
# A backslash that does not start a JSON escape: PBS's JSON writer leaves those in
# Variable_List values (``PBS_O_PS1=\u@\h`` and the like).
_ESCAPE = re.compile(r'\\(["\\/bfnrt]|u[0-9a-fA-F]{4})|\\')
_CTIME = "%a %b %d %H:%M:%S %Y"


def walltime(minutes: float) -> str:
    """``-l walltime`` of ``minutes`` (rounded up to a second, at least one): ``H:MM:SS``."""
    secs = max(1, int(-(-round(minutes * 60, 6) // 1)))
    return f"{secs // 3600}:{secs // 60 % 60:02d}:{secs % 60:02d}"


def short_id(job_id: str) -> str:
    """``1234.server`` → ``1234`` (how ids are matched: qstat answers with its own suffix)."""
    return job_id.split(".", 1)[0]


def parse_ctime(text: Any) -> datetime | None:
    """PBS's timestamps (``Mon Dec  7 05:50:01 2026``, local time), or epoch seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return datetime.fromtimestamp(text).astimezone()
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(" ".join(text.split()), _CTIME).astimezone()
    except ValueError:
        return None


def load_json(text: str, command: str) -> dict[str, Any]:
    """``-F json`` output as a dict; a document that is not one is garbage."""
    try:
        doc = json.loads(text, strict=False)
    except ValueError:
        try:
            doc = json.loads(_ESCAPE.sub(lambda m: m.group(0) if m.group(1) else "\\\\", text), strict=False)
        except ValueError:
            raise SchedulerError("garbage", f"{command} printed something that is not JSON: "
                                            f"{text.strip()[:120]!r}") from None
    if not isinstance(doc, dict):
        raise SchedulerError("garbage", f"{command} printed JSON that is not an object: {text.strip()[:120]!r}")
    return doc


def finished_state(exit_status: int | None, comment: str) -> str:
    """The word for how a finished PBS job ended (see the module docstring)."""
    low = comment.lower()
    if exit_status == EXIT_WALLTIME or ("walltime" in low and "exceeded" in low):
        return "TIMEOUT"
    if exit_status is None or exit_status > SIGNAL_BASE or "deleted" in low:
        return "CANCELLED"
    return "COMPLETED" if exit_status == 0 else "FAILED"


def job_info(job_id: str, attrs: Mapping[str, Any]) -> JobInfo:
    """One job of ``qstat -f -F json`` → JobInfo. SchedulerError(garbage) when it has no
    ``job_state`` letter PBS defines."""
    letter = attrs.get("job_state")
    if not isinstance(letter, str) or len(letter) != 1 or letter not in QUEUED | RUNNING | FINISHED:
        raise SchedulerError("garbage", f"qstat printed job {job_id} with job_state {letter!r}")
    comment = str(attrs.get("comment", "") or "")
    start = parse_ctime(attrs.get("stime"))
    phase: Phase = "queued" if letter in QUEUED else "running" if letter in RUNNING else "finished"
    if phase != "finished":
        return JobInfo(job_id, phase, letter, comment, start)
    raw = attrs.get("Exit_status")
    try:
        exit_status = int(raw) if raw is not None else None
    except (TypeError, ValueError):
        raise SchedulerError("garbage", f"qstat printed job {job_id} with Exit_status {raw!r}") from None
    end = parse_ctime(attrs.get("obittime")) or parse_ctime(attrs.get("mtime"))
    why = f"Exit_status {exit_status}" if exit_status is not None else "never ran"
    if comment:
        why += f": {comment}"
    return JobInfo(job_id, "finished", finished_state(exit_status, comment), why, start, end,
                   str(exit_status) if exit_status is not None else None)


def parse_qstat_json(text: str) -> dict[str, JobInfo]:
    """``qstat -f -F json`` → {short id: JobInfo} (no ``Jobs`` key: no job)."""
    doc = load_json(text, "qstat")
    jobs = doc.get("Jobs", {})
    if not isinstance(jobs, dict):
        raise SchedulerError("garbage", "qstat printed a 'Jobs' that is not an object")
    out: dict[str, JobInfo] = {}
    for jid, attrs in jobs.items():
        if not _ID.match(jid) or not isinstance(attrs, dict):
            raise SchedulerError("garbage", f"qstat printed an unexpected job entry {jid!r}")
        out[short_id(jid)] = job_info(jid, attrs)
    return out


def parse_qsub(out: str) -> str:
    """``qsub`` prints the new job's id (``1234.server``) on one line."""
    for line in out.splitlines():
        line = line.strip()
        if _ID.match(line):
            return line
    raise SchedulerError("garbage", f"qsub printed no job id: {out.strip()[:120]!r}")


def parse_queues(text: str) -> list[PartitionInfo]:
    """``qstat -Q -f -F json`` → one PartitionInfo per execution queue."""
    doc = load_json(text, "qstat -Q")
    queues = doc.get("Queue", {})
    if not isinstance(queues, dict):
        raise SchedulerError("garbage", "qstat -Q printed a 'Queue' that is not an object")
    out = []
    for name, attrs in queues.items():
        if not isinstance(attrs, dict):
            raise SchedulerError("garbage", f"qstat -Q printed an unexpected queue entry {name!r}")
        if attrs.get("queue_type", "Execution") != "Execution":
            continue
        limits = attrs.get("resources_max", {}) or {}
        nodes = limits.get("nodect", 0) if isinstance(limits, dict) else 0
        available = str(attrs.get("enabled", "True")) == "True" and str(attrs.get("started", "True")) == "True"
        out.append(PartitionInfo(name, int(nodes) if str(nodes).isdigit() else 0, 0, 0,
                                 str(limits.get("walltime", "")) if isinstance(limits, dict) else "", available))
    return out


class PBSScheduler:
    name = "pbs"

    def __init__(self, system: str | None = None, place: str | None = None, filesystems: str | None = None,
                 timeout: float | None = None, env: Mapping[str, str] | None = None) -> None:
        self.system = system
        self.place = place
        self.filesystems = filesystems
        self.timeout = timeout
        self.env = dict(env or {})

    def _run(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Completed:
        return run(argv, self.timeout if self.timeout is not None else call_timeout(), {**self.env, **(env or {})})

    # --- submit ----------------------------------------------------------------------------

    def find(self, job_name: str) -> str | None:
        """The id of a job already submitted under ``job_name`` (job history included)."""
        res = self._run(["qselect", "-x", "-N", job_name])
        if res.returncode != 0:
            raise SchedulerError("failed", f"qselect failed: {res.one_line()}")
        ids = [line.strip() for line in res.stdout.splitlines() if line.strip()]
        bad = [i for i in ids if not _ID.match(i)]
        if bad:
            raise SchedulerError("garbage", f"qselect printed an unexpected line: {bad[0][:120]!r}")
        return ids[-1] if ids else None

    def submit_argv(self, req: SubmitRequest) -> list[str]:
        select = f"select={req.num_nodes}" + (f":system={self.system}" if self.system else "")
        argv = ["qsub", "-N", req.job_name, "-o", str(req.output), "-j", "oe",
                "-l", select, "-l", f"walltime={walltime(req.wall_time_min)}"]
        resources = {}
        if self.place:
            resources["place"] = self.place
        if self.filesystems:
            resources["filesystems"] = self.filesystems
        flags: list[str] = []
        for key, value in req.optional_params.items():
            if key.startswith("-"):
                flags += [key, value] if value != "" else [key]
            else:
                resources[key] = value
        for key, value in resources.items():
            argv += ["-l", f"{key}={value}"]
        if req.queue:
            argv += ["-q", req.queue]
        if req.project:
            argv += ["-A", req.project]
        return argv + flags + [str(req.script)]

    def submit(self, req: SubmitRequest) -> str:
        existing = self.find(req.job_name)
        if existing is not None:
            return existing
        try:
            res = self._run(self.submit_argv(req), req.env)
        except SchedulerError as e:
            return landed_or_raise(e, self.find, req.job_name)
        if res.returncode != 0:
            msg = res.one_line()
            if any(r in msg.lower() for r in _REJECTED):
                raise SchedulerError("rejected", msg)
            raise SchedulerError("failed", msg)
        return parse_qsub(res.stdout)

    # --- status ----------------------------------------------------------------------------

    def _qstat(self, ids: Sequence[str], history: bool) -> tuple[dict[str, JobInfo], set[str], set[str]]:
        """One ``qstat [-x] -f -F json`` of ``ids``: (answers, ids PBS does not know, ids it
        says have finished)."""
        argv = ["qstat", *(["-x"] if history else []), "-f", "-F", "json", *ids]
        res = self._run(argv)
        unknown = {short_id(m) for m in _UNKNOWN.findall(res.stderr)}
        finished = {short_id(m) for m in _HISTORY.findall(res.stderr)}
        if res.returncode != 0 and not (unknown or finished):
            raise SchedulerError("failed", res.one_line())
        infos = parse_qstat_json(res.stdout) if res.stdout.strip() else {}
        return infos, unknown, finished

    def status(self, ids: Sequence[str]) -> dict[str, JobInfo]:
        ids = list(dict.fromkeys(i for i in ids if i))
        if not ids:
            return {}
        infos, unknown, finished = self._qstat(ids, history=False)
        if finished:
            again = [i for i in ids if short_id(i) in finished]
            more, _, _ = self._qstat(again, history=True)
            infos.update(more)
        out: dict[str, JobInfo] = {}
        for i in ids:
            info = infos.get(short_id(i))
            if info is not None:
                out[i] = info
            elif short_id(i) not in unknown and short_id(i) not in finished:
                raise SchedulerError("garbage", f"qstat said nothing about job {i}")
        return out

    # --- cancel, partitions --------------------------------------------------------------

    def cancel(self, scheduler_id: str) -> None:
        res = self._run(["qdel", scheduler_id])
        if res.returncode != 0 and not any(g in (res.stderr + res.stdout).lower() for g in _GONE):
            raise SchedulerError("failed", res.one_line())

    def partitions(self) -> list[PartitionInfo]:
        res = self._run(["qstat", "-Q", "-f", "-F", "json"])
        if res.returncode != 0:
            raise SchedulerError("failed", res.one_line())
        return parse_queues(res.stdout)
