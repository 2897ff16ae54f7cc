"""A PBS Pro emulator for the tests: ``qsub``, ``qstat``, ``qselect``, ``qdel`` and a PALS-style
``mpiexec`` (the executables beside this file, in ``bin/``), standard library only.

PBS Pro cannot be installed here, so the ``pbs`` scheduler plugin is tested against this: a
job table on disk (``$PBS_EMULATOR_HOME``: ``jobs/<seq>.json``, a sequence number, a lock),
PBS Pro's output formats (``qsub`` prints ``<seq>.<server>``; ``qstat -f -F json`` the
``{"timestamp", "pbs_version", "pbs_server", "Jobs": {id: {...}}}`` document with
``job_state``, ``comment``, ``Exit_status``, ``Resource_List``, ``stime``/``mtime``/``obittime``
in ctime format; ``-x`` adds finished jobs; errors ``qstat: Unknown Job Id ID`` (exit 153),
``qstat: ID Job has finished, use -x or -H to obtain historical job information`` (exit 35),
``qsub: Unknown queue`` (exit 170), ``qdel: Unknown Job Id ID``), and PBS's behaviour:

* each ``qsub`` starts a detached runner (``_pbs.py run ID``, its own session) that waits for
  free nodes (``nodes.json``), then runs the script for real with ``bash`` in a new process
  group, with ``PBS_JOBID``, ``PBS_JOBNAME``, ``PBS_NODEFILE`` (one line per node),
  ``PBS_O_WORKDIR``, ``PBS_QUEUE``, ``PBS_ACCOUNT``, ``PBS_ENVIRONMENT=PBS_BATCH``, stdout and
  stderr to ``-o`` (``-j oe``) — Q, then R;
* at the walltime the MoM's way: comment ``job killed: walltime S exceeded limit L``, SIGTERM
  to the job's processes, SIGKILL after ``kill_delay`` (``$PBS_EMULATOR_KILL_DELAY``, 10 s),
  ``Exit_status`` -29 (JOB_EXEC_KILL_WALLTIME) — E, then F;
* ``qdel`` of a queued job finishes it at once (no ``Exit_status``); of a running one, SIGTERM
  then SIGKILL, ``Exit_status`` 256 + signal (271);
* a script that ends: ``Exit_status`` its exit code (256 + signal when killed by one), the
  job's leftover processes are killed like the MoM does.

``queues.json`` ({name: {"max_nodes", "max_walltime"}}) and ``nodes.json`` (host names) are
written by the test fixture; without them: queues ``debug`` (2 nodes, 1 h) and ``prod``, and
four nodes. ``PBS_EMULATOR_QSUB_FAIL`` makes ``qsub`` fail with that message (exit 15);
``PBS_EMULATOR_QSTAT_FAULT`` makes ``qstat`` print that text (exit 0), or hang (``hang``).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SERVER = "pbs-emu"
VERSION = "2022.1.3"
EXIT_WALLTIME = -29
DEFAULT_QUEUES = {"debug": {"max_nodes": 2, "max_walltime": 3600}, "prod": {"max_nodes": 64, "max_walltime": 86400}}
DEFAULT_NODES = [f"x1000c0s{i}b0n0" for i in range(4)]


def home() -> Path:
    h = os.environ.get("PBS_EMULATOR_HOME")
    if not h:
        sys.exit("pbs emulator: PBS_EMULATOR_HOME is not set")
    p = Path(h)
    (p / "jobs").mkdir(parents=True, exist_ok=True)
    return p


@contextmanager
def locked() -> Iterator[Path]:
    h = home()
    with open(h / "lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield h
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _conf(name: str, default: Any) -> Any:
    try:
        return json.loads((home() / name).read_text())
    except (OSError, ValueError):
        return default


def load(h: Path, seq: str) -> dict[str, Any] | None:
    try:
        return json.loads((h / "jobs" / f"{seq}.json").read_text())
    except (OSError, ValueError):
        return None


def save(h: Path, job: dict[str, Any]) -> None:
    path = h / "jobs" / f"{job['seq']}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(job))
    os.replace(tmp, path)


def all_jobs(h: Path) -> list[dict[str, Any]]:
    out = []
    for p in sorted((h / "jobs").glob("*.json"), key=lambda p: int(p.stem)):
        job = load(h, p.stem)
        if job is not None:
            out.append(job)
    return out


def ctime(t: float | None) -> str | None:
    return time.strftime("%a %b %e %H:%M:%S %Y", time.localtime(t)) if t is not None else None


def hms(secs: float) -> str:
    s = int(secs)
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def parse_walltime(text: str) -> int:
    parts = [int(x) for x in text.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    return parts[0] * 3600 + parts[1] * 60 + parts[2]


def seq_of(job_id: str) -> str:
    return job_id.split(".", 1)[0]


# --- qsub ------------------------------------------------------------------------------------


def _directives(script: Path) -> list[str]:
    """The ``#PBS`` lines of the script as arguments (the command line wins over them)."""
    args: list[str] = []
    try:
        lines = script.read_text().splitlines()
    except OSError:
        return args
    for line in lines[1:]:
        if line.startswith("#PBS"):
            args += line[4:].split()
        elif line.strip() and not line.startswith("#"):
            break
    return args


