"""A fork server: one warm Python process that forks a fresh child for every task.

Starting a Python interpreter and importing ``apis`` costs ~0.35 s of CPU; forking a process
that has already done so costs about a millisecond. Python apps (``run()``) and lifecycle hooks
therefore run in children forked from a server started once (by a node agent for its Python
apps, by the controller manager for hooks). Each task still gets a process of its own: its
own session and process group, working directory, environment, ``stdout``/``stderr`` file,
and nothing it does can reach the server or the next task.

Protocol over the server's stdin (a Unix socket, so that fds can travel with a request) and
stdout (a pipe): frames of a 4-byte big-endian length and a pickle of one of the typed
messages below (each side matches on their types; nothing is a tuple).

* client → server: :class:`Spawn` (a fresh child for ``spec``: ``task`` — ``"run"`` or
  ``"hook"``, a function of :mod:`apis._pyexec` —, ``cwd`` (created), ``env`` (the whole
  environment), ``stdout`` (file for stdout and stderr), ``append`` (else truncated), and what
  the task needs); :class:`DefinePool` (a warm pool's App code, sent once per server and
  pool); :class:`Submit` (fork a warm worker of a defined pool that starts with this task;
  sent with one fd, ``SCM_RIGHTS``: the worker's end of its own socket to the client).
* server → client: :class:`Started` (token, pid), :class:`StartFailed` (token, why) and
  :class:`Ended` (pid, code as ``os.waitstatus_to_exitcode``: negative for a signal) when any
  child ends, a warm worker included. A child's ``Ended`` always comes after its
  ``Started``. The server writes what it has to say in one write per turn of its loop, so
  answers to several clients' tasks that became ready together cost one pipe write.
  :class:`ServerDied` is made by the client's reader when the server goes away.

When a child exits, the rest of its process group gets SIGKILL before the child is reaped (as
the node agent's reaper does), so a task's leftovers die with it. When its stdin closes (the
client stopped or died), the server kills every child's process group and exits.

**Warm workers.** A task of the node agent's Python apps (its pool ``key`` is App code, App
environment and GPU set) is not forked afresh: it goes to an idle *worker* of that pool, a
child that runs one task after another and stays warm in between. The client
(:class:`ForkServer`) keeps the idle workers and talks to each on its own socket: a task is
one frame of its pickled spec written there, and the worker answers :class:`TaskDone` there
(exit code, the task's outcome — result or exception: no handoff file —, and whether to
``retire``: the task raised MemoryError or a BaseException that is not SystemExit). The
server is asked only when a pool has no idle worker: it forks one with the task (the App code
travels once per server and pool, :class:`DefinePool`; a worker loads the class once from
its own copy of the server's memory) and reports its end like any child's. A worker is a
session of its own, so the task's process group (what the agent signals at wall time) is the
worker: killing the task kills the worker, and the next task gets a new one. Per task the
worker sets the task's cwd, its exact environment (variables of the task before are
removed), ``argv`` and stdout/stderr (``dup2`` onto its output file; they stay there until
the next task). A worker that dies while it holds a task (``os._exit``, a segfault, an abort, a kill)
is reported by the client as ``Ended(pid, code, died=why)`` once the server says it ended and
what it wrote before is read: that task fails with ``why`` in its message; nothing else does.
"""

from __future__ import annotations

import array
import collections
import contextlib
import gc
import logging
import os
import pickle
import select
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, NoReturn

from . import _pyexec

log = logging.getLogger(__name__)

_HEADER = 4
_FDS_SPACE = socket.CMSG_SPACE(64 * array.array("i").itemsize)  # fds one read of the server may bring


# --- the messages -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spawn:
    """client → server: run ``spec`` in a fresh child."""

    token: Any
    spec: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DefinePool:
    """client → server: the App code (``python:`` of the App) of warm pool ``key``."""

    key: str
    app: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Submit:
    """client → server: run a task in a warm worker of ``key``. ``spec`` is the task's spec
    (``run``, without ``app``) already pickled: the server hands those bytes to the worker as
    they are, without decoding and encoding them again."""

    token: Any
    key: str
    spec: bytes


