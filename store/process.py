"""Process-wide settings, applied only at process entry points (``balsamctl``'s main, the
controller manager's and the node agent's mains, ``python -m bench``), never by a library
call: a user's ``Job.objects.filter`` must not change how their whole program collects
garbage.

CPython's cyclic GC runs a young collection every 700 net allocations and a full one every
100 young ones (with 3.11's defaults). A control-plane process decodes and keeps objects by
the hundred thousand, each dozens of containers that all survive: with the default
thresholds the collections triggered on the way walk the whole growing cache and find
nothing (over half of an informer's start-up at 10^5 jobs, 0.6 s of a 1.3 s selector get
that decodes 10k jobs; bench store). The thresholds below make young collections 30-70x
rarer and full ones rarer still; cycles are still collected.

It lives in ``store`` because every layer imports ``store`` and this imports nothing, so
``balsamctl --version`` pays nothing for it.

Also here, for the same reason: a process's identity on this machine (:func:`process_tag`,
:func:`process_gone`). The holder of a store lease — the leader controller manager, a node
agent's Node — writes it beside what it holds, so that a successor on the same machine can
tell that the holder is dead and revoke its lease at once instead of waiting out the TTL
(``controllers/_leader.py``, ``nodeagent/_reporter.py``).
"""

from __future__ import annotations

import gc
import os
from typing import Literal

Role = Literal["cli", "manager", "agent", "bench"]

#: (young, middle, old) thresholds per kind of process.
GC_THRESHOLDS: dict[Role, tuple[int, int, int]] = {
    # short-lived: one command decodes up to every job it shows, then exits
    "cli": (50_000, 50, 100),
    # long-lived, allocation-heavy: every job event allocates a few dozen containers that live
    # briefly or join the cache (the cyclic GC was ~14% of the manager's CPU at 400 jobs/s at
    # the defaults; bench e2e). Young collections every 100k net allocations, not 20k: a
    # trivial job lives a few seconds in the cache, so most of its objects are freed before a
    # collection walks them (GC CPU in the manager 7.8 / 11.4 -> 0.5 / 0.4 µs per job at 20k ->
    # 200k, 3,000 /bin/true jobs, issue 19 sixth round); a young pass stays ~10-25 ms at most.
    "manager": (100_000, 20, 20),
    "agent": (20_000, 20, 20),
    "bench": (50_000, 50, 100),
}


def tune_gc(role: Role) -> None:
    """Set this process's collector thresholds for ``role``; call once, at entry."""
    gc.set_threshold(*GC_THRESHOLDS[role])


def freeze_long_lived() -> None:
    """Move every object alive now into the permanent generation: caches just listed that
    live as long as the process are not walked again by full collections."""
    gc.freeze()


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def start_ticks(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks) of a live, non-zombie process."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def _machine() -> str | None:
    """``<boot id>:<pid namespace>``: where a pid names one process (None off Linux)."""
    boot = _read("/proc/sys/kernel/random/boot_id")
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return None if boot is None else f"{boot.strip()}:{pidns}"


def process_tag(pid: int | None = None) -> str:
    """``<boot id>:<pid namespace>:<pid>:<start ticks>`` of a process (this one by default),
    or "" where that cannot be told."""
    pid = os.getpid() if pid is None else pid
    machine, ticks = _machine(), start_ticks(pid)
    return f"{machine}:{pid}:{ticks}" if machine and ticks else ""


def process_gone(tag: str) -> bool:
    """Whether the process ``tag`` names ran on this machine (same boot, same pid
    namespace) and is gone. False when that cannot be known (another machine, no tag)."""
    machine = _machine()
    if not tag or not machine or not tag.startswith(machine + ":"):
        return False
    try:
        pid_s, ticks = tag[len(machine) + 1 :].split(":")
        pid = int(pid_s)
    except ValueError:
        return False
    return start_ticks(pid) != ticks
