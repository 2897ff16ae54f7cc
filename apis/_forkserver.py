"""A fork server: one warm Python process that forks a fresh child for every task.

Starting a Python interpreter and importing ``apis`` costs ~0.35 s of CPU; forking a process
that has already done so costs about a millisecond. Python apps (``run()``) and lifecycle hooks
therefore run in children forked from a server started once (by a node agent for its Python
apps, by the controller manager for hooks). Each task still gets a process of its own: its
own session and process group, working directory, environment, ``stdout``/``stderr`` file,
and nothing it does can reach the server or the next task.

Protocol over the server's stdin/stdout: 4-byte big-endian length, then a pickle.

* client → server: ``("spawn", token, spec)``; ``spec`` has ``task`` (``"run"`` or
  ``"hook"``: a function of :mod:`apis._pyexec`), ``cwd`` (created), ``env`` (the whole
  environment), ``stdout`` (file for stdout and stderr), ``append`` (else truncated), and what
  the task needs.
* server → client: ``("spawned", token, pid)``, ``("failed", token, message)``, and
  ``("exit", pid, code)`` when a child ends (``code`` as ``os.waitstatus_to_exitcode``:
  negative for a signal). A child's ``exit`` always comes after its ``spawned``.

When a child exits, the rest of its process group gets SIGKILL before the child is reaped (as
the node agent's reaper does), so a task's leftovers die with it. When its stdin closes (the
client stopped or died), the server kills every child's process group and exits.

**Warm workers.** A ``run`` spec with a ``pool`` key (the node agent's: App code, App
environment, GPU set) is not forked afresh: it goes to an idle *worker* of that key, a child
that runs one task after another and stays warm in between (its App class loaded once, from
the first spec it was forked with; later specs travel without ``app``). A worker is a session
of its own, so the task's process group (what the agent signals at wall time) is the worker:
killing the task kills the worker, which is then replaced by a fresh fork on demand. Per
task the worker sets the task's cwd, its exact environment (variables of the task before
are removed), ``argv`` and stdout/stderr (``dup2`` onto its output file, back to /dev/null
after). It reports ``("done", code, retire)`` on its own pipe; the server answers the client
``("exit", worker_pid, code)`` and parks the worker as idle, or lets it go (``retire``: the
task raised MemoryError or a BaseException that is not SystemExit). A worker that dies while
it holds a task (``os._exit``, a segfault, an abort, a kill) is reported as
``("exit", pid, code, why)``: that task fails with ``why`` in its message; nothing else does.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pickle
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
from typing import IO, Any, NoReturn

from . import _pyexec

log = logging.getLogger(__name__)

_HEADER = 4


def _write_msg(fd: int, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    buf = memoryview(len(data).to_bytes(_HEADER, "big") + data)
    while buf:
        n = os.write(fd, buf)
        buf = buf[n:]


# --- the server (runs in its own process) -----------------------------------------------


class _Server:
    def __init__(self, in_fd: int, out_fd: int) -> None:
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.children: set[int] = set()
        self.devnull = os.open(os.devnull, os.O_RDWR)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.sel = selectors.DefaultSelector()
        self.buf = bytearray()
        self.workers: dict[int, _Worker] = {}  # by pid
        self.idle: dict[str, list[_Worker]] = {}  # by pool key, most recently used last
        self.max_idle = max(8, 2 * (os.cpu_count() or 1))
        self._ticks = 0

    def send(self, msg: Any) -> None:
        _write_msg(self.out_fd, msg)

    def serve(self) -> int:
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.sel.register(self.in_fd, selectors.EVENT_READ)
        self.sel.register(self.wake_r, selectors.EVENT_READ)
        while True:
            for key, _ in self.sel.select():
                if key.fd == self.wake_r:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self.wake_r, 4096):
                            pass
                elif key.data is not None:
                    self._read_worker(key.data)
                elif not self._read_requests():
                    self._shutdown()
                    return 0
            self._reap()

    def _read_requests(self) -> bool:
        data = os.read(self.in_fd, 1 << 16)
        if not data:
            return False
        self.buf += data
        while len(self.buf) >= _HEADER:
            n = int.from_bytes(self.buf[:_HEADER], "big")
            if len(self.buf) < _HEADER + n:
                break
            msg = pickle.loads(self.buf[_HEADER:_HEADER + n])
            del self.buf[:_HEADER + n]
            if msg[0] == "spawn":
                if msg[2].get("pool"):
                    self._to_worker(msg[1], msg[2])
                else:
                    self._spawn(msg[1], msg[2])
        return True

    # --- warm workers ---------------------------------------------------------------

    def _to_worker(self, token: Any, spec: dict[str, Any]) -> None:
        """Hand the task to an idle worker of its pool, or fork one that starts with it."""
        key = spec["pool"]
        idle = self.idle.get(key)
        while idle:
            w = idle.pop()
            try:
                _write_msg(w.to_fd, {k: v for k, v in spec.items() if k != "app"})
            except OSError:  # it is dying: its reaping will clean it up
                self._retire(w)
                continue
            w.busy = True
            self.send(("spawned", token, w.pid))
            return
        self._flush_std()
        try:
            to_r, to_w = os.pipe()
            from_r, from_w = os.pipe()
        except OSError as e:
            self.send(("failed", token, f"cannot make a worker's pipes: {e}"))
            return
        try:
            pid = os.fork()
        except OSError as e:
            for fd in (to_r, to_w, from_r, from_w):
                os.close(fd)
            self.send(("failed", token, f"fork failed: {e}"))
            return
        if pid == 0:  # the worker: never returns
            _worker(spec, to_r, from_w, self.devnull)
        os.close(to_r)
        os.close(from_w)
        w = _Worker(pid, key, to_w, from_r)
        w.busy = True
        self.workers[pid] = w
        self.children.add(pid)
        self.sel.register(from_r, selectors.EVENT_READ, w)
        self.send(("spawned", token, pid))

    def _read_worker(self, w: _Worker) -> None:
        try:
            data = os.read(w.from_fd, 1 << 16)
        except OSError:
            data = b""
        if not data:  # it exited (every "done" it wrote was read before this): reaping reports it
            self._retire(w)
            self._close_from(w)
            return
        w.buf += data
        while len(w.buf) >= _HEADER:
            n = int.from_bytes(w.buf[:_HEADER], "big")
            if len(w.buf) < _HEADER + n:
                break
            msg = pickle.loads(w.buf[_HEADER:_HEADER + n])
            del w.buf[:_HEADER + n]
            if msg[0] == "done" and w.busy:
                w.busy = False
                self.send(("exit", w.pid, msg[1]))
                if msg[2]:
                    self._retire(w)
                else:
                    self._park(w)

    def _park(self, w: _Worker) -> None:
        self._ticks += 1
        w.parked = self._ticks
        self.idle.setdefault(w.key, []).append(w)
        if sum(len(v) for v in self.idle.values()) > self.max_idle:  # let the least recently used go
            self._retire(min((v[0] for v in self.idle.values() if v), key=lambda x: x.parked))

    def _retire(self, w: _Worker) -> None:
        """No more tasks for ``w``: closing its pipe ends it (once its task, if any, is over)."""
        idle = self.idle.get(w.key)
        if idle and w in idle:
            idle.remove(w)
        if w.to_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(w.to_fd)
            w.to_fd = -1
        if not w.busy:
            self._close_from(w)

    def _close_from(self, w: _Worker) -> None:
        if w.from_fd >= 0:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(w.from_fd)
            with contextlib.suppress(OSError):
                os.close(w.from_fd)
            w.from_fd = -1

    # --- fresh children ---------------------------------------------------------------

    def _flush_std(self) -> None:
        for f in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                f.flush()

    def _spawn(self, token: Any, spec: dict[str, Any]) -> None:
        self._flush_std()
        try:
            pid = os.fork()
        except OSError as e:
            self.send(("failed", token, f"fork failed: {e}"))
            return
        if pid == 0:  # the child: never returns
            _child(spec, self.devnull, (self.in_fd, self.out_fd, self.wake_r, self.wake_w, self.sel),
                   [fd for w in self.workers.values() for fd in (w.to_fd, w.from_fd) if fd >= 0])
        self.children.add(pid)
        self.send(("spawned", token, pid))

    def _reap(self) -> None:
        while self.children:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            pid = info.si_pid
            w = self.workers.get(pid)
            if w is not None and w.busy and w.from_fd >= 0:
                with contextlib.suppress(OSError):  # a "done" it wrote before exiting comes first
                    os.set_blocking(w.from_fd, False)
                    self._read_worker(w)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # its group, while the zombie pins the id
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                continue
            self.children.discard(pid)
            code = os.waitstatus_to_exitcode(status)
            if w is None:
                self.send(("exit", pid, code))
                continue
            del self.workers[pid]
            busy, w.busy = w.busy, False
            self._retire(w)
            if busy:
                self.send(("exit", pid, code, _died(code)))

    def _shutdown(self) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            # A child forked a moment ago may not have called setsid() yet: its group does
            # not exist, and waiting for it would outlast close()'s patience.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


class _Worker:
    """The server's handle on a warm worker."""

    __slots__ = ("pid", "key", "to_fd", "from_fd", "buf", "busy", "parked")

    def __init__(self, pid: int, key: str, to_fd: int, from_fd: int) -> None:
        self.pid, self.key, self.to_fd, self.from_fd = pid, key, to_fd, from_fd
        self.buf = bytearray()
        self.busy = False
        self.parked = 0