@dataclass(frozen=True, slots=True)
class Started:
    """server → client: the task of ``token`` runs in process ``pid`` (a worker's pid is its group).
    ``forked``: ``pid`` is a new process (False: a warm worker that ran tasks before)."""

    token: Any
    pid: int
    forked: bool = True


@dataclass(frozen=True, slots=True)
class StartFailed:
    token: Any
    message: str


@dataclass(frozen=True, slots=True)
class Ended:
    """server → client: the task in ``pid`` ended with ``code``. ``died``: the worker died under
    its task (how, for the job's message). ``outcome``: a warm worker's task outcome (see
    :func:`apis._pyexec.run_loaded`); None for a fresh child (its handoff file has it)."""

    pid: int
    code: int
    died: str = ""
    outcome: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class WorkerGone:
    """Made by the client's reader: warm worker ``pid`` ended (after its task's ``Ended``, if
    it held one). Its pid may be reused from now on."""

    pid: int


@dataclass(frozen=True, slots=True)
class ServerDied:
    """Made by the client's reader: the server went away; none of its tasks will be reported."""

    reason: str


@dataclass(frozen=True, slots=True)
class TaskDone:
    """worker → client: its task ended with ``code``; ``retire``: let the worker go."""

    code: int
    retire: bool
    outcome: dict[str, Any] | None

    def __reduce__(self) -> tuple[Any, ...]:  # the message of every warm task: pickled as its fields,
        return TaskDone, (self.code, self.retire, self.outcome)  # not through dataclasses' __getstate__


ToServer = Spawn | DefinePool | Submit
FromServer = Started | StartFailed | Ended | WorkerGone | ServerDied


def _frame(obj: Any) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(_HEADER, "big") + data


def _write_all(fd: int, data: bytes) -> None:
    buf = memoryview(data)
    while buf:
        n = os.write(fd, buf)
        buf = buf[n:]


def _write_msg(fd: int, obj: Any) -> None:
    _write_all(fd, _frame(obj))


def _frames(buf: bytearray) -> list[Any]:
    """The whole frames at the head of ``buf``, decoded (and removed from it)."""
    out, pos = [], 0
    while len(buf) - pos >= _HEADER:
        n = int.from_bytes(buf[pos:pos + _HEADER], "big")
        if len(buf) - pos - _HEADER < n:
            break
        out.append(pickle.loads(buf[pos + _HEADER:pos + _HEADER + n]))
        pos += _HEADER + n
    del buf[:pos]
    return out


# --- the server (runs in its own process) -----------------------------------------------


