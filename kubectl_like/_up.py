"""``balsamctl up``: a controller manager and N node agents as processes on this machine
(a laptop's allocation), with live progress; ``--until-done`` exits when no job can move
any more."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from apis import Job, JobState, Registry, get_condition

TERMINAL = (JobState.JOB_FINISHED, JobState.FAILED)


@dataclass
class Processes:
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, argv: Sequence[str], log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            self.procs.append(subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL))

    def dead(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is not None]

    def stop(self, grace: float = 10.0) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def state_counts(registry: Registry, namespace: str) -> dict[str, int]:
    """Jobs per state, from the state index (no job is read)."""
    return {s.value: registry.index_count(Job, "state", s.value, namespace) for s in JobState}


def stuck_reason(registry: Registry, namespace: str, counts: dict[str, int]) -> str | None:
    """Why no remaining job can move (all unschedulable or waiting on failed parents), or
    None when some job still can. Only called when nothing changed for a while."""
    active = {s: n for s, n in counts.items() if n and JobState(s) not in TERMINAL}
    if not active or JobState.RUNNING.value in active:
        return None
    stuck = {"Unschedulable": 0, "ParentFailed": 0}
    for state in active:
        for job in Job.objects.using(registry).filter(state=state, namespace=namespace):
            for cond in ("Unschedulable", "ParentFailed"):
                c = get_condition(job.status.conditions, cond)
                if c is not None and c.status == "True":
                    stuck[cond] += 1
                    break
            else:
                return None
    parts = [f"{n} {k}" for k, n in stuck.items() if n]
    return "no job can progress: " + ", ".join(parts)


def progress_table(counts: dict[str, int], rate: float, nodes: int) -> Table:
    t = Table(title=f"balsamctl up — {nodes} node(s)", show_edge=False)
    t.add_column("STATE")
    t.add_column("JOBS", justify="right")
    for s in JobState:
        if counts.get(s.value):
            t.add_row(s.value, str(counts[s.value]))
    t.caption = f"{sum(counts.values())} jobs, {rate:.1f} jobs/s finished"
    return t


def run_up(
    registry: Registry,
    site: Path | None,
    store_url: str,
    namespace: str,
    nodes: int,
    cpus: int,
    gpus: int,
    until_done: bool,
    lease_ttl: float = 10.0,
    console: Console | None = None,
) -> int:
    console = console or Console(stderr=True)
    logs = (site / "logs") if site else Path.cwd()
    common = ["--store", store_url] + (["--site", str(site)] if site else [])
    procs = Processes()
    stop_requested = False

    def on_signal(*_: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        procs.start([sys.executable, "-m", "controllers", *common, "-n", namespace, "--lease-ttl", str(lease_ttl)],
                    logs / "controller-manager.out")
        host = os.uname().nodename.split(".")[0].lower()
        for i in range(nodes):
            procs.start([sys.executable, "-m", "nodeagent", *common, "--name", f"{host}-up-{i}",
                         "--cpus", str(cpus), "--gpus", str(gpus), "--lease-ttl", str(lease_ttl)],
                        logs / f"nodeagent-{i}.out")
        t0 = time.monotonic()
        last_change = time.monotonic()
        last: dict[str, int] = {}
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            while not stop_requested:
                counts = state_counts(registry, namespace)
                finished = counts[JobState.JOB_FINISHED.value] + counts[JobState.FAILED.value]
                rate = counts[JobState.JOB_FINISHED.value] / max(1e-9, time.monotonic() - t0)
                live.update(progress_table(counts, rate, nodes))
                if counts != last:
                    last, last_change = counts, time.monotonic()
                dead = procs.dead()
                if dead:
                    console.print(f"error: a child process exited with code {dead[0].returncode}; see {logs}")
                    return 1
                if until_done:
                    total = sum(counts.values())
                    if finished == total:
                        failed = counts[JobState.FAILED.value]
                        console.print(f"{total} jobs done: {counts[JobState.JOB_FINISHED.value]} finished, "
                                      f"{failed} failed")
                        return 1 if failed else 0
                    if time.monotonic() - last_change > 3:
                        reason = stuck_reason(registry, namespace, counts)
                        if reason is not None:
                            console.print(f"error: {reason} (see 'balsamctl get jobs -o wide')")
                            return 1
                        last_change = time.monotonic()
                time.sleep(0.1)
        return 0
    finally:
        procs.stop()
        for s, h in old.items():
            signal.signal(s, h)
