"""Fault injection on a site run by ``balsamctl up``: the engine of tests/chaos and of
``python -m bench chaos`` (docs/design.md, "Chaos: what a fault run checks").

A run makes a fresh site on a store, creates jobs of a marker App plus a chain (each job
the child of the previous one), starts ``up`` and then, while jobs remain, injects faults
drawn from a seeded ``random.Random`` (the seed is printed and recorded: a failure replays):

* ``manager`` — ``kill -9`` of the controller manager (``up`` sees it and stops the rest);
* ``agent`` — ``kill -9`` of one node agent (its guardian kills its jobs; its lease expires
  and the placement reconciler re-queues them); then ``up`` is restarted (SIGINT, start)
  to bring the allocation back to full size;
* ``up`` — ``kill -9`` of ``up`` (its manager gets SIGTERM, its allocation is cancelled);
* ``tree`` — ``kill -9`` of every process of the site at once — ``up``, manager, runner,
  batch script, agents and their guardians — except the jobs' own processes, which live on
  as orphans: the harshest case for "one live run" (the next run of each fences them);
* ``manager+runner`` — ``kill -9`` of the controller manager and its allocation's runner:
  the agents must stop on their own (supervision), ``up`` ends;
* ``sigstop`` — SIGSTOP of one agent for 1.5 lease TTLs, then SIGCONT;
* ``store`` — the store goes away for ``outage`` seconds while everything keeps running: an
  etcd member stopped (``kill -9``, started again with its data; given as a
  :class:`StoreOutage`), or, on SQLite, another process holding the store's write lock (an
  operator's ``sqlite3`` shell, a backup: what makes a local SQLite store unwritable; reads
  go on, every write waits or fails);
* ``disk`` — the filesystem of the site (and of a SQLite store beside it) is filled, every byte
  and inode, for ``outage`` seconds, then given back (the caller mounts a small tmpfs there).

Nothing is restarted after ``store`` and ``disk``: every component must ride them out. Their
recovery is the time from the end of the outage to the first job state change; an ``up``
that ended during one is reported (``outage_exits``).

After each fault the site is brought back as an operator would: when ``up`` has ended (and
every process of the site is gone) it is started again. **Recovery** of a fault is the time
from the component's restart (the new ``up``; for ``agent`` and ``sigstop``, the fault
itself: the agent is not restarted, its node is taken over) to the first job state change
after it (for ``agent`` and ``sigstop``, of a job that agent held), read from a store watch.

Each run of a job appends ``start <pid> <time>``, ``tick <pid> <time>`` every 0.1 s and
``end <pid> <time>`` to its marker file, ``<markers>/<job name>`` (the App: ``mark.sh``; the
markers live outside the site, so that a full disk there does not eat the evidence). At the end the run
reports: jobs lost (missing or not JOB_FINISHED), overlapping runs (a run starting before
the previous run of the job wrote its last line), extra runs without a RUN_TIMEOUT in the
job's history, ``Traceback`` lines in the site's logs, whether the store's indexes match the
objects, and job processes of the site still alive after ``up`` stopped.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import store as st
from apis import App, BatchJob, Job, JobState, Node, ObjectMeta, Registry
from apis._registry import index_keys, index_prefix, kind_prefix
from apis._roles import SITE_INDEXES
from controllers._leader import LEASE_PREFIX

from ._harness import StoreTarget
from ._up import CLI, bench_env, cmdline, make_site, parent_pid

#: Faults that kill or stop processes of the site.
PROCESS_FAULTS = ("manager", "agent", "up", "tree", "manager+runner", "sigstop")
#: Faults of what the site stands on: the store away, the disk full (nothing is restarted).
OUTAGE_FAULTS = ("store", "disk")
FAULT_KINDS = PROCESS_FAULTS + OUTAGE_FAULTS
MARK_SH = """#!/bin/bash
# One run of a chaos job: a line when it starts, one per tick while it lives, one at its end,
# in $2/<job name> (BALSAM_JOB_KEY is <namespace>/<name>).
m="$2/${BALSAM_JOB_KEY##*/}"
echo "start $$ $EPOCHREALTIME" >> "$m"
for ((i = 0; i < $1; i++)); do sleep 0.1; echo "tick $$ $EPOCHREALTIME" >> "$m"; done
echo "end $$ $EPOCHREALTIME" >> "$m"
"""
#: A job hit by many faults in a row is killed (RUN_TIMEOUT) each time; the default retry
#: limit (3) would make it FAILED, which is the policy working, not a job lost.
RETRY = {"limit": 1000}
INDEXES = SITE_INDEXES  # every index a kind may write (the site role's list of them)


@dataclass
class ChaosConfig:
    jobs: int = 200
    chain: int = 10
    faults: int = 6
    kinds: tuple[str, ...] = FAULT_KINDS
    seed: int | None = None
    nodes: int = 2
    cpus: int = 4
    ticks: int = 3  # a job lives about ticks × 0.1 s
    long_every: int = 10  # every n-th job is long: it outlives a restart (orphans to fence)
    long_ticks: int = 60
    lease_ttl: float = 3.0
    gap: tuple[float, float] = (1.0, 3.0)  # seconds of normal running between faults
    timeout: float = 600.0  # the whole run
    outage: tuple[float, float] = (6.0, 12.0)  # seconds a store outage or a full disk lasts
    #: Before each fault, jobs are added until at least this many are not finished (0: never):
    #: every fault then meets work in flight, however fast the machine ran the rest.
    backlog: int = 0


class StoreOutage(Protocol):
    """Takes the store away and gives it back (``store`` faults)."""

    def begin(self) -> None: ...

    def end(self) -> None: ...


class SQLiteLockOutage:
    """Another process holds a SQLite store's write lock (``BEGIN EXCLUSIVE``; in WAL mode
    readers go on): every write of the site waits for it, then fails ``Unavailable``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None

    def begin(self) -> None:
        conn = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        self.conn = conn

    def end(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            self.conn.close()
            self.conn = None


class EtcdMemberOutage:
    """An etcd member ``kill -9``ed, then started again with its data (anything with
    ``kill()`` and ``restart()``: :class:`store.testing.EtcdMember`)."""

    def __init__(self, member: Any) -> None:
        self.member = member

    def begin(self) -> None:
        self.member.kill()

    def end(self) -> None:
        self.member.restart(timeout=60.0)


def fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory``: every byte and every inode (so that not even an
    empty file or directory can be made). Returns what to remove to give the space back."""
    filler = directory / ".filler"
    filler.mkdir()
    with open(filler / "bytes", "wb", buffering=0) as f:
        for chunk in (65536, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError:
                pass
    n = 0
    try:
        while True:
            (filler / str(n)).touch()
            n += 1
    except OSError:
        pass
    return filler


def release(filler: Path) -> None:
    """Give the bytes back first, then the inodes: nothing can start in between on a disk that
    has inodes but no bytes."""
    (filler / "bytes").unlink()
    shutil.rmtree(filler)


@dataclass
class Fault:
    kind: str
    at: float  # seconds since the run started
    target: str = ""
    recovery_s: float | None = None  # restart → first job state change
    note: str = ""
    #: After a restart of up: seconds from it to each step on the way to the first job change
    #: (``leader``: the leader lease written; ``batchjob``: up's BatchJob first written;
    #: ``batchjob_running``; ``nodes``: every agent registered; ``job``: the first job change).
    phases: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "at": round(self.at, 3), "target": self.target,
                "recovery_s": None if self.recovery_s is None else round(self.recovery_s, 3), "note": self.note,
                "phases": {k: round(v, 3) for k, v in self.phases.items()}}


@dataclass
class ChaosReport:
    seed: int
    jobs: int
    finished: int = 0
    lost: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    overlaps: list[str] = field(default_factory=list)
    runs: int = 0
    extra_runs: int = 0
    unexplained_extra_runs: list[str] = field(default_factory=list)
    unrecorded_starts: list[str] = field(default_factory=list)  # runs no history entry names
    outage_exits: list[str] = field(default_factory=list)  # up ended during a store/disk outage
    tracebacks: list[str] = field(default_factory=list)
    index_problems: list[str] = field(default_factory=list)
    leftover_processes: list[int] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    restarts: int = 0
    spontaneous_restarts: int = 0  # up ended without a fault (and was started again)
    elapsed_s: float = 0.0

    @property
    def recoveries(self) -> list[float]:
        return [f.recovery_s for f in self.faults if f.recovery_s is not None]

    def problems(self, lease_ttl: float | None = None) -> list[str]:
        """What broke, in words (empty: the run met every goal)."""
        out = []
        if self.lost:
            out.append(f"{len(self.lost)} job(s) lost: {self.lost[:5]}")
        if self.failed:
            out.append(f"{len(self.failed)} job(s) FAILED: {self.failed[:5]}")
        out += [f"overlapping runs: {o}" for o in self.overlaps[:5]]
        out += [f"extra run without RUN_TIMEOUT: {u}" for u in self.unexplained_extra_runs[:5]]
        out += [f"traceback: {t}" for t in self.tracebacks[:3]]
        out += [f"index: {p}" for p in self.index_problems[:5]]
        out += [f"up ended during an outage: {e}" for e in self.outage_exits[:5]]
        if self.leftover_processes:
            out.append(f"job processes alive after up stopped: {self.leftover_processes}")
        missing = [f.kind for f in self.faults if f.recovery_s is None]
        if missing:
            out.append(f"no recovery seen after faults {missing}")
        if lease_ttl is not None:
            slow = [f"{f.kind} {f.recovery_s:.1f}s" for f in self.faults
                    if f.recovery_s is not None and f.recovery_s > 2 * lease_ttl]
            if slow:
                out.append(f"recovery over 2 x lease TTL ({2 * lease_ttl:g}s): {slow}")
        return out

    def summary(self) -> str:
        rec = self.recoveries
        worst = f"{max(rec):.2f}s" if rec else "n/a"
        return (f"seed {self.seed}: {self.finished}/{self.jobs} JOB_FINISHED, {len(self.lost)} lost, "
                f"{len(self.overlaps)} overlapping, {self.extra_runs} extra runs "
                f"({len(self.unexplained_extra_runs)} without RUN_TIMEOUT, {len(self.unrecorded_starts)} never recorded), "
                f"{len(self.tracebacks)} tracebacks, "
                f"{len(self.faults)} faults ({self.restarts} restarts of up, {self.spontaneous_restarts} without a fault), worst recovery {worst}, "
                f"{self.elapsed_s:.0f}s")


# --- processes of a site -------------------------------------------------------------------


def _environ(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read()
    except OSError:
        return b""


@dataclass
class SiteProcesses:
    """The processes of one site, by role (pids)."""

    manager: list[int] = field(default_factory=list)
    runners: list[int] = field(default_factory=list)
    scripts: list[int] = field(default_factory=list)
    agents: list[int] = field(default_factory=list)
    guardians: list[int] = field(default_factory=list)
    forkservers: list[int] = field(default_factory=list)  # the agents' Python apps' fork servers
    jobs: list[int] = field(default_factory=list)

    def control(self) -> list[int]:
        """Everything but the jobs' own processes."""
        return [*self.manager, *self.runners, *self.scripts, *self.agents, *self.guardians, *self.forkservers]


def site_processes(site: Path) -> SiteProcesses:
    text = str(site)
    env_mark = f"BALSAM_SITE_PATH={site}\0".encode()
    out = SiteProcesses()
    agents: set[int] = set()
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        argv = cmdline(pid)
        ppid = parent_pid(pid)
        if ppid is None or pid == os.getpid():
            continue
        parents[pid] = ppid
        if b"BALSAM_JOB_KEY=" in _environ(pid) and env_mark in b"\0" + _environ(pid):
            out.jobs.append(pid)
            continue
        if not any(text in a for a in argv):
            continue
        mod = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else ""
        if mod == "controllers":
            out.manager.append(pid)
        elif mod == "controllers.batch._local_runner" or any(a.endswith("_local_runner.py") for a in argv[:3]):
            out.runners.append(pid)
        elif mod == "nodeagent":
            out.agents.append(pid)
            agents.add(pid)
        elif argv and argv[0].endswith("bash"):
            out.scripts.append(pid)
    # An agent's pre-forked Python fork server has the agent's command line: not an agent.
    forkservers = {p for p in out.agents if parents.get(p) in agents}
    out.agents = [p for p in out.agents if p not in forkservers]
    out.forkservers = sorted(forkservers)
    agents -= forkservers
    for pid, ppid in parents.items():
        if ppid in agents and any(a.endswith("_guardian.py") for a in cmdline(pid)):
            out.guardians.append(pid)
    return out


def _kill(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _alive(pid: int) -> bool:
    return parent_pid(pid) is not None


# --- the run -------------------------------------------------------------------------------


class ChaosRun:
    """One fault-injection run on a fresh site under ``root`` on ``target``'s store."""

    def __init__(self, root: Path, target: StoreTarget, cfg: ChaosConfig, namespace: str = "default",
                 log: Callable[[str], None] | None = None, *, markers: Path | None = None,
                 outage: StoreOutage | None = None, disk: Path | None = None) -> None:
        """``markers``: where the runs' marker files go (default: beside ``root``); ``outage``:
        how to take the store away (default on SQLite: hold its write lock; on etcd none:
        ``store`` faults are then skipped with a note); ``disk``: a directory on the (small)
        filesystem that holds the site, to fill for ``disk`` faults (none: skipped)."""
        self.cfg = cfg
        self.t0 = time.monotonic()
        self.seed = cfg.seed if cfg.seed is not None else random.SystemRandom().randrange(1 << 30)
        self.rng = random.Random(self.seed)
        say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.log = lambda msg: say(f"[{time.monotonic() - self.t0:6.1f}s] {msg}")
        self.target = target
        self.site, self.registry = make_site(root, target, namespace)
        self.ns = self.site.namespace
        self.root = self.site.path
        self.up: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.spontaneous = 0  # times up ended without a fault
        self.names = [f"c{i:05d}" for i in range(cfg.jobs)] + [f"chain{i:03d}" for i in range(cfg.chain)]
        self.added = 0  # jobs added by _top_up
        self.markers = markers or root.parent / f"{root.name}-markers"
        self.markers.mkdir(parents=True, exist_ok=True)
        if outage is None and target.backend == "sqlite":
            outage = SQLiteLockOutage(target.path or Path(target.url.removeprefix("sqlite:///").split("?")[0]))
        self.outage = outage
        self.disk = disk

    # --- setup -------------------------------------------------------------------

    @property
    def _shares(self) -> dict[str, int]:
        """One CPU's share of a node per job (the default packing count, 1, is a whole node)."""
        return {"nodePackingCount": self.cfg.cpus}

    def _plain_jobs(self, names: list[str]) -> list[Job]:
        long_every = self.cfg.long_every or len(self.names) + 1
        return [Job(metadata=ObjectMeta(name=n, namespace=self.ns),
                    spec={"app": "mark-long" if i % long_every == 0 else "mark",
                          "workdir": f"chaos/{n}", "retry": RETRY, "resources": self._shares})  # type: ignore[arg-type]
                for i, n in enumerate(names)]

    def _top_up(self) -> None:
        """Keep ``cfg.backlog`` jobs unfinished before a fault (see ChaosConfig.backlog)."""
        if not self.cfg.backlog:
            return
        failed = self.registry.index_count(Job, "state", JobState.FAILED.value, self.ns)
        left = len(self.names) - self._finished() - failed
        if left >= self.cfg.backlog:
            return
        names = [f"t{i:05d}" for i in range(self.added, self.added + self.cfg.backlog)]
        self.registry.create_many(self._plain_jobs(names))
        self.added += len(names)
        self.names += names

    def _make_jobs(self) -> None:
        mark = self.root / "apps" / "mark.sh"
        mark.write_text(MARK_SH)
        for app, ticks in (("mark", self.cfg.ticks), ("mark-long", self.cfg.long_ticks)):
            self.registry.create(App(metadata=ObjectMeta(name=app, namespace=self.ns),
                                     spec={"command": f"/bin/bash {mark} {ticks} {self.markers}"}))  # type: ignore[arg-type]
        jobs = self._plain_jobs(self.names[: self.cfg.jobs])
        for i in range(self.cfg.chain):
            parents = [f"chain{i - 1:03d}"] if i else []
            jobs.append(Job(metadata=ObjectMeta(name=f"chain{i:03d}", namespace=self.ns),
                            spec={"app": "mark", "workdir": f"chaos/chain{i:03d}", "parents": parents,
                                  "retry": RETRY, "resources": self._shares}))  # type: ignore[arg-type]
        for i in range(0, len(jobs), 5000):
            self.registry.create_many(jobs[i : i + 5000])

    def _start_up(self) -> float:
        argv = [sys.executable, "-c", CLI, "up", "--site", str(self.root), "--store", self.target.url,
                "-n", self.ns, "--nodes", str(self.cfg.nodes), "--cpus", str(self.cfg.cpus),
                "--lease-ttl", f"{self.cfg.lease_ttl:g}"]
        log = open(self.root / "logs" / "up.out", "ab")  # noqa: SIM115 - the child keeps it
        try:
            self.up = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=bench_env(), cwd=str(self.root), start_new_session=True)
        finally:
            log.close()
        return time.monotonic()

    def _finished(self) -> int:
        return self.registry.index_count(Job, "state", JobState.JOB_FINISHED.value, self.ns)

    def _done(self) -> bool:
        """Every job terminal (a FAILED one is reported, not waited for)."""
        failed = self.registry.index_count(Job, "state", JobState.FAILED.value, self.ns)
        return self._finished() + failed >= len(self.names)

    # --- bringing the site back ----------------------------------------------------

    def _wait_site_down(self, timeout: float) -> None:
        """Until ``up`` has exited and no control process of the site is left."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.up is None or self.up.poll() is not None) and not site_processes(self.root).control():
                return
            time.sleep(0.1)
        left = site_processes(self.root).control()
        what = "; ".join(f"{pid}: {' '.join(cmdline(pid)[:4])}" for pid in left)
        raise RuntimeError(f"the site did not stop within {timeout:.0f}s after a fault ({what}); "
                           f"up {'ended' if self.up and self.up.poll() is not None else 'runs'}")

    def _restart(self) -> float:
        self._wait_site_down(4 * self.cfg.lease_ttl + 60)
        self.log("chaos: site down; starting up again")
        self.restarts += 1
        return self._start_up()

    def _first_change(self, since_rev: int, names: set[str] | None, timeout: float,
                      phases: dict[str, float] | None = None, t0: float = 0.0) -> float | None:
        """time.monotonic() of the first job write after ``since_rev`` (of ``names`` if given).
        With ``phases``, also the steps of a restart on the way to it, in seconds after ``t0``."""
        prefix = kind_prefix(Job, self.ns)
        watched = prefix if phases is None else "/"
        leader = f"{LEASE_PREFIX}{self.ns}"
        bj_prefix, node_prefix = kind_prefix(BatchJob, self.ns), kind_prefix(Node, self.ns)
        nodes: set[str] = set()
        w = self.registry.store.watch(watched, start_revision=since_rev + 1)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for ev in w.poll(0.05):
                    now = time.monotonic()
                    key = ev.kv.key
                    if phases is not None and ev.type == "PUT":
                        if key == leader:
                            phases.setdefault("leader", now - t0)
                        elif key.startswith(bj_prefix) and ev.kv.create_revision > since_rev:
                            # The new up's BatchJob (not the stale one it removes first).
                            phases.setdefault("batchjob", now - t0)
                            if b'"running"' in ev.kv.value and b"deletionTimestamp" not in ev.kv.value:
                                phases.setdefault("batchjob_running", now - t0)
                        elif key.startswith(node_prefix):
                            nodes.add(key)
                            if len(nodes) >= self.cfg.nodes:
                                phases.setdefault("nodes", now - t0)
                    if ev.type == "PUT" and key.startswith(prefix) and (names is None or key[len(prefix):] in names):
                        if phases is not None:
                            phases["job"] = now - t0
                        return now
                if self._done():
                    return None
        finally:
            w.close()
        return None

    def _bound_to(self, node: str) -> set[str]:
        return set(self.registry.index_names(Job, "boundnode", node, self.ns))

    def _agent_node(self, pid: int) -> str:
        argv = cmdline(pid)
        return argv[argv.index("--name") + 1] if "--name" in argv else ""

    def _wait_ready(self) -> None:
        """Until every agent is registered and the manager runs (``up`` started again when
        it gives up by itself, as it does when agents start slowly on a loaded machine)."""
        deadline = self.t0 + self.cfg.timeout
        while time.monotonic() < deadline:
            if self.up is not None and self.up.poll() is not None:
                # It gave up by itself (an agent slow to start on a loaded machine): again.
                self.log(f"chaos: up exited with {self.up.returncode} on its own; starting it again: "
                         f"{self._tail('up.out', 2)}")
                self.spontaneous += 1
                self._restart()
                continue
            procs = site_processes(self.root)
            if len(procs.agents) == self.cfg.nodes and procs.manager and \
                    self.registry.store.count(kind_prefix(Node, self.ns)) >= self.cfg.nodes:
                return
            time.sleep(0.05)
        raise RuntimeError(f"up not ready within the run's {self.cfg.timeout:.0f}s: {self._tail('up.out')}")

    def _tail(self, name: str, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.root / "logs" / name).read_text(errors="replace").splitlines()[-lines:])
        return ""

    # --- faults ----------------------------------------------------------------------

    def _inject(self, kind: str) -> Fault:
        fault = Fault(kind, time.monotonic() - self.t0)
        procs = site_processes(self.root)
        rev = self.registry.store.current_revision()
        if kind in ("agent", "sigstop"):
            if not procs.agents:
                fault.note = "no agent running"
                return fault
            pid = self.rng.choice(sorted(procs.agents))
            node = self._agent_node(pid)
            fault.target = node
            held = self._bound_to(node)
            if kind == "agent":
                _kill([pid])
                killed_at = time.monotonic()
                seen = self._first_change(rev, held or None, 4 * self.cfg.lease_ttl + 30)
                fault.recovery_s = None if seen is None else seen - killed_at
                if not held:
                    fault.note = "the agent held no job"
                # Its node is taken over; the operator then restarts up for the full allocation.
                if self.up is not None and self.up.poll() is None:
                    self.up.send_signal(signal.SIGINT)
                self._restart()
                return fault
            else:
                os.kill(pid, signal.SIGSTOP)
                stopped_at = time.monotonic()
                try:
                    seen = self._first_change(rev, held or None, 1.5 * self.cfg.lease_ttl)
                    time.sleep(max(0.0, stopped_at + 1.5 * self.cfg.lease_ttl - time.monotonic()))
                finally:
                    os.kill(pid, signal.SIGCONT)
                if seen is None:
                    seen = self._first_change(rev, held or None, 4 * self.cfg.lease_ttl + 30)
                fault.recovery_s = None if seen is None else seen - stopped_at
                if not held:
                    fault.note = "the agent held no job"
                return fault
        elif kind in OUTAGE_FAULTS:
            return self._outage(fault)
        elif kind == "manager":
            fault.target = ",".join(map(str, procs.manager))
            _kill(procs.manager)
        elif kind == "up":
            fault.target = str(self.up.pid if self.up else "")
            if self.up is not None:
                _kill([self.up.pid])
        elif kind == "manager+runner":
            fault.target = ",".join(map(str, procs.manager + procs.runners))
            _kill(procs.manager + procs.runners)
        elif kind == "tree":
            victims = ([self.up.pid] if self.up is not None else []) + procs.control()
            fault.target = f"{len(victims)} processes ({len(procs.jobs)} job processes left running)"
            _kill(victims)
        else:
            raise ValueError(f"unknown fault kind {kind!r}")
        if self.up is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.up.wait(timeout=4 * self.cfg.lease_ttl + 60)
        # The old processes' last writes (agents recording RUN_TIMEOUT on their way out) are
        # not recovery: the revision is read once the site is down, just before the restart.
        self._wait_site_down(4 * self.cfg.lease_ttl + 60)
        rev = self.registry.store.current_revision()
        restarted = self._restart()
        seen = self._first_change(rev, None, 4 * self.cfg.lease_ttl + 90, phases=fault.phases, t0=restarted)
        fault.recovery_s = None if seen is None else seen - restarted
        return fault

    def _outage(self, fault: Fault) -> Fault:
        """The store away or the disk full for ``cfg.outage`` seconds, nothing restarted; the
        engine itself does not touch the store meanwhile. Recovery: from the end of it."""
        seconds = self.rng.uniform(*self.cfg.outage)
        if fault.kind == "store" and self.outage is None:
            fault.note = "skipped: no way to take this store away"
            return fault
        if fault.kind == "disk" and self.disk is None:
            fault.note = "skipped: the site is not on a filesystem of its own"
            return fault
        if fault.kind == "store":
            assert self.outage is not None
            fault.target = f"{type(self.outage).__name__} for {seconds:.1f}s"
            self.outage.begin()
            try:
                time.sleep(seconds)
            finally:
                self.outage.end()
        else:
            assert self.disk is not None
            fault.target = f"{self.disk} full for {seconds:.1f}s"
            filler = fill(self.disk)
            try:
                time.sleep(seconds)
            finally:
                release(filler)
        back = time.monotonic()
        rev = self._revision_after_outage()
        seen = self._first_change(rev, None, 4 * self.cfg.lease_ttl + 90)
        fault.recovery_s = None if seen is None else max(0.0, seen - back)
        if self.up is not None and self.up.poll() is not None:
            fault.note = f"up exited with {self.up.returncode}: {self._tail('up.out', 2)}"
        return fault

    def _revision_after_outage(self, timeout: float = 60.0) -> int:
        """The store's revision once it answers again (writes that landed during a full disk
        are not recovery; the first one after the outage is)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.registry.store.current_revision()
            except st.StoreError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    # --- the whole run ---------------------------------------------------------------

    def run(self) -> ChaosReport:
        cfg = self.cfg
        self.log(f"chaos: seed {self.seed} ({len(self.names)} jobs, {cfg.faults} faults of {list(cfg.kinds)}, "
                 f"{cfg.nodes} nodes x {cfg.cpus} cpus, lease TTL {cfg.lease_ttl:g}s) in {self.root}")
        report = ChaosReport(self.seed, len(self.names))  # .jobs grows with _top_up
        kinds = list(cfg.kinds)
        self.rng.shuffle(kinds)
        plan = [kinds[i % len(kinds)] for i in range(cfg.faults)]
        self.rng.shuffle(plan)
        deadline = self.t0 + cfg.timeout
        try:
            self._start_up()
            self._wait_ready()
            self._make_jobs()
            for kind in plan:
                time.sleep(self.rng.uniform(*cfg.gap))
                self._top_up()
                if self._done() or time.monotonic() > deadline:
                    break
                if self.up is None or self.up.poll() is not None:  # ended by itself: bring it back
                    self.spontaneous += 1
                    self._restart()
                    self._wait_ready()
                fault = self._inject(kind)
                report.faults.append(fault)
                rec = "none seen" if fault.recovery_s is None else f"{fault.recovery_s:.2f}s"
                self.log(f"chaos: fault {len(report.faults)}/{len(plan)} {kind} {fault.target}: recovery {rec}"
                         f" ({self._finished()}/{len(self.names)} finished)")
                if fault.kind in OUTAGE_FAULTS and fault.note.startswith("up exited"):
                    report.outage_exits.append(f"{kind}: {fault.note}")
                if kind != "sigstop":
                    self._wait_ready()
            while not self._done():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {self._finished()} of {len(self.names)} jobs finished after "
                                       f"{cfg.timeout:.0f}s")
                if self.up is not None and self.up.poll() is not None:
                    self.spontaneous += 1
                    self._restart()
                    self._wait_ready()
                time.sleep(0.1)
        finally:
            self._stop()
        report.jobs = len(self.names)
        report.restarts = self.restarts
        report.spontaneous_restarts = self.spontaneous
        report.elapsed_s = time.monotonic() - self.t0
        self._check(report)
        self.log(f"chaos: {report.summary()}")
        return report

    def _stop(self) -> None:
        if self.up is not None and self.up.poll() is None:
            self.up.send_signal(signal.SIGINT)
            try:
                self.up.wait(60)
            except subprocess.TimeoutExpired:
                self.up.kill()
                self.up.wait()
        with contextlib.suppress(RuntimeError):
            self._wait_site_down(60)
        left = site_processes(self.root).control()
        _kill(left)

    # --- checks --------------------------------------------------------------------

    def _check(self, report: ChaosReport) -> None:
        jobs = {j.name: j for j in self.registry.list(Job, self.ns)[0]}
        report.lost = [n for n in self.names if n not in jobs]
        report.failed = [n for n, j in jobs.items() if j.status.state is JobState.FAILED]
        report.finished = sum(1 for j in jobs.values() if j.status.state is JobState.JOB_FINISHED)
        report.lost += [n for n, j in jobs.items()
                        if j.status.state not in (JobState.JOB_FINISHED, JobState.FAILED)]
        for name, job in jobs.items():
            runs = read_runs(self.markers / name)
            report.runs += len(runs)
            report.overlaps += [f"{name}: {o}" for o in overlapping(runs)]
            extra = len(runs) - 1
            if extra > 0:
                report.extra_runs += extra
                states = [h.to_state for h in job.status.history]
                if JobState.RUN_TIMEOUT in states:
                    pass
                elif len(runs) > states.count(JobState.RUNNING):
                    # A run its agent never recorded (killed between the spawn and the
                    # → RUNNING write): the job was only unbound. Not an overlap; reported.
                    report.unrecorded_starts.append(f"{name}: {len(runs)} runs, "
                                                    f"{states.count(JobState.RUNNING)} recorded")
                else:
                    report.unexplained_extra_runs.append(
                        f"{name}: {len(runs)} runs, history {[s.value for s in states]}")
        report.tracebacks = tracebacks(self.root / "logs")
        report.index_problems = index_problems(self.registry, self.ns)
        deadline = time.monotonic() + 30
        while (left := site_processes(self.root).jobs) and time.monotonic() < deadline:
            time.sleep(0.1)
        report.leftover_processes = left
        _kill(left)


