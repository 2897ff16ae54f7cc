"""Process identity from /proc, shared by the local plugin and its runner. It imports nothing,
so the runner (run by path, ``_local_runner.py``) uses it without importing the package."""

from __future__ import annotations


def start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat), or None if it
    is gone or a zombie — with the pid, it names one process even after pid reuse."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return fields[19]
