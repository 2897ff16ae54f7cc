"""Helpers for the streaming commands' tests: a real ``balsamctl`` process whose output is
read line by line while the test changes the store, and job moves through the Registry."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from apis import Job, JobState, Registry, advance
from tests._deadline import DEADLINE

from .conftest import balsamctl_bin

#: The happy path from CREATED, as the reconcilers and the node agent walk it.
TO_RUNNING = [JobState.READY, JobState.STAGED_IN, JobState.PREPROCESSED, JobState.RUNNING]
TO_FINISHED = [JobState.RUN_DONE, JobState.POSTPROCESSED, JobState.STAGED_OUT, JobState.JOB_FINISHED]


def move(reg: Registry, name: str, path: Sequence[JobState], namespace: str = "default") -> Job:
    """Walk a job along ``path`` in one write (what a reconciler would do)."""
    old = reg.get(Job, name, namespace)
    new = advance(old.status_copy(), list(path), "moved by the test")
    return reg.update(old, new)


class Proc:
    """``balsamctl ARGS`` in the background; ``line()`` returns its stdout line by line."""

    def __init__(self, site_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        e = {k: v for k, v in os.environ.items() if not k.startswith("BALSAM_")}
        e["BALSAM_SITE_PATH"] = str(site_path)
        e.update(env or {})
        self.p = subprocess.Popen([balsamctl_bin(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, cwd=site_path, env=e)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        # stderr is read as it comes (a test may wait for a line of it; a full pipe would block)
        self._err: list[str] = []
        self._err_reader = threading.Thread(target=self._read_err, daemon=True)
        self._err_reader.start()
        self.stderr = ""

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _read_err(self) -> None:
        assert self.p.stderr is not None
        for line in self.p.stderr:
            self._err.append(line)

    def err_so_far(self) -> str:
        """What the process has written to stderr until now."""
        return "".join(self._err)

    def line(self, timeout: float = DEADLINE) -> str:
        """The next line of stdout (AssertionError if none comes within ``timeout``)."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output within {timeout}s") from None
        assert line is not None, f"stdout closed (exit {self.p.poll()}): {self.err_so_far()}"
        return line

    def lines(self, n: int, timeout: float = DEADLINE) -> list[str]:
        return [self.line(timeout) for _ in range(n)]

    def no_line(self, within: float) -> None:
        try:
            line = self._lines.get(timeout=within)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected output: {line!r}")

    def rest(self, timeout: float = DEADLINE) -> str:
        """Everything left on stdout once the process has exited (waits for it)."""
        self.wait(timeout)
        self._reader.join(timeout)
        out = []
        while True:
            line = self._lines.get_nowait() if not self._lines.empty() else None
            if line is None:
                return "".join(out)
            out.append(line)

    def wait(self, timeout: float = DEADLINE) -> int:
        rc = self.p.wait(timeout)
        self._err_reader.join(timeout)
        self.stderr = self.err_so_far()
        return rc

    def interrupt(self, timeout: float = DEADLINE) -> int:
        self.p.send_signal(signal.SIGINT)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def wait_until(pred: object, timeout: float = DEADLINE, interval: float = 0.05) -> None:
    """Poll a test condition (the test's own check, not the code under test)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise AssertionError("condition not reached in time")