@dataclass
class Run:
    pid: str
    start: float
    last: float
    ended: bool


def read_runs(marker: Path) -> list[Run]:
    """The runs a job's ``marker`` file records, in start order."""
    runs: dict[str, Run] = {}
    with contextlib.suppress(OSError):
        for line in marker.read_text().splitlines():
            parts = line.split()
            if len(parts) != 3:
                continue  # a line cut short by a kill
            what, pid, t = parts[0], parts[1], float(parts[2].replace(",", "."))
            if what == "start":
                runs[pid] = Run(pid, t, t, False)
            elif pid in runs:
                runs[pid].last = max(runs[pid].last, t)
                runs[pid].ended = runs[pid].ended or what == "end"
    return sorted(runs.values(), key=lambda r: r.start)


def overlapping(runs: list[Run]) -> list[str]:
    """Pairs of runs of one job alive at the same time: a run that started before an earlier
    one wrote its last line."""
    out = []
    for a, b in zip(runs, runs[1:], strict=False):
        if b.start < a.last:
            out.append(f"run {b.pid} started at {b.start:.3f} while run {a.pid} was alive until {a.last:.3f}")
    return out


def tracebacks(logs: Path) -> list[str]:
    out = []
    for f in sorted(logs.rglob("*")):
        if not f.is_file():
            continue
        with contextlib.suppress(OSError):
            lines = f.read_text(errors="replace").splitlines()
            for i, line in enumerate(lines):
                if "Traceback (most recent call last)" in line:
                    tail = next((x for x in lines[i + 1 : i + 60] if x and not x.startswith(" ")), "")
                    out.append(f"{f.name}: {tail}")
    return out


