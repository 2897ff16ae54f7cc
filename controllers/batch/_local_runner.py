"""``python controllers/batch/_local_runner.py --wall-seconds S --record-dir DIR -- SCRIPT``:
one allocation of the ``local`` scheduler.

Run by path, not with ``-m``: ``-m controllers.batch._local_runner`` first imports the
``controllers`` package (the whole control plane, pydantic included: 0.9 s of CPU, 13 s of
wall time at load 40), which this process does not need, on the path of every allocation's
start. By path it imports only the standard library and ``_procinfo`` next to it.

Runs SCRIPT (which starts the node agents) in its own process group; at the wall time, or
on SIGTERM/SIGINT (a cancel), sends the group SIGTERM — the agents mark their running jobs
RUN_TIMEOUT and exit — then SIGKILL after ``--kill-wait`` seconds, like Slurm's KillWait.
Writes ``DIR/local-<its pid>.record`` (JSON: ``state`` COMPLETED|FAILED|TIMEOUT|CANCELLED, ``exitCode``, ``startTime``,
``endTime``) before it exits, so the state survives a restart of the controller manager.

``--owner PID:TICKS`` (``balsamctl up``'s allocation) ends the allocation as a cancel when
that process ends, even if it was killed outright: no agent outlives the ``up`` it serves.

The script's environment names the runner (``BALSAM_AGENT_SUPERVISOR=PID:TICKS``): its node
agents stop on their own when the runner is gone (killed outright with the controller
manager, say), instead of running on unsupervised until someone deletes their BatchJob.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from types import FrameType

if __package__:
    from ._procinfo import start_ticks
else:  # run by path: its directory is sys.path[0]
    from _procinfo import start_ticks  # type: ignore[import-not-found,no-redef]

#: The node agents' supervisor variable (nodeagent/_fence.py SUPERVISOR_ENV; not imported:
#: controllers do not import nodeagent).
SUPERVISOR_ENV = "BALSAM_AGENT_SUPERVISOR"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="controllers.batch._local_runner")
    p.add_argument("--wall-seconds", type=float, required=True)
    p.add_argument("--kill-wait", type=float, default=10.0)
    p.add_argument("--record-dir", required=True)
    p.add_argument("--owner", default=None, metavar="PID:TICKS", help="end when this process ends")
    p.add_argument("script", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    script = [a for a in args.script if a != "--"]
    start = datetime.now(UTC)
    cancelled = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal cancelled
        cancelled = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    owner = args.owner.split(":", 1) if args.owner else None
    env = {**os.environ, SUPERVISOR_ENV: f"{os.getpid()}:{start_ticks(os.getpid())}"}
    proc = subprocess.Popen(["/bin/bash", *script], start_new_session=True, stdin=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + args.wall_seconds
    timed_out = False
    rc: int | None = None
    while rc is None:
        try:
            rc = proc.wait(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            pass
        if owner is not None and start_ticks(int(owner[0])) != owner[1]:
            cancelled = True  # the process this allocation serves is gone
        if rc is None and (cancelled or time.monotonic() >= deadline):
            timed_out = not cancelled
            break
    _signal_group(proc.pid, signal.SIGTERM)  # also the agents of a script that ended on its own
    # Wait for the whole group (the agents write their jobs' RUN_TIMEOUT before they exit),
    # then SIGKILL whatever is left of it.
    kill_at = time.monotonic() + args.kill_wait
    while time.monotonic() < kill_at and _group_alive(proc.pid):
        if rc is None:
            rc = proc.poll()
        time.sleep(0.05)
    _signal_group(proc.pid, signal.SIGKILL)
    if rc is None:
        rc = proc.wait()
    state = "CANCELLED" if cancelled else "TIMEOUT" if timed_out else ("COMPLETED" if rc == 0 else "FAILED")
    record = {"state": state, "exitCode": rc, "startTime": start.isoformat(),
              "endTime": datetime.now(UTC).isoformat()}
    path = os.path.join(args.record_dir, f"local-{os.getpid()}.record")
    with open(f"{path}.tmp", "w") as f:
        json.dump(record, f)
    os.replace(f"{path}.tmp", path)
    return 0


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


if __name__ == "__main__":
    sys.exit(main())
