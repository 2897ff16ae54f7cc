"""``balsamctl up``: a controller manager, and an allocation of N node agents on this machine
through the ``local`` scheduler plugin, with live progress; ``--until-done`` exits when every
job is JOB_FINISHED or FAILED, or as soon as none of the rest can move.

The allocation is a BatchJob like any other: ``<host>-up``, ``spec.scheduler: local`` (also on
a Slurm site: ``up`` runs here), ``spec.nodeSize`` from ``--cpus/--gpus``, ``wallTimeMin`` from
``--wall-time-min``. ``up`` creates it and, being the local scheduler's only client for it,
starts the allocation at once (``LocalScheduler.submit``, idempotent by the scheduler job
name): the N agents start up while the controller manager does, not after it has led,
listed and submitted — on a restart, the start-up chain was manager, then agents, one after
the other. The batch reconciler's submit finds that allocation and records it (queued,
running) as for any other. One left by an ``up`` that was killed outright (its allocation
ended with it, but no controller manager recorded that) is removed first — by ``up`` itself
when its local allocation has ended (nothing is left to cancel, so its finalizer is dropped
without waiting for a controller manager to lead), else by the batch reconciler; one whose
allocation still runs belongs to another ``up`` of this site, and ``up`` refuses to start
beside it. ``up`` keeps it going: at its wall time (``status.schedulerState`` TIMEOUT)
it is submitted again. Any other end (agents that could not start or all exited, a delete by
hand, a refused submit), or an agent of the running allocation missing longer than its lease
allows, ends ``up`` with status 1 and the reason. On the way out ``up`` deletes it (the reconciler cancels it: the
agents mark their running jobs RUN_TIMEOUT and deregister) and waits for its processes to
end before it stops the controller manager.

Progress is read from the state index (``Store.count`` of ``/index/jobs/state/...``, no job is
decoded) at the display's refresh rate: ``up`` only shows the work, it does none of it, so it
keeps no watch that would make it read every write of the site. The end is detected from the
same counts: ``count(jobs)`` before and after the per-state counts, and the terminal states
are absorbing, so "all terminal" is never concluded from counts that straddle a transition.

The controller manager runs in a session of its own (a terminal's Ctrl-C reaches ``up``
alone, which then stops everything in order) and gets SIGTERM from the kernel if ``up`` itself
dies (``PR_SET_PDEATHSIG``). The allocation is not a child of ``up``, so ``up`` tells the
local plugin its pid (``BALSAM_LOCAL_OWNER`` in the controller manager's environment): the
allocation ends, as if cancelled, when ``up`` ends, even killed outright — no agent outlives it.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from apis import (
    AlreadyExists,
    ApiError,
    BatchJob,
    BatchJobSpec,
    Conflict,
    Job,
    JobState,
    Node,
    NodeSize,
    NotFound,
    ObjectMeta,
    Registry,
    Site,
    SiteSpec,
    StoreUnavailable,
    get_condition,
)
from controllers.batch.local import OWNER_ENV, LocalScheduler, state_dir
from controllers.batch.reconciler import FINALIZER
from controllers.batch.scheduler import SchedulerError, SubmitRequest
from controllers.batch.script import TemplateError, scheduler_job_name, script_paths, write_script

TERMINAL = (JobState.JOB_FINISHED, JobState.FAILED)
#: States a job can rest in with nothing working on it: waiting for parents or for room.
RESTING = (JobState.AWAITING_PARENTS, JobState.PREPROCESSED, JobState.RESTART_READY)
TICK = 0.25  # seconds between progress refreshes (and end checks)
QUIET = 2.0  # seconds without any change before asking whether the rest can still move
GRACE = 15.0  # seconds children get to stop (agents kill their jobs first) before SIGKILL
PR_SET_PDEATHSIG = 1
#: Default wall time of up's allocation (minutes): a day; it is submitted again when it ends.
DEFAULT_WALL_TIME_MIN = 1440.0
#: An agent of the running allocation may take this long to register (seconds) before up
#: gives up on it: a Python start-up on a loaded login node (load 20+ on 2 cores) takes 20 s.
AGENT_START_GRACE = 60.0
#: Label on up's BatchJob: the site it serves.
UP_LABEL = "balsam.io/up"
#: The nodeagent CLI's --lease-ttl default, from the environment the allocation inherits.
NODE_LEASE_TTL_ENV = "BALSAM_NODE_LEASE_TTL"
LIVE = ("pending_submission", "queued", "running")


def say(line: str, stream: TextIO | None = None) -> None:
    """A line on stderr (or ``stream``). When up's output is a file on a full disk (a login
    node's home, a site's logs), the line is lost, and up goes on: a print that raised ENOSPC
    used to end up, and with it the allocation, in the middle of an outage it must ride out."""
    try:
        print(line, file=stream or sys.stderr, flush=True)
    except OSError:
        pass


def _pdeathsig() -> Callable[[], None] | None:
    """A preexec_fn that asks the kernel to SIGTERM the child when ``up`` dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: nothing is loaded after fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # up died before the prctl took effect
            os._exit(1)

    return preexec


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def last_line(self) -> str:
        try:
            lines = [ln for ln in self.log.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1].strip() if lines else ""