def _died(code: int) -> str:
    """Why a task failed when its worker died under it (``code`` as waitstatus_to_exitcode)."""
    if code < 0:
        try:
            how = f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"was killed by signal {-code}"
        if -code in (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL, signal.SIGFPE):
            how += " (a crash in C code, or abort())"
    else:
        how = f"exited with code {code} (os._exit() or a fatal error in C code)"
    return f"the Python worker running the job {how}; the worker is replaced"


def _reset_child_signals() -> None:
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _read_msg(fd: int) -> Any:
    """One framed message from a blocking pipe; None at its end."""
    def read_exactly(n: int) -> bytes | None:
        chunks, left = [], n
        while left:
            b = os.read(fd, left)
            if not b:
                return None
            chunks.append(b)
            left -= len(b)
        return b"".join(chunks)

    head = read_exactly(_HEADER)
    if head is None:
        return None
    body = read_exactly(int.from_bytes(head, "big"))
    return None if body is None else pickle.loads(body)


def _worker(spec: dict[str, Any], in_fd: int, out_fd: int, devnull: int) -> NoReturn:
    """A warm worker: run ``spec``, then each task the server sends, until its pipe closes."""
    try:
        os.setsid()
        _reset_child_signals()
        keep = {in_fd, out_fd, devnull, 2}
        for name in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else []:
            fd = int(name)
            if fd > 2 and fd not in keep:
                with contextlib.suppress(OSError):
                    os.close(fd)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.chdir("/")

        loaded: Any = None
        task: Any = spec
        while task is not None:
            code, retire, loaded = _worker_task(task, loaded, devnull, _pyexec)
            _write_msg(out_fd, ("done", code, retire))
            if retire:
                break
            task = _read_msg(in_fd)
    except BaseException:  # noqa: BLE001 - the worker is lost; the server reports its task
        with contextlib.suppress(Exception):
            traceback.print_exc()
        os._exit(70)
    os._exit(0)


