"""Wake-ups across processes on one machine for the SQLite store's watchers.

A watcher's poller used to ask SQLite ``PRAGMA data_version`` every millisecond: ~1,000
wake-ups a second in every process that watches (the controller manager, each node agent,
``up``), each costing CPU whether anything was written or not, and up to a millisecond of
latency per process hop (a DAG hop crosses two). Here each store object that watches owns a
FIFO in ``<store file>.wake/`` and sleeps in ``poll`` on it; every writer, after each
commit, writes one byte to every FIFO there (the listing is cached while the directory's
mtime stays the same). The poller then wakes at once, and otherwise sleeps.

* A FIFO is made under a temporary name, opened for reading, then renamed into place: a
  writer never sees a FIFO that has no reader yet. A FIFO whose reader is gone (a process
  killed) fails to open for writing (``ENXIO``) or to be written (``EPIPE``) and is removed.
* A full FIFO means a wake-up is already pending: the byte is dropped.
* The reader also holds a write end of its own FIFO (``poll`` would otherwise see EOF when
  no writer has it open) and uses it for wake-ups from its own process.
* Writers that cannot reach the directory (another user, a read-only copy) do not notify; the
  poller still asks SQLite every ``FALLBACK`` seconds, so their writes are seen, later.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import math
import os
import select
import threading
import time

#: The poller's sleep when nothing wakes it: writes of a process that could not notify are
#: seen at most this late.
FALLBACK = 0.05
#: A writer re-reads the directory at least this often even if its mtime did not move.
RELIST = 1.0

#: Longer than a kernel clock tick (file times are coarse: 1-10 ms).
_TICK_NS = 50_000_000

_ids = itertools.count()
_TMP = ".tmp"


def wake_dir(db_path: str) -> str:
    return f"{db_path}.wake"


class Listener:
    """The reading end: one FIFO in the wake directory, owned by one store object."""

    def __init__(self, db_path: str) -> None:
        d = wake_dir(db_path)
        os.makedirs(d, mode=0o700, exist_ok=True)
        name = f"{os.getpid()}-{next(_ids)}-{id(self):x}"
        tmp = os.path.join(d, name + _TMP)
        os.mkfifo(tmp, 0o600)
        try:
            self._r = os.open(tmp, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self._w = os.open(tmp, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self.path = os.path.join(d, name)
            os.rename(tmp, self.path)
            self._poll = select.poll()
            self._poll.register(self._r, select.POLLIN)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._closed = False

    def wait(self, timeout: float) -> bool:
        """Sleep until a wake-up or ``timeout``; True when woken (pending wake-ups drained)."""
        if not self._poll.poll(max(0, math.ceil(timeout * 1000))):  # poll, not select: any fd number
            return False
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._r, 4096):
                pass
        return True

    def poke(self) -> None:
        """Wake our own reader (a write of this process, a new watch, close)."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._w, b"\0")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        for fd in (self._w, self._r):
            with contextlib.suppress(OSError):
                os.close(fd)


class Notifier:
    """The writing end: after a commit, one byte to every other listener of the store."""

    def __init__(self, db_path: str, own: Listener | None = None) -> None:
        self.dir = wake_dir(db_path)
        self._own = own.path if own is not None else None
        self._fds: dict[str, int] = {}  # listener path -> our write fd
        self._mtime = -1
        self._listed_at = 0.0
        self._lock = threading.Lock()

    def set_own(self, own: Listener | None) -> None:
        self._own = own.path if own is not None else None

    def notify(self) -> None:
        with self._lock:
            self._relist()
            for path, fd in list(self._fds.items()):
                try:
                    os.write(fd, b"\0")
                except BlockingIOError:
                    pass  # full: a wake-up is pending already
                except OSError:  # EPIPE: its reader is gone
                    self._drop(path, unlink=True)

    def _relist(self) -> None:
        try:
            mtime = os.stat(self.dir).st_mtime_ns
        except OSError:
            mtime = -2
        now = time.monotonic()
        # A directory's mtime moves in clock ticks (ms): within a tick of its last change a
        # listener renamed in may not move it, so a recent mtime is listed again.
        settled = time.time_ns() - mtime > _TICK_NS
        if mtime == self._mtime and now - self._listed_at < RELIST and settled:
            return
        self._mtime, self._listed_at = mtime, now
        try:
            names = {os.path.join(self.dir, n) for n in os.listdir(self.dir) if not n.endswith(_TMP)}
        except OSError:
            names = set()
        names.discard(self._own or "")
        for path in list(self._fds):
            if path not in names:
                self._drop(path, unlink=False)
        for path in names - self._fds.keys():
            try:
                self._fds[path] = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as e:
                if e.errno == errno.ENXIO:  # nobody reads it: its process is gone
                    with contextlib.suppress(OSError):
                        os.unlink(path)

    def _drop(self, path: str, *, unlink: bool) -> None:
        fd = self._fds.pop(path, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        if unlink:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def close(self) -> None:
        with self._lock:
            for path in list(self._fds):
                self._drop(path, unlink=False)