def _options(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    opts: dict[str, Any] = {"l": {}}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-N", "-o", "-e", "-j", "-q", "-A", "-l", "-k", "-v", "-W", "-m", "-M") and i + 1 < len(argv):
            value = argv[i + 1]
            if a == "-l":
                for item in value.split(","):
                    key, _, val = item.partition("=")
                    opts["l"][key] = val
            else:
                opts[a[1]] = value
            i += 2
        elif a in ("-V", "-h", "-r"):
            opts[a[1]] = True
            i += 1
        elif a.startswith("-"):
            raise SystemExit(f"qsub: invalid option -- '{a.lstrip('-')}'")
        else:
            rest.append(a)
            i += 1
    return opts, rest


def qsub(argv: list[str]) -> int:
    fail = os.environ.get("PBS_EMULATOR_QSUB_FAIL")
    if fail:
        print(f"qsub: {fail}", file=sys.stderr)
        return 15
    opts, rest = _options(argv)
    if len(rest) != 1:
        print("usage: qsub [options] script", file=sys.stderr)
        return 2
    script = Path(rest[0]).resolve()
    if not script.is_file():
        print(f"qsub: script file:: No such file or directory {rest[0]}", file=sys.stderr)
        return 2
    dopts, _ = _options(_directives(script))
    res = {**dopts["l"], **opts["l"]}
    merged = {**dopts, **opts, "l": res}
    queues = _conf("queues.json", DEFAULT_QUEUES)
    queue = merged.get("q") or next(iter(queues))
    if queue not in queues:
        print("qsub: Unknown queue", file=sys.stderr)
        return 170
    select = res.get("select", "1")
    m = re.match(r"^(\d+)(:.*)?$", select)
    if not m:
        print("qsub: Illegal attribute or resource value Resource_List.select", file=sys.stderr)
        return 188
    nodect = int(m.group(1))
    try:
        wall = parse_walltime(res.get("walltime", "1:00:00"))
    except ValueError:
        print("qsub: Illegal attribute or resource value Resource_List.walltime", file=sys.stderr)
        return 188
    limits = queues[queue]
    if nodect > int(limits.get("max_nodes", 1 << 30)) or wall > int(limits.get("max_walltime", 1 << 30)) \
            or nodect > len(_conf("nodes.json", DEFAULT_NODES)):
        print("qsub: Job exceeds queue resource limits", file=sys.stderr)
        return 193
    name = merged.get("N") or script.name
    cwd = os.getcwd()
    out = merged.get("o") or os.path.join(cwd, f"{name}.o")
    with locked() as h:
        seq_file = h / "seq"
        seq = int(seq_file.read_text() or "0") + 1 if seq_file.exists() else 1000
        seq_file.write_text(str(seq))
        now = time.time()
        job = {
            "seq": str(seq), "id": f"{seq}.{SERVER}", "name": name, "owner": f"{os.environ.get('USER', 'root')}@{SERVER}",
            "queue": queue, "project": merged.get("A") or "_pbs_project_default", "select": select, "nodect": nodect,
            "walltime": wall, "resources": res, "script": str(script), "output": out, "join": merged.get("j", "n"),
            "state": "H" if merged.get("h") else "Q", "ctime": now, "qtime": now, "mtime": now,
            "comment": "Not Running: Not enough free nodes available", "workdir": cwd,
            "env": {k: v for k, v in os.environ.items()} if merged.get("V") else {},
            "submit_args": " ".join(argv),
        }
        save(h, job)
    subprocess.Popen([sys.executable, os.path.abspath(__file__), "run", str(seq)], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     cwd=str(home()))
    print(job["id"])
    return 0


# --- the runner (server + MoM for one job) ---------------------------------------------------


def _free_nodes(h: Path, me: str) -> list[str]:
    busy = {n for j in all_jobs(h) if j["state"] in ("R", "E") and j["seq"] != me for n in j.get("exec_host", [])}
    return [n for n in _conf("nodes.json", DEFAULT_NODES) if n not in busy]


def _job_env(job: dict[str, Any], nodefile: Path) -> dict[str, str]:
    keep = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "SHELL", "TZ")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(job.get("env") or {})
    env.update({
        "PBS_JOBID": job["id"], "PBS_JOBNAME": job["name"], "PBS_NODEFILE": str(nodefile),
        "PBS_O_WORKDIR": job["workdir"], "PBS_O_HOST": SERVER, "PBS_QUEUE": job["queue"],
        "PBS_ACCOUNT": job["project"], "PBS_ENVIRONMENT": "PBS_BATCH", "PBS_JOBDIR": env.get("HOME", "/"),
        "PBS_O_PATH": os.environ.get("PATH", ""), "PBS_SERVER": SERVER,
    })
    return env


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _kill(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _update(seq: str, **fields: Any) -> dict[str, Any] | None:
    with locked() as h:
        job = load(h, seq)
        if job is None:
            return None
        job.update(fields, mtime=time.time())
        save(h, job)
        return job


def runner(seq: str) -> int:
    kill_delay = float(os.environ.get("PBS_EMULATOR_KILL_DELAY", "10"))
    _update(seq, runner_pid=os.getpid())
    while True:  # queued: wait for nodes (or a qdel)
        with locked() as h:
            job = load(h, seq)
            if job is None or job["state"] == "F":
                return 0
            free = _free_nodes(h, seq) if job["state"] == "Q" else []
            if len(free) >= job["nodect"]:
                hosts = free[: job["nodect"]]
                nodefile = h / "aux" / job["id"]
                nodefile.parent.mkdir(exist_ok=True)
                nodefile.write_text("".join(f"{n}\n" for n in hosts))
                now = time.time()
                chunks = "+".join(f"({n}:ncpus=1)" for n in hosts)
                job.update(state="R", substate=42, exec_host=hosts, stime=now, mtime=now, run_count=1,
                           exec_vnode=chunks, comment=f"Job run at {time.strftime('%a %b %d at %H:%M')} on {chunks}")
                save(h, job)
                break
        time.sleep(0.2)
    out = open(job["output"], "ab")  # noqa: SIM115 - held for the job's life
    proc = subprocess.Popen(["/bin/bash", job["script"]], cwd=job["workdir"], env=_job_env(job, nodefile),
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    _update(seq, session_id=proc.pid)
    deadline = job["stime"] + job["walltime"]
    rc: int | None = None
    why: tuple[str, int] | None = None  # (comment, Exit_status) when PBS ends it
    while rc is None:
        try:
            rc = proc.wait(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            pass
        current = load(home(), seq) or {}
        if current.get("delete_requested"):
            why = (f"Job deleted by {current.get('deleted_by', 'user')}", 256 + signal.SIGTERM)
        elif time.time() >= deadline:
            used = int(time.time() - job["stime"])
            why = (f"job killed: walltime {used} exceeded limit {job['walltime']}", EXIT_WALLTIME)
        if why is not None:
            break
    if why is not None:
        _update(seq, state="E", substate=51, comment=why[0])
    # The job's end, or PBS ending it: SIGTERM to what is left, SIGKILL after kill_delay.
    _kill(proc.pid, signal.SIGTERM)
    kill_at = time.time() + kill_delay
    while time.time() < kill_at and _group_alive(proc.pid):
        if rc is None:
            rc = proc.poll()
        time.sleep(0.05)
    _kill(proc.pid, signal.SIGKILL)
    if rc is None:
        rc = proc.wait()
    out.close()
    exit_status = why[1] if why is not None else (rc if rc >= 0 else 256 - rc)
    comment = why[0] if why is not None else f"{job['comment']} and finished"
    now = time.time()
    _update(seq, state="F", substate=92 if why is None else 91, Exit_status=exit_status, comment=comment,
            obittime=now, resources_used={"walltime": hms(now - job["stime"]), "ncpus": job["nodect"]})
    return 0


# --- qstat -----------------------------------------------------------------------------------


def _attrs(job: dict[str, Any]) -> dict[str, Any]:
    a: dict[str, Any] = {
        "Job_Name": job["name"], "Job_Owner": job["owner"], "job_state": job["state"], "queue": job["queue"],
        "server": SERVER, "Checkpoint": "u", "ctime": ctime(job["ctime"]),
        "Error_Path": f"{SERVER}:{job['output']}", "Hold_Types": "u" if job["state"] == "H" else "n",
        "Join_Path": job["join"], "Keep_Files": "n", "Mail_Points": "a", "mtime": ctime(job["mtime"]),
        "Output_Path": f"{SERVER}:{job['output']}", "Priority": 0, "qtime": ctime(job["qtime"]), "Rerunable": "True",
        "Resource_List": {"ncpus": job["nodect"], "nodect": job["nodect"], "place": job["resources"].get("place", "free"),
                          "select": job["select"], "walltime": hms(job["walltime"]),
                          **{k: v for k, v in job["resources"].items() if k not in ("select", "walltime", "place")}},
        "substate": job.get("substate", 10), "comment": job["comment"], "project": job["project"],
        "Submit_arguments": job["submit_args"], "Variable_List": {"PBS_O_HOME": os.environ.get("HOME", "/"),
                                                                  "PBS_O_WORKDIR": job["workdir"],
                                                                  "PBS_O_PS1": "\\u@\\h:\\w\\$ "},
        "etime": ctime(job["qtime"]),
    }
    if job.get("stime"):
        a["stime"] = ctime(job["stime"])
        a["exec_host"] = "+".join(f"{n}/0" for n in job["exec_host"])
        a["exec_vnode"] = job["exec_vnode"]
        a["session_id"] = job.get("session_id", 0)
        a["run_count"] = job.get("run_count", 1)
    if job["state"] == "F":
        if "Exit_status" in job:
            a["Exit_status"] = job["Exit_status"]
        a["obittime"] = ctime(job.get("obittime", job["mtime"]))
        if "resources_used" in job:
            a["resources_used"] = job["resources_used"]
    return a


def _dumps(doc: dict[str, Any]) -> str:
    # PBS writes the backslashes of Variable_List values unescaped (a known quirk of its JSON
    # output); so does the emulator, so that the plugin must cope with it.
    text = json.dumps(doc, indent=4)
    return text.replace("\\\\", "\\")


def qstat(argv: list[str]) -> int:
    fault = os.environ.get("PBS_EMULATOR_QSTAT_FAULT")
    if fault == "hang":
        time.sleep(3600)
    elif fault:
        print(fault)
        return 0
    history = "-x" in argv
    if "-Q" in argv:
        queues = _conf("queues.json", DEFAULT_QUEUES)
        queue_doc = {"timestamp": int(time.time()), "pbs_version": VERSION, "pbs_server": SERVER, "Queue": {
            q: {"queue_type": "Execution", "enabled": "True", "started": "True", "total_jobs": 0,
                "resources_max": {"nodect": lim.get("max_nodes", 1), "walltime": hms(lim.get("max_walltime", 3600))}}
            for q, lim in queues.items()}}
        print(json.dumps(queue_doc, indent=4))
        return 0
    if "-F" not in argv or "json" not in argv or "-f" not in argv:
        print("qstat (emulator): only -f -F json is emulated", file=sys.stderr)
        return 2
    ids = [a for a in argv if not a.startswith("-") and a != "json"]
    h = home()
    jobs = {j["seq"]: j for j in all_jobs(h)}
    chosen: dict[str, Any] = {}
    rc = 0
    for jid in ids or [j["id"] for j in jobs.values() if history or j["state"] != "F"]:
        job = jobs.get(seq_of(jid))
        if job is None:
            print(f"qstat: Unknown Job Id {jid}", file=sys.stderr)
            rc = 153
        elif job["state"] == "F" and not history:
            print(f"qstat: {job['id']} Job has finished, use -x or -H to obtain historical job information",
                  file=sys.stderr)
            rc = rc or 35
        else:
            chosen[job["id"]] = _attrs(job)
    doc: dict[str, Any] = {"timestamp": int(time.time()), "pbs_version": VERSION, "pbs_server": SERVER}
    if chosen:
        doc["Jobs"] = chosen
    print(_dumps(doc))
    return rc


def qselect(argv: list[str]) -> int:
    name = argv[argv.index("-N") + 1] if "-N" in argv else None
    history = "-x" in argv
    for job in all_jobs(home()):
        if (name is None or job["name"] == name) and (history or job["state"] != "F"):
            print(job["id"])
    return 0


def qdel(argv: list[str]) -> int:
    rc = 0
    for jid in [a for a in argv if not a.startswith("-")]:
        with locked() as h:
            job = load(h, seq_of(jid))
            if job is None:
                print(f"qdel: Unknown Job Id {jid}", file=sys.stderr)
                rc = 153
                continue
            if job["state"] == "F":
                print(f"qdel: Job has finished {job['id']}", file=sys.stderr)
                rc = 35
                continue
            if job["state"] in ("Q", "H"):
                job.update(state="F", comment="Job deleted as result of qdel request", mtime=time.time(),
                           obittime=time.time())
            else:
                job.update(delete_requested=True, deleted_by=os.environ.get("USER", "root"))
            save(h, job)
    return rc


# --- mpiexec (PALS) ----------------------------------------------------------------------------


def mpiexec(argv: list[str]) -> int:
    """PALS's ``mpiexec -n N --ppn P [--depth D] [--cpu-bind B] [--hosts h1,h2 | --hostfile F]
    [--env K=V] [--envall] [--] cmd ...``: starts the N ranks here (every host is this
    machine), with ``PALS_RANKID``, ``PALS_LOCAL_RANKID``, ``PALS_NODEID``, ``PMI_RANK``,
    ``PMI_SIZE`` and ``PMI_LOCAL_RANK`` set; forwards SIGTERM/SIGINT to them and exits with
    the first non-zero status. ``$PALS_EMULATOR_LOG`` gets one line per call (its argv)."""
    n, ppn, hosts = 1, 0, [os.uname().nodename]
    env = dict(os.environ)
    i = 0
    flags_with_value = {"-n", "-np", "--np", "--ppn", "-ppn", "--depth", "-d", "--cpu-bind", "--hosts", "-hosts",
                        "--hostfile", "-hostfile", "--env", "-env", "--mem-bind", "--gpu-bind"}
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "--":
        flag, _, inline = argv[i].partition("=")
        if flag in flags_with_value:
            value = inline if inline else argv[i + 1]
            i += 1 if inline else 2
        elif flag in ("--envall", "--no-transfer", "--label", "-l", "--line-buffer"):
            i += 1
            continue
        else:
            print(f"mpiexec: unrecognized argument {argv[i]}", file=sys.stderr)
            return 2
        if flag in ("-n", "-np", "--np"):
            n = int(value)
        elif flag in ("--ppn", "-ppn"):
            ppn = int(value)
        elif flag in ("--depth", "-d"):
            if int(value) < 1:
                print("mpiexec: depth must be at least 1", file=sys.stderr)
                return 2
        elif flag == "--cpu-bind":
            if not re.match(r"^(verbose,)?(none|core|depth|numa|socket|list:[\d,:-]+)$", value):
                print(f"mpiexec: invalid --cpu-bind {value}", file=sys.stderr)
                return 2
        elif flag in ("--hosts", "-hosts"):
            hosts = [h for h in value.split(",") if h]
        elif flag in ("--hostfile", "-hostfile"):
            hosts = [ln.split()[0] for ln in Path(value).read_text().splitlines() if ln.strip()]
        elif flag in ("--env", "-env"):
            key, _, val = value.partition("=")
            env[key] = val
    if i < len(argv) and argv[i] == "--":
        i += 1
    cmd = argv[i:]
    if not cmd:
        print("mpiexec: no command given", file=sys.stderr)
        return 2
    ppn = ppn or -(-n // len(hosts))
    if n > ppn * len(hosts):
        print(f"mpiexec: {n} ranks do not fit {len(hosts)} host(s) at {ppn} per node", file=sys.stderr)
        return 2
    log = os.environ.get("PALS_EMULATOR_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps(argv) + "\n")
    procs = []
    for rank in range(n):
        renv = {**env, "PALS_RANKID": str(rank), "PALS_LOCAL_RANKID": str(rank % ppn), "PALS_NODEID": str(rank // ppn),
                "PMI_RANK": str(rank), "PMI_SIZE": str(n), "PMI_LOCAL_RANK": str(rank % ppn),
                "PMI_LOCAL_SIZE": str(ppn), "PALS_HOST": hosts[rank // ppn]}
        procs.append(subprocess.Popen(cmd, env=renv))

    def forward(signum: int, frame: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [p.wait() for p in procs]
    return next((c if c > 0 else 128 - c for c in codes if c != 0), 0)


COMMANDS = {"qsub": qsub, "qstat": qstat, "qselect": qselect, "qdel": qdel, "mpiexec": mpiexec}


def main(command: str, argv: list[str]) -> int:
    try:
        return COMMANDS[command](argv)
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "run":
        sys.exit(runner(sys.argv[2]))
    sys.exit(main(sys.argv[1], sys.argv[2:]))