@dataclass
class Children:
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, preexec_fn=_pdeathsig(),
                                    env={**os.environ, **env} if env else None)
        self.children.append(Child(name, proc, log))

    def exited(self) -> list[Child]:
        return [c for c in self.children if c.proc.poll() is not None]

    def stop(self, grace: float = GRACE) -> None:
        """SIGTERM every child, wait up to ``grace`` seconds in all, SIGKILL the rest."""
        for c in self.children:
            if c.proc.poll() is None:
                c.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for c in self.children:
            try:
                c.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                c.proc.kill()
                c.proc.wait()


def state_counts(registry: Registry, namespace: str) -> dict[JobState, int]:
    """Jobs per state, from the state index (no job is read)."""
    return {s: registry.index_count(Job, "state", s.value, namespace) for s in JobState}


def all_done(registry: Registry, namespace: str) -> tuple[dict[JobState, int], bool]:
    """The counts, and whether every job is terminal. ``count(jobs)`` is read before and
    after the per-state counts; since a terminal job stays terminal, equal totals that
    equal the terminal counts mean every job was terminal. The per-state counts are read one
    after another, so a job that moved between two of them is counted in both: not done until
    a read has every job once (the summary line printed from it would say "1 stuck")."""
    before = registry.count(Job, namespace)
    counts = state_counts(registry, namespace)
    after = registry.count(Job, namespace)
    terminal = sum(counts[s] for s in TERMINAL)
    return counts, before == after == terminal == sum(counts.values())