class _Server:
    def __init__(self, in_fd: int, out_fd: int) -> None:
        self.in_fd = in_fd
        self.out_fd = out_fd
        # A socket (every client of this module makes one: ``ForkServer``, ``prefork``): it also
        # carries the fds of Submit, each warm worker's own socket to the client.
        self.in_sock = socket.socket(fileno=os.dup(in_fd))
        self.fds: collections.deque[int] = collections.deque()  # received, not yet claimed by a Submit
        self.children: set[int] = set()
        self.devnull = os.open(os.devnull, os.O_RDWR)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.sel = selectors.DefaultSelector()
        self.buf = bytearray()
        self.out: list[bytes] = []  # frames for the client, written once per turn
        self.pools: dict[str, dict[str, Any]] = {}  # App code by pool key

    def send(self, msg: FromServer) -> None:
        self.out.append(_frame(msg))

    def _flush_out(self) -> None:
        if self.out:
            data = b"".join(self.out)
            self.out.clear()
            _write_all(self.out_fd, data)

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
                elif not self._read_requests():
                    self._flush_out()
                    self._shutdown()
                    return 0
            self._reap()
            self._flush_out()

    def _read_requests(self) -> bool:
        data, anc, _flags, _addr = self.in_sock.recvmsg(1 << 16, _FDS_SPACE)
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(raw[: len(raw) - len(raw) % fds.itemsize])
                self.fds.extend(fds)
        if not data:
            return False
        self.buf += data
        for msg in _frames(self.buf):
            match msg:
                case Submit(token=token, key=key, spec=spec):
                    self._fork_worker(token, key, spec)
                case DefinePool(key=key, app=app):
                    self.pools[key] = app
                case Spawn(token=token, spec=spec):
                    self._spawn(token, spec)
        return True

    # --- warm workers ---------------------------------------------------------------

    def _fork_worker(self, token: Any, key: str, spec: bytes) -> None:
        """Fork a worker of pool ``key`` that starts with task ``spec`` and talks to the client
        on the socket that came with the Submit (its fd, in order)."""
        if not self.fds:
            self.send(StartFailed(token, "a Submit without its worker's socket"))
            return
        sock = self.fds.popleft()
        try:
            app = self.pools.get(key)
            if app is None:
                self.send(StartFailed(token, f"no App code for worker pool {key} (a Submit before its DefinePool)"))
                return
            pid = self._fork(token)
            if pid is None:
                return
            if pid == 0:  # the worker: never returns
                _worker(app, spec, sock, self.devnull)
            self.children.add(pid)
            self.send(Started(token, pid))
        finally:
            os.close(sock)

    # --- fresh children ---------------------------------------------------------------

    def _fork(self, token: Any) -> int | None:
        """``os.fork()`` with our buffered output flushed first (a child must not write it
        again); ``None`` when the fork failed, the agent told with StartFailed."""
        for f in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                f.flush()
        try:
            return os.fork()
        except OSError as e:
            self.send(StartFailed(token, f"fork failed: {e}"))
            return None

    def _spawn(self, token: Any, spec: dict[str, Any]) -> None:
        pid = self._fork(token)
        if pid is None:
            return
        if pid == 0:  # the child: never returns
            _child(spec, self.devnull, (self.in_fd, self.out_fd, self.wake_r, self.wake_w, self.sel),
                   [*self.fds, self.in_sock.fileno()])
        self.children.add(pid)
        self.send(Started(token, pid))

    def _reap(self) -> None:
        while self.children:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            pid = info.si_pid
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # its group, while the zombie pins the id
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                continue
            self.children.discard(pid)
            self.send(Ended(pid, os.waitstatus_to_exitcode(status)))

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


def _worker(app: dict[str, Any], spec: bytes, sock: int, devnull: int) -> NoReturn:
    """A warm worker of App code ``app``: run ``spec``, then each task the client sends on
    ``sock`` (its own socket to the client, which it answers there), until it closes."""
    try:
        os.setsid()
        _reset_child_signals()
        keep = {sock, devnull, 2}
        for name in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else []:
            fd = int(name)
            if fd > 2 and fd not in keep:
                with contextlib.suppress(OSError):
                    os.close(fd)
        os.set_inheritable(sock, False)  # a process the job forks must not hold the client's socket
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.chdir("/")

        loaded: Any = None
        env = _Environ()
        buf = bytearray()
        task: Any = dict(pickle.loads(spec), app=app)  # the first task loads the class: load_app reads spec["app"]
        while task is not None:
            code, retire, loaded, outcome = _worker_task(task, loaded, _pyexec, env)
            _write_msg(sock, TaskDone(code, retire, outcome))
            if retire:
                break
            task = _next_frame(sock, buf)  # a frame of the pickled spec
    except BaseException:  # noqa: BLE001 - the worker is lost; the client reports its task
        with contextlib.suppress(Exception):
            traceback.print_exc()
        os._exit(70)
    os._exit(0)


def _enter_workdir(cwd: str) -> None:
    try:
        os.chdir(cwd)  # the agent made it (checking it on the way): the usual case
    except FileNotFoundError:
        os.makedirs(cwd, exist_ok=True)
        os.chdir(cwd)