def _worker_task(spec: dict[str, Any], loaded: Any, devnull: int, pyexec: Any) -> tuple[int, bool, Any]:
    """One task in a warm worker: ``(exit code, retire the worker, the App class)``."""
    code, retire = 1, False
    try:
        cwd = spec["cwd"]
        os.makedirs(cwd, exist_ok=True)
        os.chdir(cwd)
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if spec.get("append") else os.O_TRUNC)
        out = os.open(spec["stdout"], flags, 0o660)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        _set_environ(spec["env"])
        sys.argv = [str(spec.get("argv0", "balsam-task"))]
        if loaded is None:
            loaded = pyexec.load_app(spec)
        code, error = pyexec.run_loaded(spec, loaded)
        retire = isinstance(error, MemoryError)  # the heap may be in pieces: start afresh
    except SystemExit as e:  # run() called sys.exit(): its code, as a process of its own would
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - KeyboardInterrupt, a failed setup...: reported, worker let go
        with contextlib.suppress(Exception):
            traceback.print_exc()
        code, retire = 1, True
    finally:
        for f in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                f.flush()
        with contextlib.suppress(OSError):
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            os.chdir("/")
    return (code if 0 <= code <= 255 else 1), retire, loaded


def _set_environ(want: dict[str, str]) -> None:
    """Make ``os.environ`` exactly ``want`` (only the differences: putenv is not free)."""
    env = os.environ
    for k in [k for k in env if k not in want]:
        del env[k]
    for k, v in want.items():
        if env.get(k) != v:
            env[k] = v


def _child(spec: dict[str, Any], devnull: int, inherited: tuple[Any, ...], worker_fds: list[int]) -> None:
    code = 1
    try:
        os.setsid()
        _reset_child_signals()
        *fds, sel = inherited
        with contextlib.suppress(Exception):
            sel.close()
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        for fd in worker_fds:  # else a worker let go would not see its pipe close while we live
            with contextlib.suppress(OSError):
                os.close(fd)
        cwd = spec["cwd"]
        os.makedirs(cwd, exist_ok=True)
        os.chdir(cwd)
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if spec.get("append") else os.O_TRUNC)
        out = os.open(spec["stdout"], flags, 0o660)  # the umask makes it 0600 (0640 in a group site)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        os.dup2(devnull, 0)
        os.close(devnull)
        _set_environ(spec["env"])
        sys.argv = [str(spec.get("argv0", "balsam-task"))]

        code = _pyexec.TASKS[spec["task"]](spec)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - reported in the task's output file
        with contextlib.suppress(Exception):
            traceback.print_exc()
        code = 1
    finally:
        for f in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                f.flush()
        os._exit(code if 0 <= code <= 255 else 1)