def stuck_reason(registry: Registry, namespace: str, counts: dict[JobState, int]) -> str | None:
    """Why none of the remaining jobs can move, or None when some still can.

    Stuck jobs are: runnable jobs no node can ever hold (``Unschedulable``) or that the user
    suspended (``spec.suspend``: placement leaves them alone until resumed), and waiting jobs
    with a parent that failed, is missing, or is itself stuck (a child waits for all of its
    parents). Only jobs in resting states are read, and only when everything else is
    terminal."""
    active = {s for s, n in counts.items() if n and s not in TERMINAL}
    if not active or not active <= set(RESTING):
        return None
    unschedulable: dict[str, str] = {}
    suspended: dict[str, str] = {}
    for state in (JobState.PREPROCESSED, JobState.RESTART_READY):
        if not counts[state]:
            continue
        for job in Job.objects.using(registry).filter(state=state.value, namespace=namespace):
            if job.status.placement is not None and job.status.placement.nodes:
                return None  # bound: its agent is about to start it
            c = get_condition(job.status.conditions, "Unschedulable")
            if c is not None and c.status == "True":
                unschedulable[job.name] = c.message or c.reason or "Unschedulable"
            elif job.spec.suspend:
                suspended[job.name] = "spec.suspend is true"
            else:
                return None
    waiting = list(Job.objects.using(registry).filter(state=JobState.AWAITING_PARENTS.value, namespace=namespace)) \
        if counts[JobState.AWAITING_PARENTS] else []
    blocked: dict[str, str] = {}
    for job in waiting:
        for ctype in ("ParentFailed", "ParentMissing"):
            c = get_condition(job.status.conditions, ctype)
            if c is not None and c.status == "True":
                blocked[job.name] = c.message or ctype
                break
    changed = True
    while changed:  # parents that can never finish block their children in turn
        changed = False
        for job in waiting:
            if job.name in blocked:
                continue
            stuck_parent = next((p for p in job.spec.parents if p in blocked or p in unschedulable or p in suspended),
                                None)
            if stuck_parent is not None:
                blocked[job.name] = f"parent job {stuck_parent} cannot run"
                changed = True
    if len(blocked) < len(waiting):
        return None
    parts = []
    for what, jobs in (("Unschedulable", unschedulable), ("suspended", suspended),
                       ("wait on parents that cannot finish", blocked)):
        if jobs:
            name, why = next(iter(jobs.items()))
            parts.append(f"{len(jobs)} job(s) {what}, e.g. {name}: {why}")
    return "no job can progress: " + ". ".join(parts)


def progress_table(counts: dict[JobState, int], rate: float, elapsed: float, nodes: int) -> Table:
    t = Table(title=f"balsamctl up: {nodes} node(s), {elapsed:.0f}s", show_edge=False, min_width=44)
    t.add_column("STATE")
    t.add_column("JOBS", justify="right")
    for s in JobState:
        if counts.get(s):
            t.add_row(s.value, str(counts[s]))
    t.caption = f"{sum(counts.values())} jobs, {rate:.1f} jobs/s finished"
    return t


def progress_line(counts: dict[JobState, int], rate: float, elapsed: float) -> str:
    states = " ".join(f"{s.value}={n}" for s, n in counts.items() if n) or "no jobs"
    return f"[{elapsed:5.1f}s] {states} ({rate:.1f} jobs/s)"


def allocation_name() -> str:
    """The name of up's BatchJob on this host: ``<host>-up``."""
    host = re.sub(r"[^a-z0-9-]+", "-", os.uname().nodename.split(".")[0].lower()).strip("-") or "node"
    return f"{host}-up"


def node_name(i: int) -> str:
    """The Node of up's i-th agent (the local batch script names them ``<batch job>-<i>``)."""
    return f"{allocation_name()}-{i}"


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


