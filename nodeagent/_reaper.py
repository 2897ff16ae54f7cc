"""Reaping the agent's children as they exit, without polling and without stealing others'.

``os.waitpid(-1)`` would also reap children that other code of the process started (a
``subprocess.run`` in a test, the CLI's helpers), whose ``wait()`` would then see ECHILD.
Instead the reaper watches exactly the pids it is given:

* Linux ≥ 5.3: one thread blocked in ``epoll`` over a pidfd per child (``os.pidfd_open``);
  a pidfd becomes readable when its process exits, so thousands of children cost one thread.
* otherwise (RHEL 8's 4.18 kernel, ...): one small thread per child, blocked in
  ``waitid(WNOWAIT)`` on that pid.

Either way, when a child exits, its process group gets SIGKILL *before* the child is reaped
(while the leader is a zombie its pid, hence the group id, cannot be reused, so the signal
cannot hit a stranger): a job's background processes end with the job. Then the child is
reaped and ``on_exit(pid, code)`` is called with ``os.waitstatus_to_exitcode``'s code
(negative: killed by that signal).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

ExitCallback = Callable[[int, int], None]


def _kill_group_and_reap(pid: int) -> int:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:  # someone else reaped it: the code is lost
        log.warning("child %d was reaped by someone else; its exit code is unknown", pid)
        return -signal.SIGKILL
    return os.waitstatus_to_exitcode(status)


def pidfd_supported() -> bool:
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError:
        return False
    os.close(fd)
    return True


class Reaper:
    """Calls ``on_exit(pid, code)`` from its own thread when a child given to :meth:`add` exits."""

    def __init__(self, on_exit: ExitCallback, *, use_pidfd: bool | None = None) -> None:
        self._on_exit = on_exit
        self._use_pidfd = pidfd_supported() if use_pidfd is None else use_pidfd
        self._lock = threading.Lock()
        self._fds: dict[int, int] = {}  # pidfd -> pid
        self._closed = False
        self._thread: threading.Thread | None = None
        if self._use_pidfd:
            self._epoll = select.epoll()
            self._wake_r, self._wake_w = os.pipe()
            self._epoll.register(self._wake_r, select.EPOLLIN)
            self._thread = threading.Thread(target=self._run, name="nodeagent-reaper", daemon=True)
            self._thread.start()

    @property
    def mode(self) -> str:
        return "pidfd" if self._use_pidfd else "thread-per-child"

    def add(self, pid: int) -> None:
        """Watch ``pid`` (a child of this process that nobody else waits for)."""
        if not self._use_pidfd:
            threading.Thread(target=self._wait_one, args=(pid,), name=f"nodeagent-wait-{pid}", daemon=True).start()
            return
        try:
            fd = os.pidfd_open(pid)
        except OSError as e:  # out of file descriptors, ...: wait for this one with a thread
            log.warning("pidfd_open(%d) failed (%s); waiting for it in a thread", pid, e)
            threading.Thread(target=self._wait_one, args=(pid,), name=f"nodeagent-wait-{pid}", daemon=True).start()
            return
        with self._lock:
            self._fds[fd] = pid
        self._epoll.register(fd, select.EPOLLIN)

    def _wait_one(self, pid: int) -> None:
        try:
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass
        self._on_exit(pid, _kill_group_and_reap(pid))

    def _run(self) -> None:
        while True:
            try:
                ready = self._epoll.poll()
            except InterruptedError:
                continue
            except (OSError, ValueError):  # closed
                return
            for fd, _ in ready:
                if fd == self._wake_r:
                    if self._closed:
                        return
                    continue
                with self._lock:
                    pid = self._fds.pop(fd, None)
                if pid is None:
                    continue
                with contextlib.suppress(OSError, ValueError):
                    self._epoll.unregister(fd)
                os.close(fd)
                try:
                    self._on_exit(pid, _kill_group_and_reap(pid))
                except Exception:  # noqa: BLE001 - the reaper must survive a bad callback
                    log.exception("exit callback for pid %d failed", pid)

    def close(self) -> None:
        """Stop watching (children not yet reaped stay zombies until the process ends)."""
        if not self._use_pidfd or self._closed:
            self._closed = True
            return
        self._closed = True
        os.write(self._wake_w, b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with self._lock:
            fds, self._fds = list(self._fds), {}
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._epoll.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
