"""The node agent's guardian: a tiny process (this file, run by path so it imports nothing of
the package) that kills the agent's job process groups when the agent can no longer own them.

It reads lines from its stdin, a pipe whose only writer is the agent:

* ``+ PGID`` — a job process group the agent started; ``- PGID`` — one it has reaped;
* ``L DEADLINE`` — the agent's store lease is valid until at least this ``CLOCK_MONOTONIC``
  time (the agent's keepalive was sent before it, so the store cannot expire the lease
  earlier).

It SIGKILLs every registered group

* on EOF — the agent exited or was killed outright (``kill -9``): nobody can account for the
  jobs any more, and the placement reconciler will run them again once the lease expires;
  then it exits;
* when ``DEADLINE - margin`` passes without a new ``L`` — the agent is stopped (SIGSTOP),
  wedged, or cannot reach the store: its lease is about to expire and the jobs be re-run
  elsewhere, so they must be dead first (a lease-holder fences itself). It stays, for the
  agent may come back under a new lease.

It runs in a session of its own: a signal or SIGKILL to the agent's process group (the
``local`` runner's) does not take it along with the agent.

After each read it sleeps :data:`COALESCE` seconds before the next one, so that a busy agent's
lines (a ``+`` per start, a batch of ``-`` per loop turn: ~2 writes per job) are taken in one
wake-up per interval instead of one each (issue 19, sixth round). Nothing is lost or weakened:
the lines wait in the pipe (64 KiB: thousands of lines), the agent's writes never wait for the
guardian, an EOF still comes after every line written before it, and the lease deadline is
checked at most ``COALESCE`` late (the margin is ``min(1 s, TTL/10)``).
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

#: How long the guardian lets lines gather in its pipe after a read (s).
COALESCE = 0.005


def _kill(groups: set[int], why: str, agent: str) -> None:
    if not groups:
        return
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    _say(f"nodeagent guardian of agent pid {agent}: {why}: killed {len(groups)} job process group(s)\n")
    groups.clear()


def _say(line: str) -> None:
    """One line on stderr, unbuffered; a full disk under the log is not the guardian's end
    (a print that raised ENOSPC used to kill it: its agent then stopped, at the worst time)."""
    try:
        os.write(2, line.encode(errors="replace"))
    except OSError:
        pass


def main(argv: list[str]) -> int:
    margin = float(argv[1]) if len(argv) > 1 else 0.5
    agent = str(os.getppid())
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the agent's own end closes our pipe
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    groups: set[int] = set()
    deadline: float | None = None
    fd = sys.stdin.fileno()
    buf = b""
    while True:
        timeout = None if deadline is None else max(0.0, deadline - margin - time.monotonic())
        try:
            ready, _, _ = select.select([fd], [], [], timeout)
        except InterruptedError:
            continue
        if not ready:
            _kill(groups, "the agent's lease was about to expire without a renewal", agent)
            deadline = None
            continue
        data = os.read(fd, 65536)
        if not data:
            _kill(groups, "the agent is gone", agent)
            return 0
        buf += data
        *lines, buf = buf.split(b"\n")
        for line in lines:
            op, _, arg = line.decode().partition(" ")
            if op == "+":
                groups.add(int(arg))
            elif op == "-":
                groups.discard(int(arg))
            elif op == "L":
                deadline = float(arg)
        time.sleep(COALESCE)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