class Allocation:
    """up's BatchJob: made (after removing a stale one), watched once per tick, submitted
    again at its wall time, and deleted — with its processes waited for — on the way out."""

    def __init__(self, registry: Registry, opts: UpOptions) -> None:
        self.registry = registry
        self.opts = opts
        self.ns = opts.namespace
        self.name = allocation_name()
        self.nodes = [node_name(i) for i in range(opts.nodes)]
        self.uid: str | None = None  # the BatchJob we made; None while (re)making it
        self.scheduler_ids: set[str] = set()  # local allocations of ours, to wait for at the end
        self.site = self._ensure_site()
        # Allocations started here end with this process, like those the manager starts for us.
        self.local = LocalScheduler(state_dir(Path(self.site.spec.path)), owner=os.getpid())
        self.output = Path(self.site.spec.path) / "logs" / "batch" / f"{self.name}.out"
        self._missing: dict[str, float] = {}
        self._nodes_checked = 0.0

    def _ensure_site(self) -> Site:
        """The Site resource of this site directory; made (like ``init`` does) when missing,
        since a BatchJob needs one."""
        site = self.registry.try_get(Site, self.opts.site_name, self.ns)
        if site is None:
            try:
                site = self.registry.create(Site(metadata=ObjectMeta(name=self.opts.site_name, namespace=self.ns),
                                                 spec=SiteSpec(path=str(self.opts.site))))
            except AlreadyExists:
                site = self.registry.get(Site, self.opts.site_name, self.ns)
        return site

    def desired(self) -> BatchJob:
        o = self.opts
        return BatchJob(
            metadata=ObjectMeta(name=self.name, namespace=self.ns, labels={UP_LABEL: o.site_name}),
            spec=BatchJobSpec(site=o.site_name, num_nodes=o.nodes, wall_time_min=o.wall_time_min,
                              scheduler="local", node_size=NodeSize(cpus=o.cpus, gpus=o.gpus)),
        )  # fmt: skip

    def _local_id(self, bj: BatchJob) -> str | None:
        """The local allocation of ``bj``: recorded, or started but not recorded yet (its up
        starts it before the batch reconciler records it)."""
        sid = bj.status.scheduler_id or self.local.find(scheduler_job_name(bj))
        return sid if sid is not None and sid.startswith("local-") else None

    def _in_use(self, bj: BatchJob) -> bool:
        """Whether ``bj`` is another up's: live, and its local allocation still running
        (allocations end with the up they serve, so a running one has a live owner)."""
        sid = self._local_id(bj)
        return (bj.metadata.deletion_timestamp is None and bj.status.state in LIVE and sid is not None
                and self.local.alive(sid))

    def _ended_here(self, bj: BatchJob) -> bool:
        """Whether ``bj``'s allocation ran on this machine's local scheduler and has ended:
        nothing is left for the batch reconciler to cancel."""
        sid = self._local_id(bj)
        return bj.spec.scheduler == "local" and sid is not None and not self.local.alive(sid)

    def _remove_ended(self, bj: BatchJob) -> bool:
        """Remove a stale BatchJob whose allocation has ended (``_ended_here``) without
        waiting for a controller manager to lead: drop the batch finalizer (it stands for a
        cancel, and there is nothing left to cancel), then delete. A write that races the
        batch reconciler (Conflict) is looked at again next tick. True when it is gone."""
        try:
            if FINALIZER in bj.metadata.finalizers:
                new = bj.model_copy(deep=True)
                new.metadata.finalizers = [f for f in bj.metadata.finalizers if f != FINALIZER]
                # One already marked deleted goes with it (update_many returns nothing for it).
                self.registry.update_many([(bj, new)])
            if bj.metadata.deletion_timestamp is None:
                self._delete()
        except (Conflict, NotFound):
            return False
        return self.registry.try_get(BatchJob, self.name, self.ns) is None

    def _start_allocation(self, bj: BatchJob) -> None:
        """Start ``bj``'s allocation now, as the batch reconciler will (same script, same
        scheduler job name: its submit then finds this one). On any failure the reconciler's
        own submit does it, and reports why."""
        try:
            script = write_script(bj, self.site, getattr(self.registry.store, "url", None), sys.executable)
            sid = self.local.submit(SubmitRequest(
                job_name=scheduler_job_name(bj), script=script, output=script_paths(bj, self.site)[1],
                num_nodes=bj.spec.num_nodes, wall_time_min=bj.spec.wall_time_min,
                env={NODE_LEASE_TTL_ENV: f"{self.opts.lease_ttl:g}"}))  # fmt: skip
        except (TemplateError, SchedulerError, OSError) as e:
            say(f"allocation {self.name} not started here ({e}); the controller manager will submit it")
            return
        self.scheduler_ids.add(sid)

    @property
    def live(self) -> bool:
        return self.uid is not None

    def tick(self) -> Outcome | None:
        """One look at the BatchJob (one read): make it (again), or say why up must end."""
        bj = self.registry.try_get(BatchJob, self.name, self.ns)
        if self.uid is None:
            if bj is not None and self._ended_here(bj) and self._remove_ended(bj):
                bj = None  # a stale one (or our ended one), gone now: ours is made at once
            if bj is None:
                try:
                    made = self.registry.create(self.desired())
                except AlreadyExists:
                    return None  # made meanwhile: look again next tick
                self.uid = made.metadata.uid
                self._missing.clear()
                self._start_allocation(made)
            elif self._in_use(bj):
                return Outcome(1, err=f"another balsamctl up runs this site's allocation here (BatchJob {self.name}, "
                                      f"{self._local_id(bj)}): stop it first")
            elif bj.metadata.deletion_timestamp is None and not self._ended_here(bj):
                self._delete()  # a stale one, or our ended one: the reconciler removes it, then we make ours
            return None
        if bj is None or bj.metadata.uid != self.uid or bj.metadata.deletion_timestamp is not None:
            return Outcome(1, err=f"BatchJob {self.name} was deleted while up was running")
        self._note(bj)
        state = bj.status.state
        if state == "submit_failed":
            return Outcome(1, err=f"BatchJob {self.name} could not be submitted: {bj.status.message}")
        if state == "finished":
            if bj.status.scheduler_state == "TIMEOUT":
                say(f"allocation {self.name} reached its wall time ({bj.spec.wall_time_min:g} min); "
                    "submitting it again")
                self.uid = None
                self._delete()
                return None
            why = _last_line(self.output)
            # Its agents are gone with it: the jobs left wait for a node agent (describe's words).
            return Outcome(1, err=f"no node agent is running: allocation {self.name} ended: {bj.status.message}"
                           + (f"; its output ends with: {why}" if why else f" (see {self.output})"))
        if state == "running":
            return self._check_nodes()
        return None

    def _check_nodes(self) -> Outcome | None:
        """An agent of the running allocation that is not registered (never was, or went away)
        for longer than a lease lets a dead agent's Node linger: it is not coming back."""
        now = time.monotonic()
        if now - self._nodes_checked < 1.0:
            return None
        self._nodes_checked = now
        limit = max(2 * self.opts.lease_ttl + 10, AGENT_START_GRACE)
        nodes = self.registry.get_many(Node, self.nodes, self.ns)
        for name, node in zip(self.nodes, nodes, strict=True):
            if node is not None and node.spec.batch_job == self.name:
                self._missing.pop(name, None)
            elif now - self._missing.setdefault(name, now) > limit:
                why = _last_line(self.output)
                # The words describe shows for the jobs left waiting, when no agent is left at all.
                lead = "no node agent is running: " if not any(nodes) else ""
                return Outcome(1, err=f"{lead}node agent {name} of allocation {self.name} is not running"
                               + (f": {why}" if why else f" (see {self.output})"))
        return None

    def nodes_registered(self) -> bool:
        return self.live and all(n is not None and n.spec.batch_job == self.name
                                 for n in self.registry.get_many(Node, self.nodes, self.ns))

    def _note(self, bj: BatchJob) -> None:
        """Remember our allocation's local id: its processes are waited for at the end."""
        sid = bj.status.scheduler_id
        if sid and sid.startswith("local-"):
            self.scheduler_ids.add(sid)

    def _ours(self) -> BatchJob | None:
        bj = self.registry.try_get(BatchJob, self.name, self.ns)
        return bj if bj is not None and self.uid is not None and bj.metadata.uid == self.uid else None

    def _delete(self) -> None:
        try:
            self.registry.delete(BatchJob, self.name, self.ns)
        except NotFound:
            pass

    def release(self, manager_alive: Callable[[], bool], grace: float = GRACE) -> None:
        """Delete the BatchJob and wait until it is gone and its processes have ended: the
        controller manager cancels it (the agents mark their jobs RUN_TIMEOUT and deregister).
        If that does not happen within ``grace`` seconds (or the manager is gone), cancel the
        local allocation here (its runner SIGTERMs the agents, SIGKILLs them 10 s later)."""
        try:
            bj = self._ours()  # never another up's
            if bj is not None:
                self._note(bj)
                if bj.metadata.deletion_timestamp is None:
                    self._delete()
        except ApiError:
            pass  # the store is away: the runners are still ours to stop
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and manager_alive():
            try:
                bj = self.registry.try_get(BatchJob, self.name, self.ns)
            except ApiError:
                break
            if bj is not None and bj.metadata.uid == self.uid:
                self._note(bj)  # submitted while we were deleting it
            # Gone: ours, and a stale one we deleted (not another up's live one).
            gone = bj is None or (bj.metadata.uid != self.uid and bj.metadata.deletion_timestamp is None)
            if gone and not any(self.local.alive(sid) for sid in self.scheduler_ids):
                return
            time.sleep(0.1)
        left = [sid for sid in self.scheduler_ids if self.local.alive(sid)]
        for sid in left:
            try:
                self.local.cancel(sid)
            except SchedulerError:
                pass
        deadline = time.monotonic() + self.local.kill_wait + 5
        while any(self.local.alive(sid) for sid in left) and time.monotonic() < deadline:
            time.sleep(0.1)