def _next_frame(fd: int, buf: bytearray) -> Any:
    """The next framed message on a blocking socket, read with as few reads as it takes (the
    client writes a task in one frame and sends the next only after the answer: one read);
    None at its end."""
    while True:
        if len(buf) >= _HEADER:
            n = int.from_bytes(buf[:_HEADER], "big")
            if len(buf) >= _HEADER + n:
                msg = pickle.loads(buf[_HEADER:_HEADER + n])
                del buf[:_HEADER + n]
                return msg
        data = os.read(fd, 1 << 16)
        if not data:
            return None
        buf += data


class _Environ:
    """A warm worker's ``os.environ``, made exactly each task's environment with as few
    ``putenv`` calls as the difference from the task before needs.

    The tasks of one pool differ in a few variables (the job's name and key, its threads); a
    whole comparison through ``os.environ`` decodes every name and value (~20 µs for 40
    variables). What was set is remembered as the ``str`` dictionary handed over and as the
    encoded dictionary ``os.environ`` keeps (``_data``, CPython's); when the task left the
    latter as it was (one C comparison), the new one is set by its differences from the old
    one; when the task changed its environment, or ``os.environ`` keeps none, by
    :func:`_set_environ` (issue 14p)."""

    def __init__(self) -> None:
        self.want: dict[str, str] | None = None
        self.data: dict[Any, Any] | None = None

    def set(self, want: dict[str, str]) -> None:
        env = os.environ
        data = getattr(env, "_data", None)
        prev = self.want
        if prev is None or data is None or data != self.data:
            _set_environ(want)
        else:
            get = prev.get
            for k, v in want.items():
                if get(k) != v:
                    env[k] = v
            if len(prev) + len(want) != 2 * len(want.keys() & prev.keys()):  # some of prev's are gone
                for k in prev.keys() - want.keys():
                    del env[k]
        self.want = want
        self.data = data.copy() if isinstance(data, dict) else None


def _worker_task(spec: dict[str, Any], loaded: Any, pyexec: Any,
                 env: _Environ | None = None) -> tuple[int, bool, Any, dict[str, Any] | None]:
    """One task in a warm worker: ``(exit code, retire the worker, the App class, outcome)``."""
    code, retire, outcome = 1, False, None
    try:
        _enter_workdir(spec["cwd"])
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if spec.get("append") else os.O_TRUNC)
        out = os.open(spec["stdout"], flags, 0o660)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        if env is not None:
            env.set(spec["env"])
        else:
            _set_environ(spec["env"])
        sys.argv = [str(spec.get("argv0", "balsam-task"))]
        if loaded is None:
            try:
                loaded = pyexec.load_app(spec)
            except Exception as e:  # noqa: BLE001 - a class that cannot be loaded fails its job
                return 1, True, None, pyexec.failed_outcome(e)
        code, error, outcome = pyexec.run_loaded(spec, loaded)
        retire = isinstance(error, MemoryError)  # the heap may be in pieces: start afresh
    except SystemExit as e:  # run() called sys.exit(): its code, as a process of its own would
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - KeyboardInterrupt, a failed setup...: reported, worker let go
        with contextlib.suppress(Exception):
            traceback.print_exc()
        code, retire = 1, True
    finally:
        # Its output flushed to its job.out; the worker stays in the task's cwd with its
        # stdout/stderr on that job.out until the next task moves them (three syscalls per task
        # fewer than going back to / and /dev/null; output of a thread the task left behind
        # goes where it would have gone during the next task either way).
        for f in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                f.flush()
    return (code if 0 <= code <= 255 else 1), retire, loaded, outcome


def _set_environ(want: dict[str, str]) -> None:
    """Make ``os.environ`` exactly ``want`` (only the differences: putenv is not free)."""
    env = os.environ
    for k in [k for k in env if k not in want]:
        del env[k]
    for k, v in want.items():
        if env.get(k) != v:
            env[k] = v