def index_problems(registry: Registry, namespace: str) -> list[str]:
    """Index keys that name no object (or the wrong one) and objects missing an index key."""
    problems = []
    for kind in (Job, Node):
        want: set[str] = set()
        for obj in registry.list(kind, namespace)[0]:
            want |= index_keys(obj)
        have: set[str] = set()
        for idx in INDEXES:
            prefix = index_prefix(kind, idx, namespace)
            after = None
            while True:
                r = registry.store.range(prefix, limit=20000, start_after=after, keys_only=True)
                have |= {kv.key for kv in r.kvs}
                after = r.continue_key
                if after is None:
                    break
        problems += [f"{kind.KIND} index key without its object state: {k}" for k in sorted(have - want)[:10]]
        problems += [f"{kind.KIND} index key missing: {k}" for k in sorted(want - have)[:10]]
    return problems


def run_chaos(root: Path, target: StoreTarget, cfg: ChaosConfig, namespace: str = "default",
              log: Callable[[str], None] | None = None, *, markers: Path | None = None,
              outage: StoreOutage | None = None, disk: Path | None = None) -> ChaosReport:
    root.mkdir(parents=True, exist_ok=True)
    run = ChaosRun(root, target, cfg, namespace, log, markers=markers, outage=outage, disk=disk)
    try:
        return run.run()
    finally:
        run.registry.store.close()


__all__ = ["FAULT_KINDS", "OUTAGE_FAULTS", "PROCESS_FAULTS", "ChaosConfig", "ChaosReport", "ChaosRun",
           "EtcdMemberOutage", "Fault", "SQLiteLockOutage", "StoreOutage", "fill", "overlapping", "read_runs",
           "release", "run_chaos"]