class Stop:
    """SIGINT/SIGTERM set a flag (and end the wait between ticks) instead of raising."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        self._old: dict[int, object] = {}

    def __enter__(self) -> Stop:
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, _frame: object) -> None:
        self.signum = signum
        self.event.set()

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)  # type: ignore[arg-type]


@dataclass
class UpOptions:
    site: Path
    store_url: str
    namespace: str
    nodes: int
    cpus: int
    gpus: int
    until_done: bool
    lease_ttl: float
    site_name: str
    wall_time_min: float = DEFAULT_WALL_TIME_MIN


class StoreOutage:
    """up rides through a store outage (etcd down, a full disk): one line on stderr when it
    starts, one when it ends, ticks backed off to 2 s meanwhile; its children ride it out
    themselves (they retry with backoff too)."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.delay = TICK

    def failed(self, error: Exception) -> None:
        if self.since is None:
            self.since = time.monotonic()
            say(f"store unavailable ({error}); waiting for it")
        self.delay = min(2.0, self.delay * 2)

    def over(self) -> bool:
        """True once, on the first good tick after an outage."""
        if self.since is None:
            return False
        say(f"store reachable again after {time.monotonic() - self.since:.1f}s")
        self.since, self.delay = None, TICK
        return True


@dataclass
class Outcome:
    code: int
    out: str | None = None  # a line for stdout (the summary)
    err: str | None = None  # a line for stderr (why it failed)