def _child(spec: dict[str, Any], devnull: int, inherited: tuple[Any, ...], server_fds: list[int]) -> None:
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
        # The server's other fds: its request socket's duplicate, and workers' sockets received
        # but not yet given to a worker (kept open here, a worker would not see its client go).
        for fd in server_fds:
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
    one, else the system's temporary directory. Its name carries our pid; the directories of
    processes that are gone (a ``kill -9``ed agent cannot remove its own) are removed first,
    so a login node's /dev/shm does not fill with one per killed agent."""
    shm = "/dev/shm"
    base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()
    remove_stale_runtime_dirs(base, prefix)
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=base)


def remove_stale_runtime_dirs(base: str, prefix: str) -> int:
    """Remove our own ``prefix<pid>-*`` directories in ``base`` whose process no longer exists;
    returns how many. A pid reused since is taken as alive (its directory stays)."""
    removed = 0
    uid = os.getuid()
    try:
        names = os.listdir(base)
    except OSError:
        return 0
    for name in names:
        if not name.startswith(prefix):
            continue
        pid_text = name[len(prefix):].partition("-")[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        path = os.path.join(base, name)
        try:
            if os.lstat(path).st_uid != uid:
                continue  # another user's (or a link): not ours to judge
            os.kill(int(pid_text), 0)
            continue  # alive
        except ProcessLookupError:
            pass
        except OSError:  # gone meanwhile, or a live process of another user
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    return removed


#: ``on_message(generation, message)``; :class:`ServerDied` when the server goes away.
OnMessage = Callable[[int, FromServer], None]


class ForkServerError(Exception):
    """The fork server could not be started or reached."""


class Preforked:
    """A fork server forked from the calling process (:func:`prefork`), not started yet as a
    new interpreter: a ``subprocess.Popen``-like handle on it (what :class:`ForkServer` uses);
    ``requests`` is the socket of its requests (its stdin)."""

    def __init__(self, pid: int, requests: socket.socket, stdout_fd: int) -> None:
        self.pid = pid
        self.requests: socket.socket | None = requests
        self.stdout: IO[bytes] | None = open(stdout_fd, "rb", buffering=0)  # noqa: SIM115 - as Popen's
        self.returncode: int | None = None
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        with self._lock:
            if self.returncode is None:
                try:
                    pid, status = os.waitpid(self.pid, os.WNOHANG)
                except ChildProcessError:  # reaped by someone else: it is gone all the same
                    self.returncode = -1
                else:
                    if pid:
                        self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.001
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"fork server {self.pid}", timeout or 0.0)
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        return code

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


def prefork(stderr: str | os.PathLike[str] | None = None) -> Preforked:
    """Fork a fork server from this process now, to be adopted by a :class:`ForkServer`
    (``preforked=``). Starting one as a new interpreter costs ~0.35 s of CPU for its imports,
    which on a busy node delays the first Python job by seconds; this process has done them
    already, so a fork costs a few milliseconds. Call it only where a fork is safe and cheap:
    in a command's ``main`` before it starts threads or opens store connections (the child
    keeps none of them: every fd but its pipes and stderr is closed, and it never returns)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    from_r, from_w = os.pipe()
    for f in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            f.flush()
    pid = os.fork()
    if pid == 0:  # the server: never returns
        code = 70
        try:
            os.dup2(theirs.fileno(), 0)
            os.dup2(from_w, 1)
            if stderr is not None:
                err = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                os.dup2(err, 2)
            os.closerange(3, _max_fd())
            code = main()
        finally:
            os._exit(code)
    theirs.close()
    os.close(from_w)
    return Preforked(pid, ours, from_r)


def _max_fd() -> int:
    try:
        return max(int(n) for n in os.listdir("/proc/self/fd")) + 1
    except (OSError, ValueError):
        return os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 1024


class _Peer:
    """The client's end of a warm worker: its socket, its pool, the task it holds."""

    __slots__ = ("pid", "key", "sock", "gen", "buf", "token", "parked", "gone")

    def __init__(self, pid: int, key: str, sock: socket.socket, gen: int) -> None:
        self.pid, self.key, self.sock, self.gen = pid, key, sock, gen
        self.buf = bytearray()
        self.token: Any = None  # the task it runs; None: idle
        self.parked = 0
        self.gone = False  # its socket is closed (retired, or the server reported its end)