def main() -> int:
    """``python -m apis._forkserver``: serve on stdin/stdout until stdin closes."""
    in_fd, out_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # stray prints of the server (or a child before its redirect) go to stderr
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the client decides when we stop: EOF
    # Warm up: everything a task needs is imported with this module (apis._pyexec brings the
    # App loader, the codec and the client), then frozen out of the GC's reach so that
    # children do not copy-on-write the heap by walking it.
    gc.collect()
    gc.freeze()
    return _Server(in_fd, out_fd).serve()


# --- the client -------------------------------------------------------------------------


def runtime_dir(prefix: str) -> str:
    """A private directory for handoff files: in /dev/shm (node-local memory) when there is
    one, else the system's temporary directory."""
    shm = "/dev/shm"
    base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
    return tempfile.mkdtemp(prefix=prefix, dir=base)


#: ``on_message(generation, message)``; ``("died", reason)`` when the server goes away.
OnMessage = Callable[[int, tuple[Any, ...]], None]


class ForkServerError(Exception):
    """The fork server could not be started or reached."""


class ForkServer:
    """A handle on a fork server process, started on first use (and again after it died).

    ``spawn(token, spec)`` returns the server's generation; the answers arrive through
    ``on_message(generation, msg)`` on a reader thread, in the order the server sent them.
    After ``("died", ...)`` of a generation, none of its children will be reported again."""

    def __init__(self, on_message: OnMessage, *, name: str = "forkserver", env: dict[str, str] | None = None,
                 stderr: str | os.PathLike[str] | None = None) -> None:
        self._on_message = on_message
        self._name = name
        self._env = env
        self._stderr_path = stderr
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._stdin: IO[bytes] | None = None
        self._generation = 0
        self._closed = False

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _start(self) -> None:
        stderr: Any = None
        if self._stderr_path is not None:
            stderr = open(self._stderr_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen([sys.executable, "-m", "apis._forkserver"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=stderr, env=self._env, close_fds=True)
        except OSError as e:
            raise ForkServerError(f"cannot start the {self._name}: {e}") from None
        finally:
            if stderr is not None:
                stderr.close()
        self._generation += 1
        self._proc, self._stdin = proc, proc.stdin
        t = threading.Thread(target=self._read_loop, args=(proc, self._generation), name=f"{self._name}-reader",
                             daemon=True)
        t.start()

    def start(self) -> None:
        """Start the server now unless it runs (it starts on first use anyway)."""
        with self._lock:
            if not self._closed and (self._proc is None or self._proc.poll() is not None):
                self._start()

    def spawn(self, token: Any, spec: dict[str, Any]) -> int:
        """Ask for a child; returns the generation its answers will carry."""
        data = pickle.dumps(("spawn", token, spec), protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            if self._closed:
                raise ForkServerError(f"the {self._name} is closed")
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            assert self._stdin is not None
            try:
                self._stdin.write(len(data).to_bytes(_HEADER, "big") + data)
                self._stdin.flush()
            except (BrokenPipeError, OSError) as e:
                self._proc = None
                raise ForkServerError(f"the {self._name} went away: {e}") from None
            return self._generation

    def _read_loop(self, proc: subprocess.Popen[bytes], generation: int) -> None:
        f = proc.stdout
        assert f is not None
        reason = "its output closed"
        try:
            while True:
                head = f.read(_HEADER)
                if len(head) < _HEADER:
                    break
                body = f.read(int.from_bytes(head, "big"))
                self._on_message(generation, pickle.loads(body))
        except Exception as e:  # noqa: BLE001 - the server is gone either way
            reason = f"{type(e).__name__}: {e}"
        code = proc.wait()
        with self._lock:
            if self._proc is proc:
                self._proc = None
        if not self._closed:
            log.warning("%s exited (code %s; %s)", self._name, code, reason)
        self._on_message(generation, ("died", f"the {self._name} exited with code {code}"))

    def close(self, timeout: float = 5.0) -> None:
        """Stop the server (it kills the children it still has)."""
        with self._lock:
            self._closed = True
            proc, stdin = self._proc, self._stdin
            self._proc = None
        if proc is None:
            return
        with contextlib.suppress(Exception):
            assert stdin is not None
            stdin.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    sys.exit(main())