def run_up(opts: UpOptions, open_registry: Callable[[], Registry], console: Console | None = None) -> int:
    """Start the controller manager and the allocation, show progress, return the exit
    status: 0 when every job finished (or, without ``--until-done``, when stopped by a
    signal); 1 when a job FAILED, when no job can progress, or when the controller manager or
    the allocation failed; 128+signal when ``--until-done`` is interrupted."""
    console = console or Console(stderr=True)
    logs = opts.site / "logs"
    common = ["--site", str(opts.site), "--store", opts.store_url, "-n", opts.namespace,
              "--lease-ttl", f"{opts.lease_ttl:g}"]
    children = Children()
    alloc: Allocation | None = None
    with Stop() as stop:
        try:
            # The child first: nothing of ours (store threads) is running yet when it forks.
            children.start("controller-manager", [sys.executable, "-m", "controllers", *common],
                           logs / "controller-manager.out",
                           env={OWNER_ENV: str(os.getpid()), NODE_LEASE_TTL_ENV: f"{opts.lease_ttl:g}"})
            alloc = Allocation(open_registry(), opts)
            outcome = _watch(opts, alloc, children, stop, console)
            if outcome.out:
                say(outcome.out, sys.stdout)
            if outcome.err:
                say(f"error: {outcome.err}")
            return outcome.code
        finally:
            manager = children.children[0] if children.children else None
            if alloc is not None:
                say(f"stopping allocation {alloc.name} and the controller manager...")
                alloc.release(lambda: manager is not None and manager.proc.poll() is None)
            children.stop()


