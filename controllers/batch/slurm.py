"""The ``slurm`` scheduler plugin: ``sbatch``, ``squeue``, ``scancel``, ``sinfo`` and ``scontrol``.

Every command runs with a timeout (``BALSAM_SCHEDULER_TIMEOUT``, default 15 s) and its
output is parsed line by line: a line that is not what the format string asked for makes
the whole answer ``garbage`` (a SchedulerError), never a wrong state.

Final states without ``sacct`` (which needs slurmdbd): ``squeue -t all`` keeps a finished
job for ``MinJobAge`` (300 s by default); after that, the ``jobcomp/filetxt`` log
(``JobCompLoc``, found once through ``scontrol show config``) has one line per finished job.
A job in neither is *vanished*: it is left out of :meth:`status`'s answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from .scheduler import (
    Completed,
    JobInfo,
    PartitionInfo,
    Phase,
    SchedulerError,
    SubmitRequest,
    call_timeout,
    landed_or_raise,
    parse_time,
    run,
)

QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESV_DEL_HOLD", "SUSPENDED"}
RUNNING = {"RUNNING", "COMPLETING", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING", "UPDATE_DB"}
# Anything else (COMPLETED, FAILED, TIMEOUT, CANCELLED, NODE_FAIL, PREEMPTED, BOOT_FAIL,
# DEADLINE, OUT_OF_MEMORY, SPECIAL_EXIT, REVOKED) is finished.

SQUEUE_FORMAT = "%i|%T|%r|%S|%e"
_ID = re.compile(r"^\d+(?:_\d+)?$")
_STATE = re.compile(r"^[A-Z_]+$")
_SUBMITTED = re.compile(r"^(\d+)(?:;\S+)?$")
# sbatch messages that mean "the controller did not answer", not "your request is impossible".
_TRANSIENT = ("unable to contact", "socket timed out", "connection refused", "transport endpoint",
              "zero bytes were transmitted", "slurm_persist_conn", "temporarily unavailable",
              "resource temporarily", "try again", "communication connection failure")
_GONE = ("invalid job id", "already completing or completed", "job has already finished")
JOBCOMP_TAIL_BYTES = 8 << 20


def phase_of(state: str) -> Phase:
    base = state.split()[0].rstrip("+") if state else ""
    if base in QUEUED:
        return "queued"
    if base in RUNNING:
        return "running"
    return "finished"


def parse_squeue(out: str) -> list[JobInfo]:
    """``squeue -h -o '%i|%T|%r|%S|%e'`` lines → JobInfo. SchedulerError(garbage) on any
    line that is not five fields with a job id and an upper-case state."""
    infos = []
    for line in out.splitlines():
        if not line.strip():
            continue
        parts = line.strip().split("|")
        if len(parts) < 2 or not _ID.match(parts[0]) or not _STATE.match(parts[1]):
            raise SchedulerError("garbage", f"squeue printed an unexpected line: {line.strip()[:120]!r}")
        parts += [""] * (5 - len(parts))
        state = parts[1]
        infos.append(JobInfo(parts[0], phase_of(state), state, parts[2], parse_time(parts[3]), parse_time(parts[4])))
    return infos


def parse_jobcomp_line(line: str) -> JobInfo | None:
    """One ``jobcomp/filetxt`` record (``JobId=29 ... JobState=TIMEOUT ... ExitCode=0:0``)."""
    fields: dict[str, str] = {}
    for token in line.split():
        key, sep, value = token.partition("=")
        if sep and key not in fields:
            fields[key] = value
    jid, state = fields.get("JobId", ""), fields.get("JobState", "")
    if not _ID.match(jid) or not _STATE.match(state):
        return None
    return JobInfo(jid, "finished", state, "", parse_time(fields.get("StartTime", "")),
                   parse_time(fields.get("EndTime", "")), fields.get("ExitCode"))


def parse_submitted(out: str) -> str:
    """``sbatch --parsable`` prints ``ID`` or ``ID;cluster``; anything else is garbage."""
    for line in out.splitlines():
        m = _SUBMITTED.match(line.strip())
        if m:
            return m.group(1)
    raise SchedulerError("garbage", f"sbatch printed no job id: {out.strip()[:120]!r}")


def parse_sinfo(out: str) -> list[PartitionInfo]:
    """``sinfo -h -o '%P|%a|%l|%D|%c|%t'`` (one line per partition and node state)."""
    parts_by_name: dict[str, PartitionInfo] = {}
    for line in out.splitlines():
        if not line.strip():
            continue
        fields = line.strip().split("|")
        if len(fields) != 6 or not fields[3].isdigit():
            raise SchedulerError("garbage", f"sinfo printed an unexpected line: {line.strip()[:120]!r}")
        name, avail, limit, count, cpus, state = fields
        default, name = name.endswith("*"), name.rstrip("*")
        n = int(count)
        idle = n if state.rstrip("*~#!%$@^-") == "idle" else 0
        cpu = int(cpus.rstrip("+")) if cpus.rstrip("+").isdigit() else 0
        prev = parts_by_name.get(name)
        if prev is not None:
            n, idle, cpu = n + prev.nodes, idle + prev.idle_nodes, max(cpu, prev.cpus_per_node)
        parts_by_name[name] = PartitionInfo(name, n, idle, cpu, limit, avail == "up", default)
    return list(parts_by_name.values())


class SlurmScheduler:
    name = "slurm"

    def __init__(self, timeout: float | None = None, env: Mapping[str, str] | None = None) -> None:
        self.timeout = timeout
        self.env = dict(env or {})
        self._jobcomp: Path | None = None
        self._jobcomp_known = False

    def _run(self, argv: Sequence[str]) -> Completed:
        return run(argv, self.timeout if self.timeout is not None else call_timeout(), self.env)

    # --- submit ----------------------------------------------------------------------------

    def find(self, job_name: str) -> str | None:
        """The id of a job already submitted under ``job_name`` (any state squeue still shows)."""
        res = self._run(["squeue", "-h", "-t", "all", "-n", job_name, "-o", "%i|%T"])
        if res.returncode != 0:
            raise SchedulerError("failed", f"squeue failed: {res.one_line()}")
        infos = parse_squeue(res.stdout)
        return infos[-1].id if infos else None

    def submit(self, req: SubmitRequest) -> str:
        existing = self.find(req.job_name)
        if existing is not None:
            return existing
        argv = ["sbatch", "--parsable", "--job-name", req.job_name, "--output", str(req.output),
                "--nodes", str(req.num_nodes), "--time", str(max(1, int(-(-req.wall_time_min // 1))))]
        if req.queue:
            argv += ["--partition", req.queue]
        if req.project:
            argv += ["--account", req.project]
        for key, value in req.optional_params.items():
            flag = key if key.startswith("-") else f"--{key}"
            argv.append(f"{flag}={value}" if value != "" else flag)
        argv.append(str(req.script))
        try:
            res = run(argv, self.timeout if self.timeout is not None else call_timeout(), {**self.env, **req.env})
        except SchedulerError as e:
            return landed_or_raise(e, self.find, req.job_name)
        if res.returncode != 0:
            msg = res.one_line()
            low = msg.lower()
            if "batch job submission failed" in low and not any(t in low for t in _TRANSIENT):
                raise SchedulerError("rejected", f"sbatch refused the job: {msg}")
            raise SchedulerError("failed", f"sbatch failed: {msg}")
        return parse_submitted(res.stdout)

    # --- status ----------------------------------------------------------------------------

    def status(self, ids: Sequence[str]) -> dict[str, JobInfo]:
        ids = list(dict.fromkeys(i for i in ids if i))
        if not ids:
            return {}
        res = self._run(["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", SQUEUE_FORMAT])
        if res.returncode != 0:
            if "invalid job id" not in (res.stderr + res.stdout).lower():
                raise SchedulerError("failed", f"squeue failed: {res.one_line()}")
            infos: list[JobInfo] = []  # it knows none of them any more
        else:
            infos = parse_squeue(res.stdout)
        asked = set(ids)
        out = {i.id: i for i in infos if i.id in asked}
        missing = [i for i in ids if i not in out]
        if missing:
            done = self._jobcomp_lookup(missing)
            if res.returncode == 0 and not infos and len(done) < len(missing):
                # squeue answered "nothing" without saying the ids are unknown: not an answer.
                raise SchedulerError("garbage", f"squeue printed nothing for {len(ids)} job id(s)")
            out.update(done)
        return out

    def _jobcomp_path(self) -> Path | None:
        if not self._jobcomp_known:
            res = self._run(["scontrol", "show", "config"])
            if res.returncode != 0:
                raise SchedulerError("failed", f"scontrol show config failed: {res.one_line()}")
            conf: dict[str, str] = {}
            for line in res.stdout.splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    conf[key.strip()] = value.strip()
            if conf.get("JobCompType") == "jobcomp/filetxt" and conf.get("JobCompLoc", "").startswith("/"):
                self._jobcomp = Path(conf["JobCompLoc"])
            self._jobcomp_known = True
        return self._jobcomp

    def _jobcomp_lookup(self, ids: Sequence[str]) -> dict[str, JobInfo]:
        path = self._jobcomp_path()
        if path is None:
            return {}
        try:
            with open(path, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - JOBCOMP_TAIL_BYTES))
                text = f.read().decode(errors="replace")
        except OSError:
            return {}
        wanted = set(ids)
        found: dict[str, JobInfo] = {}
        for line in text.splitlines():
            if line.startswith("JobId="):
                jid = line[6:].split(" ", 1)[0]
                if jid in wanted:
                    info = parse_jobcomp_line(line)
                    if info is not None:
                        found[jid] = info  # the last record of an id wins
        return found

    # --- cancel, partitions --------------------------------------------------------------

    def cancel(self, scheduler_id: str) -> None:
        res = self._run(["scancel", scheduler_id])
        if res.returncode != 0:
            text = (res.stderr + res.stdout).lower()
            if not any(g in text for g in _GONE):
                raise SchedulerError("failed", f"scancel {scheduler_id} failed: {res.one_line()}")

    def partitions(self) -> list[PartitionInfo]:
        res = self._run(["sinfo", "-h", "-o", "%P|%a|%l|%D|%c|%t"])
        if res.returncode != 0:
            raise SchedulerError("failed", f"sinfo failed: {res.one_line()}")
        return parse_sinfo(res.stdout)
