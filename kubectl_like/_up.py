"""``balsamctl up``: a controller manager and N node agents as processes on this machine
(a laptop's allocation), with live progress; ``--until-done`` exits when every job is
JOB_FINISHED or FAILED, or as soon as none of the rest can move.

Progress is read from the state index (``Store.count`` of ``/index/jobs/state/...``, no job is
decoded) at the display's refresh rate: ``up`` only shows the work, it does none of it, so it
keeps no watch that would make it read every write of the site. The end is detected from the
same counts: ``count(jobs)`` before and after the per-state counts, and the terminal states
are absorbing, so "all terminal" is never concluded from counts that straddle a transition.

Children run in sessions of their own (a terminal's Ctrl-C reaches ``up`` alone, which then
stops them in order: SIGTERM, a grace, SIGKILL) and get SIGTERM from the kernel if ``up``
itself dies (``PR_SET_PDEATHSIG``), so no agent outlives it.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from apis import Job, JobState, Node, Registry, get_condition

TERMINAL = (JobState.JOB_FINISHED, JobState.FAILED)
#: States a job can rest in with nothing working on it: waiting for parents or for room.
RESTING = (JobState.AWAITING_PARENTS, JobState.PREPROCESSED, JobState.RESTART_READY)
TICK = 0.25  # seconds between progress refreshes (and end checks)
QUIET = 2.0  # seconds without any change before asking whether the rest can still move
GRACE = 15.0  # seconds children get to stop (agents kill their jobs first) before SIGKILL
PR_SET_PDEATHSIG = 1


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

    def start(self, name: str, argv: Sequence[str], log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, preexec_fn=_pdeathsig())
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
    equal the terminal counts mean every job was terminal."""
    before = registry.count(Job, namespace)
    counts = state_counts(registry, namespace)
    after = registry.count(Job, namespace)
    terminal = sum(counts[s] for s in TERMINAL)
    return counts, before == after == terminal


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


def node_name(i: int) -> str:
    host = re.sub(r"[^a-z0-9-]+", "-", os.uname().nodename.split(".")[0].lower()).strip("-") or "node"
    return f"{host}-up-{i}"


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


@dataclass
class Outcome:
    code: int
    out: str | None = None  # a line for stdout (the summary)
    err: str | None = None  # a line for stderr (why it failed)


def run_up(opts: UpOptions, open_registry: Callable[[], Registry], console: Console | None = None) -> int:
    """Start the processes, show progress, return the exit status: 0 when every job finished
    (or, without ``--until-done``, when stopped by a signal); 1 when a job FAILED, when no job
    can progress, or when a child died; 128+signal when ``--until-done`` is interrupted."""
    console = console or Console(stderr=True)
    logs = opts.site / "logs"
    common = ["--site", str(opts.site), "--store", opts.store_url, "-n", opts.namespace,
              "--lease-ttl", f"{opts.lease_ttl:g}"]
    children = Children()
    names = [node_name(i) for i in range(opts.nodes)]
    with Stop() as stop:
        try:
            # Children first: nothing of ours (store threads) is running yet when they fork.
            children.start("controller-manager", [sys.executable, "-m", "controllers", *common],
                           logs / "controller-manager.out")
            for i, name in enumerate(names):
                children.start(f"node agent {name}",
                               [sys.executable, "-m", "nodeagent", *common, "--name", name,
                                "--cpus", str(opts.cpus), "--gpus", str(opts.gpus)],
                               logs / f"nodeagent-{i}.out")
            outcome = _watch(opts, open_registry(), names, children, stop, console)
            if outcome.out:
                print(outcome.out, flush=True)
            if outcome.err:
                print(f"error: {outcome.err}", file=sys.stderr, flush=True)
            return outcome.code
        finally:
            if any(c.proc.poll() is None for c in children.children):
                print(f"stopping {len(children.children)} process(es)...", file=sys.stderr, flush=True)
            children.stop()


def _watch(opts: UpOptions, registry: Registry, names: list[str], children: Children, stop: Stop,
           console: Console) -> Outcome:
    ns = opts.namespace
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
            print(progress_line(counts, rate, elapsed), file=sys.stderr, flush=True)

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
            if opts.until_done:
                if done:
                    show(final=True)
                    return _summary(counts)
                if time.monotonic() - last_change >= QUIET:
                    reason = None
                    if all(n is not None for n in registry.get_many(Node, names, ns)):
                        reason = stuck_reason(registry, ns, counts)
                    if reason is not None:
                        show(final=True)
                        return Outcome(1, out=summary_line(counts), err=f"{reason} (see 'balsamctl get jobs -o wide')")
                    last_change = time.monotonic()
            stop.event.wait(TICK)
            counts, done = all_done(registry, ns)
    finally:
        if live is not None:
            live.stop()


def summary_line(counts: dict[JobState, int]) -> str:
    total = sum(counts.values())
    finished, failed = counts[JobState.JOB_FINISHED], counts[JobState.FAILED]
    rest = total - finished - failed
    return f"{total} job(s): {finished} JOB_FINISHED, {failed} FAILED" + (f", {rest} stuck" if rest else "")


def _summary(counts: dict[JobState, int]) -> Outcome:
    failed = counts[JobState.FAILED]
    line = summary_line(counts)
    if failed:
        return Outcome(1, out=line, err=f"{failed} job(s) FAILED (see 'balsamctl get jobs --state FAILED -o wide')")
    return Outcome(0, out=line)