def _watch(opts: UpOptions, alloc: Allocation, children: Children, stop: Stop, console: Console) -> Outcome:
    ns = opts.namespace
    registry = alloc.registry
    t0 = time.monotonic()
    counts, done = all_done(registry, ns)
    finished0 = counts[JobState.JOB_FINISHED] + counts[JobState.FAILED]
    last: dict[JobState, int] = {}
    last_change = t0
    printed: dict[JobState, int] | None = None
    printed_at = 0.0
    live = Live(console=console, refresh_per_second=4, transient=False) if console.is_terminal else None

    def show(final: bool = False) -> None:
        nonlocal printed, printed_at
        elapsed = time.monotonic() - t0
        rate = (counts[JobState.JOB_FINISHED] + counts[JobState.FAILED] - finished0) / max(elapsed, 1e-9)
        if live is not None:
            live.update(progress_table(counts, rate, elapsed, opts.nodes), refresh=final)
        elif counts != printed and (final or time.monotonic() - printed_at >= 2.0):
            printed, printed_at = dict(counts), time.monotonic()
            say(progress_line(counts, rate, elapsed))

    outage = StoreOutage()
    if live is not None:
        live.start()
    try:
        while True:
            if counts != last:
                last, last_change = counts, time.monotonic()
            show()
            if stop.event.is_set():
                show(final=True)
                return Outcome(128 + (stop.signum or signal.SIGINT) if opts.until_done else 0)
            dead = children.exited()
            if dead:
                c = dead[0]
                why = c.last_line()
                return Outcome(1, err=f"{c.name} exited with code {c.proc.returncode}"
                               + (f": {why}" if why else f" (see {c.log})"))
            try:
                ended = alloc.tick()
                if ended is not None:
                    show(final=True)
                    return ended
                if opts.until_done:
                    if done:
                        show(final=True)
                        return _summary(counts, registry, ns)
                    if time.monotonic() - last_change >= QUIET:
                        reason = None
                        if alloc.nodes_registered():
                            reason = stuck_reason(registry, ns, counts)
                        if reason is not None:
                            show(final=True)
                            return Outcome(1, out=summary_line(counts),
                                           err=f"{reason} (see 'balsamctl get jobs -o wide')")
                        last_change = time.monotonic()
                stop.event.wait(TICK)
                counts, done = all_done(registry, ns)
                if outage.over():
                    last_change = time.monotonic()  # the outage was no lack of progress
            except StoreUnavailable as e:
                outage.failed(e)
                stop.event.wait(outage.delay)
    finally:
        if live is not None:
            live.stop()


def summary_line(counts: dict[JobState, int]) -> str:
    total = sum(counts.values())
    finished, failed = counts[JobState.JOB_FINISHED], counts[JobState.FAILED]
    rest = total - finished - failed
    return f"{total} job(s): {finished} JOB_FINISHED, {failed} FAILED" + (f", {rest} stuck" if rest else "")


def _summary(counts: dict[JobState, int], registry: Registry, namespace: str) -> Outcome:
    failed = counts[JobState.FAILED]
    line = summary_line(counts)
    if failed:
        return Outcome(1, out=line, err=f"{failed} job(s) FAILED{failed_example(registry, namespace)} "
                                        "(see 'balsamctl get jobs --state FAILED -o wide')")
    return Outcome(0, out=line)


def failed_example(registry: Registry, namespace: str) -> str:
    """``, e.g. NAME: why`` for one FAILED job, in the words describe shows (its ``Failed``
    condition, else its last message)."""
    try:
        job = next(iter(Job.objects.using(registry).filter(state=JobState.FAILED.value, namespace=namespace)[:1]),
                   None)
    except ApiError:
        return ""
    if job is None:
        return ""
    c = get_condition(job.status.conditions, "Failed")
    why = c.message if c is not None and c.message else job.status.message
    return f", e.g. {job.name}: {why}" if why else f", e.g. {job.name}"