class ForkServer:
    """A handle on a fork server process, started on first use (and again after it died;
    first from ``preforked`` when given: see :func:`prefork`).

    ``spawn(token, spec)`` (a fresh child) and ``submit(token, key, app, spec)`` (a warm
    worker of pool ``key``) return the server's generation; the answers arrive through
    ``on_message(generation, msg)``, in order for each task (``Started`` before ``Ended``).
    After :class:`ServerDied` of a generation, none of its children will be reported again.

    **Warm workers answer here, not through the server.** This side keeps each pool's idle
    workers; a task for a pool with an idle worker is written to that worker's own socket and
    its ``Started`` is made here; the worker's ``TaskDone`` comes back on the same socket
    (read by the reader thread, with the server's output, in one ``epoll``) and becomes the
    task's ``Ended``. Only a pool without an idle worker asks the server: a :class:`Submit`
    carrying (``SCM_RIGHTS``) one end of a new socket pair, which the worker forked for it
    keeps. The server reports every child's end (``Ended(pid, code)``); for a worker that held
    a task, whatever it wrote before dying is read first, and a task it never answered fails
    with the reason (``died``). So per warm task the server does nothing: no read, no write,
    no wake-up (issue 14, fifth round)."""

    def __init__(self, on_message: OnMessage, *, name: str = "forkserver", env: dict[str, str] | None = None,
                 stderr: str | os.PathLike[str] | None = None, preforked: Preforked | None = None) -> None:
        self._on_message = on_message
        self._preforked = preforked
        self._name = name
        self._env = env
        self._stderr_path = stderr
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | Preforked | None = None
        self._requests: socket.socket | None = None
        self._generation = 0
        self._defined: set[str] = set()  # pools whose App code this generation of the server has
        self._closed = False
        self._peers: dict[int, _Peer] = {}  # this generation's workers by pid
        self._by_fd: dict[int, _Peer] = {}  # … by their socket's fd (the reader's epoll)
        self._idle: dict[str, list[_Peer]] = {}  # by pool key, most recently used last
        self._forking: dict[Any, tuple[str, socket.socket]] = {}  # token → (pool, our end) of a worker asked for
        self._epoll: select.epoll | None = None
        self._ticks = 0
        self.max_idle = max(8, 2 * (os.cpu_count() or 1))

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _start(self) -> None:
        proc: subprocess.Popen[bytes] | Preforked
        if self._preforked is not None and self._preforked.poll() is None:
            proc, self._preforked = self._preforked, None
            requests = proc.requests
            proc.requests = None
        else:
            if self._preforked is not None:
                log.warning("the pre-forked %s had exited (code %s); starting one", self._name, self._preforked.returncode)
                self._preforked = None
            proc, requests = self._popen()
        self._forget_workers()
        self._generation += 1
        self._defined = set()
        self._proc, self._requests = proc, requests
        self._epoll = select.epoll()
        t = threading.Thread(target=self._read_loop, args=(proc, self._generation, self._epoll),
                             name=f"{self._name}-reader", daemon=True)
        t.start()

    def _popen(self) -> tuple[subprocess.Popen[bytes], socket.socket]:
        stderr: Any = None
        if self._stderr_path is not None:
            stderr = open(self._stderr_path, "ab")  # noqa: SIM115 - handed to the child
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            proc = subprocess.Popen([sys.executable, "-m", "apis._forkserver"], stdin=theirs.fileno(),
                                    stdout=subprocess.PIPE, stderr=stderr, env=self._env, close_fds=True)
        except OSError as e:
            ours.close()
            raise ForkServerError(f"cannot start the {self._name}: {e}") from None
        finally:
            theirs.close()
            if stderr is not None:
                stderr.close()
        return proc, ours

    def start(self) -> None:
        """Start the server now unless it runs (it starts on first use anyway)."""
        with self._lock:
            if not self._closed and (self._proc is None or self._proc.poll() is not None):
                self._start()

    def spawn(self, token: Any, spec: dict[str, Any]) -> int:
        """Ask for a fresh child; returns the generation its answers will carry."""
        data = _frame(Spawn(token, spec))
        with self._lock:
            self._ensure()
            self._request(data)
            return self._generation

    def submit(self, token: Any, key: str, app: dict[str, Any], spec: dict[str, Any]) -> int:
        """Run ``spec`` in a warm worker of pool ``key`` (App code ``app``, sent to the server
        only with the pool's first fork); returns the generation. An idle worker gets the task
        on its own socket (its ``Started`` is delivered before this returns); otherwise the
        server forks one for it."""
        body = pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            self._ensure()
            idle = self._idle.get(key)
            while idle:
                p = idle.pop()
                try:
                    p.sock.sendall(len(body).to_bytes(_HEADER, "big") + body, socket.MSG_NOSIGNAL)
                except OSError:  # it is dying: the server's word of its end cleans it up
                    continue
                p.token = token
                self._on_message(self._generation, Started(token, p.pid, forked=False))
                return self._generation
            data = _frame(Submit(token, key, body))
            if key not in self._defined:
                data = _frame(DefinePool(key, app)) + data
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self._request(data, theirs.fileno())
            except BaseException:
                ours.close()
                raise
            finally:
                theirs.close()
            self._defined.add(key)
            self._forking[token] = (key, ours)
            return self._generation

    def _ensure(self) -> None:
        """The server runs (under the lock)."""
        if self._closed:
            raise ForkServerError(f"the {self._name} is closed")
        if self._proc is None or self._proc.poll() is not None:
            self._start()

    def _request(self, data: bytes, fd: int = -1) -> None:
        """Write a request (with ``fd`` passed along) to the server, under the lock."""
        assert self._requests is not None
        try:
            if fd >= 0:
                fds = array.array("i", [fd])
                n = self._requests.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)], socket.MSG_NOSIGNAL)
                data = data[n:]
            if data:
                self._requests.sendall(data, socket.MSG_NOSIGNAL)
        except OSError as e:
            self._proc = None
            raise ForkServerError(f"the {self._name} went away: {e}") from None

    # --- the reader thread ------------------------------------------------------------------

    def _read_loop(self, proc: subprocess.Popen[bytes] | Preforked, generation: int, ep: select.epoll) -> None:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()  # unbuffered reads: one call takes whatever frames are there
        reason = "its output closed"
        buf = bytearray()
        ep.register(fd, select.EPOLLIN)
        try:
            while True:
                try:
                    events = ep.poll()
                except InterruptedError:
                    continue
                for efd, _ in events:
                    if efd != fd:
                        self._from_worker(generation, efd)
                        continue
                    data = os.read(fd, 1 << 16)  # what is there (the server writes a turn's answers at once)
                    if not data:
                        raise EOFError
                    buf += data
                    for msg in _frames(buf):
                        self._from_server(generation, msg)
        except EOFError:
            pass
        except Exception as e:  # noqa: BLE001 - the server is gone either way
            reason = f"{type(e).__name__}: {e}"
        code = proc.wait()
        with self._lock:
            if self._proc is proc:
                self._proc = None
            if self._generation == generation:
                self._forget_workers()
        ep.close()
        if not self._closed:
            log.warning("%s exited (code %s; %s)", self._name, code, reason)
        self._on_message(generation, ServerDied(f"the {self._name} exited with code {code}"))

    def _from_server(self, gen: int, msg: FromServer) -> None:
        with self._lock:
            match msg:
                case Started(token=token, pid=pid) if token in self._forking:
                    key, sock = self._forking.pop(token)
                    p = _Peer(pid, key, sock, gen)
                    p.token = token
                    if gen == self._generation:
                        self._peers[pid] = p
                        self._by_fd[sock.fileno()] = p
                        assert self._epoll is not None
                        self._epoll.register(sock.fileno(), select.EPOLLIN)
                    else:
                        self._drop(p)
                    self._on_message(gen, msg)  # under the lock, as the worker's Ended will be
                    return
                case StartFailed(token=token) if token in self._forking:
                    self._forking.pop(token)[1].close()
                case Ended(pid=pid, code=code) if pid in self._peers:
                    p = self._peers.pop(pid)
                    self._read_peer(gen, p)  # what it wrote before it died comes first
                    self._unpark(p)
                    self._drop(p)
                    if p.token is not None:  # it died under its task: the task fails, saying how
                        p.token = None
                        self._on_message(gen, Ended(pid, code, died=_died(code)))
                    self._on_message(gen, WorkerGone(pid))
                    return
        self._on_message(gen, msg)  # a fresh child's (or a failed start's): as the server said

    def _from_worker(self, gen: int, fd: int) -> None:
        with self._lock:
            p = self._by_fd.get(fd)
            if p is not None and p.gen == gen:
                self._read_peer(gen, p, drain=False)

    def _read_peer(self, gen: int, p: _Peer, drain: bool = True) -> None:
        """Take what worker ``p`` wrote (under the lock): its TaskDone ends its task. Woken by
        the epoll (``drain=False``), one read: a worker writes one answer and then waits for
        its next task, and the epoll is level-triggered, so whatever is left (the rest of a
        large answer, its end) wakes us again — no second read per task to hear that there
        is nothing more. ``drain``: read all there is, up to its end (the worker has died)."""
        if p.gone:
            return
        eof = False
        try:
            while True:
                data = p.sock.recv(1 << 16, socket.MSG_DONTWAIT)
                if not data:
                    eof = True
                    break
                p.buf += data
                if not drain:
                    break
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            eof = True
        for msg in _frames(p.buf):
            if isinstance(msg, TaskDone) and p.token is not None:
                p.token = None
                self._on_message(gen, Ended(p.pid, msg.code, outcome=msg.outcome))
                if msg.retire:
                    self._drop(p)
                else:
                    self._park(p)
        if eof:  # it is ending: the server's Ended says how, and fails its task if it held one
            self._unpark(p)
            self._drop(p)

    def _park(self, p: _Peer) -> None:
        self._ticks += 1
        p.parked = self._ticks
        self._idle.setdefault(p.key, []).append(p)
        if sum(len(v) for v in self._idle.values()) > self.max_idle:  # let the least recently used go
            lru = min((v[0] for v in self._idle.values() if v), key=lambda x: x.parked)
            self._unpark(lru)
            self._drop(lru)  # its socket closes: it exits, the server reaps it

    def _unpark(self, p: _Peer) -> None:
        idle = self._idle.get(p.key)
        if idle and p in idle:
            idle.remove(p)

    def _drop(self, p: _Peer) -> None:
        """Close our end of ``p``'s socket (a worker exits when it reads its end)."""
        if p.gone:
            return
        p.gone = True
        fd = p.sock.fileno()
        if self._by_fd.get(fd) is p:
            del self._by_fd[fd]
            if self._epoll is not None:
                with contextlib.suppress(OSError, ValueError):
                    self._epoll.unregister(fd)
        p.sock.close()

    def _forget_workers(self) -> None:
        """A server's end (or a new one): its workers' sockets are closed (under the lock)."""
        for p in list(self._peers.values()):
            self._drop(p)
        self._peers.clear()
        self._by_fd.clear()
        self._idle.clear()
        for _, sock in self._forking.values():
            sock.close()
        self._forking.clear()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the server (it kills the children it still has)."""
        with self._lock:
            self._closed = True
            proc, requests = self._proc, self._requests
            self._proc = None
            if proc is None and self._preforked is not None:  # never used: its stdin's EOF ends it
                proc, requests, self._preforked = self._preforked, self._preforked.requests, None
        if proc is None:
            return
        with contextlib.suppress(Exception):
            assert requests is not None
            requests.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    # The messages must be pickled as ``apis._forkserver``'s classes, not ``__main__``'s: serve
    # from the module as its clients import it.
    from apis._forkserver import main as _main

    sys.exit(_main())
