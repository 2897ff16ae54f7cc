"""Turning a bound Job into a running process: command line, environment, workdir, spawn.

The command is the App's template rendered by :func:`apis._templates.render_command`
(every value shell-quoted), prefixed by the Site's MPI launcher when the job spans several
nodes or ranks, preceded by the App's ``preamble`` lines, and run by ``/bin/sh -c`` in
``data/<workdir>`` (created) with stdout and stderr in ``job.out`` (truncated per attempt),
stdin ``/dev/null``, in a new session (its own process group, which the agent kills).

Fast path: a command that is a plain word list (no expansions, redirections, operators,
globs or shell builtins; quoted values included) is exec'ed directly with the same
argument vector ``sh`` would build, which halves the cost of a spawn. If that exec fails
(not found, not executable, a script without ``#!``), the job is started through
``/bin/sh -c`` after all, so the shell's own message and exit code (127, 126) land in
``job.out`` exactly as they would have.

Python apps (an App with ``python:`` and no command) are not exec'ed: :func:`prepare_python`
describes the job for the agent's fork server (``_pyapps.py``), which forks a fresh process
that calls the class's ``run(**parameters)`` in the same workdir, environment and ``job.out``.

Environment, lowest to highest precedence: the agent's environment; ``OMP_NUM_THREADS`` =
``threadsPerRank``; the App's ``environment``; then what the placement decides and the
App cannot override: the GPU pinning of the node's platform (:class:`GpuPinning`:
``CUDA_VISIBLE_DEVICES`` on NVIDIA, ``ROCR_VISIBLE_DEVICES`` on AMD, ``ZE_AFFINITY_MASK`` on
Intel, with the placement's GPU ids comma-joined, empty when none), ``BALSAM_JOB_ID`` (the
job's name), ``BALSAM_SITE_PATH``, ``BALSAM_JOB_KEY`` (``<namespace>/<name>``: how a later run
of the job finds this one to fence it).
"""

from __future__ import annotations

import _posixsubprocess  # CPython's; see _DIRECT
import builtins
import contextlib
import functools
import hashlib
import json
import math
import os
import posixpath
import re
import select
import shlex
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apis import App, Job
from apis._paths import UnsafePath, open_dir_nofollow, open_file_dir_nofollow
from apis._templates import render_command

from ._fence import JOB_KEY_ENV
from .launchers import LaunchSpec, launch_command, needs_launcher

OUTPUT_FILE = "job.out"
TAIL_LINES = 20
TAIL_BYTES = 4096

# A word: unquoted safe characters, single-quoted strings, and the "'" that shlex.quote
# uses for an embedded single quote. Anything else (``$ ` \ " ; & | < > ( ) * ? [ ~ # { }``,
# newlines) sends the command through the shell.
_WORD = r"(?:[A-Za-z0-9_@%+=:,./-]|'[^']*'|\"'\")+"
_SIMPLE = re.compile(rf"[ \t]*{_WORD}(?:[ \t]+{_WORD})*[ \t]*")
# dash's builtins and keywords: run by the shell, not exec'ed (``echo`` differs from
# /bin/echo, ``cd`` has no binary). ``true``/``false`` behave the same either way.
_SHELL_WORDS = frozenset(
    ". : [ alias bg break cd chdir command continue echo eval exec exit export fc fg getopts hash "
    "jobs kill local printf pwd read readonly return set shift test times trap type ulimit umask "
    "unalias unset wait ! case do done elif else esac fi for if in then until while { }".split()
)


def simple_argv(command: str) -> list[str] | None:
    """The argv ``/bin/sh -c command`` would exec, when the shell would do nothing else."""
    argv = _simple_argv(command)
    return None if argv is None else list(argv)


@functools.lru_cache(maxsize=1024)
def _simple_argv(command: str) -> tuple[str, ...] | None:
    """``simple_argv``, once per command (an ensemble's jobs repeat theirs: the regex and
    ``shlex.split`` were ~10 µs of every launch)."""
    if not _SIMPLE.fullmatch(command):
        return None
    argv = shlex.split(command)
    if not argv:
        return None
    first = argv[0]
    if "/" not in first and (first in _SHELL_WORDS or "=" in first):
        return None  # a builtin, or a variable assignment
    return tuple(argv)


GPU_VARIABLES = {"nvidia": "CUDA_VISIBLE_DEVICES", "amd": "ROCR_VISIBLE_DEVICES", "intel": "ZE_AFFINITY_MASK"}


@dataclass(frozen=True)
class GpuPinning:
    """How a job sees only the GPUs it was placed on (``Site.spec.gpuPlatform``).

    The placement hands out schedulable units 0..gpus-1. With ``tiles`` > 1 (Intel GPUs
    split into tiles: Aurora's 6 GPUs x 2 tiles are 12 units) unit ``u`` is tile
    ``u % tiles`` of GPU ``u // tiles`` and is named ``GPU.TILE`` (``ZE_AFFINITY_MASK=0.0,0.1``);
    otherwise units are whole GPUs (``0,1``)."""

    platform: str = "nvidia"
    tiles: int = 1

    @property
    def variable(self) -> str:
        return GPU_VARIABLES[self.platform]

    def ids(self, units: list[int]) -> str:
        if self.tiles > 1:
            return ",".join(f"{u // self.tiles}.{u % self.tiles}" for u in units)
        return ",".join(str(u) for u in units)

    def env(self, units: list[int]) -> dict[str, str]:
        env = {self.variable: self.ids(units)}
        if self.platform == "intel":
            env["ZE_ENABLE_PCI_ID_DEVICE_ORDER"] = "1"  # GPU numbers as the node's PCI order, as Balsam does
        return env


NVIDIA = GpuPinning()


class PrepareError(Exception):
    """The job cannot be started as specified (the command does not render, the App is gone)."""


@dataclass
class Prepared:
    command: str  # what /bin/sh -c runs
    argv: list[str] | None  # the fast path, when the command is a plain word list
    cwd: Path
    env: dict[str, str]
    #: ``data/``, which ``cwd`` lies under: the spawn reaches ``cwd`` from it again without
    #: following links and starts the job in the directory it opened (None: ``cwd`` as given).
    root: Path | None = None
    #: ``cwd`` as ``prepare(..., open_dir=True)`` reached it (its one walk from ``data/``): the
    #: spawn starts the job in it and closes it; :meth:`close` when it will not be spawned.
    dirfd: int = -1

    def close(self) -> None:
        """Close the workdir kept open by ``prepare(..., open_dir=True)`` (not spawned)."""
        if self.dirfd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.dirfd)
            self.dirfd = -1


def job_command(job: Job, app: App, launcher: str, hosts: list[str], pinning: GpuPinning = NVIDIA) -> str:
    """The full shell command of a job: preamble, launcher prefix, rendered App command."""
    if app.spec.command is None:
        raise PrepareError(f'app "{app.name}" has no command')
    try:
        if not app.spec.parameters and not job.spec.parameters and "{" not in app.spec.command:
            command = _constant_command(app.spec.command)
        else:
            command = render_command(app.spec.command, app.spec.parameters, job.spec.parameters)
    except ValueError as e:
        raise PrepareError(str(e)) from None
    res = job.spec.resources
    if needs_launcher(len(hosts), res.ranks_per_node):
        env_names = [*pinning.env([]), "OMP_NUM_THREADS", *app.spec.environment,
                     "BALSAM_JOB_ID", "BALSAM_SITE_PATH"]
        spec = LaunchSpec(
            hosts=hosts,
            ranks_per_node=res.ranks_per_node,
            threads_per_rank=res.threads_per_rank,
            threads_per_core=res.threads_per_core,
            gpus_per_rank=res.gpus_per_rank,
            launch_params=res.launch_params,
            env_names=list(dict.fromkeys(env_names)),
        )
        try:
            command = launch_command(launcher, command, spec)
        except ValueError as e:
            raise PrepareError(str(e)) from None
    if app.spec.preamble:
        command = f"{app.spec.preamble.rstrip()}\n{command}"
    return command


@functools.lru_cache(maxsize=256)
def _constant_command(template: str) -> str:
    """A template without jinja syntax (no ``{``: no code, no filter such as ``random`` runs)
    and no parameters: the same string for every job of the App, so rendered once (~7 µs of
    jinja per launch; issue 19, sixth round)."""
    return render_command(template, {}, {})


def job_env(job: Job, app: App, base_env: Mapping[str, str], site_path: Path, gpus: list[int],
            pinning: GpuPinning = NVIDIA) -> dict[str, str]:
    env = dict(base_env)
    env["OMP_NUM_THREADS"] = str(job.spec.resources.threads_per_rank)
    env.update(app.spec.environment)
    env.update(pinning.env(gpus))
    env["BALSAM_JOB_ID"] = job.name
    env["BALSAM_SITE_PATH"] = str(site_path)
    env[JOB_KEY_ENV] = job_key(job)  # what fences an earlier run of this job (_fence.py)
    return env


def job_key(job: Job) -> str:
    """A job's identity among the processes of a host: ``<namespace>/<name>``."""
    return f"{job.metadata.namespace}/{job.name}"


def prepare(
    job: Job,
    app: App,
    *,
    data_path: Path,
    site_path: Path,
    base_env: Mapping[str, str],
    launcher: str,
    hosts: list[str],
    gpus: list[int],
    pinning: GpuPinning = NVIDIA,
    open_dir: bool = False,
) -> Prepared:
    """What :func:`spawn` starts. ``open_dir``: the workdir is kept open from its check (the
    caller spawns it or calls :meth:`Prepared.close`): one walk from ``data/`` per launch."""
    command = job_command(job, app, launcher, hosts, pinning)
    env = job_env(job, app, base_env, site_path, gpus, pinning)
    if not open_dir:
        return Prepared(command=command, argv=simple_argv(command), cwd=job_workdir(data_path, job), env=env,
                        root=data_path)
    cwd, dirfd = _open_workdir(data_path, job)
    return Prepared(command=command, argv=simple_argv(command), cwd=cwd, env=env, root=data_path, dirfd=dirfd)


def job_workdir(data_path: Path, job: Job) -> Path:
    """The job's workdir, made, reached from ``data/`` without following a symbolic link, and
    whose ``job.out`` is not one: a link made by an earlier job (a parent) must not send this
    job's output or process outside ``data/`` (PrepareError: the job FAILS with the reason)."""
    path, fd = _open_workdir(data_path, job)
    os.close(fd)
    return path


def _open_workdir(data_path: Path, job: Job) -> tuple[Path, int]:
    """:func:`job_workdir`, keeping the workdir open: ``(path, fd)``."""
    out = posixpath.join(job.spec.workdir, OUTPUT_FILE)
    try:
        try:
            path, fd = open_file_dir_nofollow(data_path, out)
        except FileNotFoundError:  # data/ itself is missing (made here, not checked per job)
            data_path.mkdir(parents=True, exist_ok=True)
            path, fd = open_file_dir_nofollow(data_path, out)
    except UnsafePath as e:
        raise PrepareError(f"workdir: {e}") from None
    return path.parent, fd


def is_python_app(app: App) -> bool:
    """An App whose class defines ``run()``: no command, a ``python:`` reference."""
    return not app.spec.command and app.spec.python is not None


_CODE_CACHE: dict[tuple[Any, ...], tuple[dict[str, Any], str]] = {}


def _python_code(app: App, gpus: list[int], pinning: GpuPinning, site_path: Path) -> tuple[dict[str, Any], str]:
    """The App's ``python:`` reference (shared: never changed) and the pool key of its jobs on
    ``gpus``: worked out once per App version and GPU set, not per job (a by-value class is a
    base64 pickle of some KiB that the key hashes)."""
    assert app.spec.python is not None
    ck = (app.metadata.uid, app.metadata.resource_version, tuple(gpus), pinning, str(site_path))
    hit = _CODE_CACHE.get(ck) if app.metadata.resource_version else None
    if hit is not None:
        return hit
    ref = app.spec.python.model_dump(by_alias=True, exclude_none=True)
    out = ref, pool_key(ref, app, gpus, pinning, site_path)
    if app.metadata.resource_version:
        if len(_CODE_CACHE) >= 256:
            _CODE_CACHE.clear()
        _CODE_CACHE[ck] = out
    return out


def pool_key(ref: dict[str, Any], app: App, gpus: list[int], pinning: GpuPinning, site_path: Path) -> str:
    """Which warm Python workers may run a job (``apis._forkserver``): the same App code
    (module/class or by-value payload), App environment and GPU set (``CUDA_VISIBLE_DEVICES``
    is read once, when a GPU library starts, so a worker serves one GPU set for its life)."""
    doc = json.dumps([ref, app.spec.environment, pinning.env(gpus), str(site_path)], sort_keys=True)
    return hashlib.sha1(doc.encode(), usedforsecurity=False).hexdigest()


def prepare_python(
    job: Job,
    app: App,
    *,
    data_path: Path,
    site_path: Path,
    base_env: Mapping[str, str],
    gpus: list[int],
    result_path: str,
    store_url: str | None = None,
    pinning: GpuPinning = NVIDIA,
) -> dict[str, Any]:
    """What the fork server needs to run a Python app's job (``apis._pyexec.run_app``): the
    same workdir, ``job.out`` and environment as a command, plus ``BALSAM_STORE``."""
    res = job.spec.resources
    if res.num_nodes > 1 or res.ranks_per_node > 1:
        raise PrepareError("a Python app (run()) runs as one process: numNodes and ranksPerNode must be 1 "
                           "(declare a command_template with an MPI launcher for more)")
    assert app.spec.python is not None
    env = job_env(job, app, base_env, site_path, gpus, pinning)
    if store_url:
        env.setdefault("BALSAM_STORE", store_url)
    cwd = os.fspath(job_workdir(data_path, job))
    ref, key = _python_code(app, gpus, pinning, site_path)
    return {
        "pool": None if app.spec.python.fresh_process else key,
        "task": "run",
        "cwd": cwd,
        "stdout": f"{cwd}{os.sep}{OUTPUT_FILE}",
        "append": False,
        "env": env,
        "app": ref,
        "job": job.to_json(),
        "parameters": dict(job.spec.parameters),
        "attempt": job.status.attempts + 1,
        "result_path": result_path,
        "apps_dir": f"{site_path}{os.sep}apps",
        "argv0": f"balsam-app {app.name} {job.name}",
    }


class Launched:
    """A job's process started by :func:`spawn`: what the agent uses of it (``pid``,
    ``returncode``, set when the reaper reports its exit) and, for callers without the
    reaper (tests), :meth:`wait`."""

    __slots__ = ("pid", "returncode")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        """Reap the process (``subprocess.Popen.wait``'s contract: its exit code, minus the
        signal that killed it; TimeoutExpired after ``timeout`` seconds)."""
        if self.returncode is not None:
            return self.returncode
        if timeout is not None:
            pidfd = os.pidfd_open(self.pid)
            try:
                poller = select.poll()  # not select(): a process with 1,024 fds open gets higher numbers
                poller.register(pidfd, select.POLLIN)
                if not poller.poll(max(0, math.ceil(timeout * 1000))):
                    raise subprocess.TimeoutExpired(str(self.pid), timeout)
            finally:
                os.close(pidfd)
        _, status = os.waitpid(self.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


#: ``_posixsubprocess.fork_exec`` called directly, as ``subprocess.Popen`` calls it (same
#: arguments: vfork, a new session, every other fd closed, signals restored), without the
#: rest of ``Popen``: its Python around that one call was ~2/3 of a launch's CPU in the agent
#: (issue 19, third round: 140-200 µs vs 55-75 µs per launch of /bin/true from an 80 MiB
#: process). Its signature is CPython's own, checked on 3.11: other versions use ``Popen``.
_DIRECT = sys.version_info[:2] == (3, 11) and getattr(subprocess, "_USE_VFORK", False)


#: ``NAME=value`` bytes of the environment entries met lately: a node's jobs share all but a few
#: (the agent's own environment), so each launch encodes only those (~17 → ~4 µs for 50).
_ENV_BYTES: dict[tuple[str, str], bytes] = {}
_ENV_BYTES_MAX = 4096


def _env_list(env: Mapping[str, str]) -> list[bytes]:
    out = []
    cache = _ENV_BYTES
    for kv in env.items():
        b = cache.get(kv)
        if b is None:
            k, v = kv
            if "=" in k:
                raise ValueError(f"illegal environment variable name: {k!r}")
            if len(cache) >= _ENV_BYTES_MAX:
                cache.clear()  # the per-job entries (BALSAM_JOB_ID...) would fill it
            b = cache[kv] = os.fsencode(k) + b"=" + os.fsencode(v)
        out.append(b)
    return out


def _executables(name: str, env: Mapping[str, str]) -> tuple[bytes, ...]:
    """Where ``execve`` is tried for ``name``: itself when it has a ``/``, else along the
    job environment's ``PATH`` (``os._execvpe``'s order, as ``Popen`` does)."""
    exe = os.fsencode(name)
    if os.path.dirname(exe):
        return (exe,)
    return tuple(os.path.join(os.fsencode(d), exe) for d in os.get_exec_path(env))


def _child_error(data: bytes, executable: str, cwd: str | Path) -> Exception:
    """The exception ``Popen`` raises for what the child wrote on its error pipe."""
    try:
        name, hex_errno, raw = data.split(b":", 2)
        msg = raw.decode()
    except ValueError:
        return subprocess.SubprocessError(f"bad exception data from child: {data!r}")
    cls = getattr(builtins, name.decode("ascii", "replace"), subprocess.SubprocessError)
    if isinstance(cls, type) and issubclass(cls, OSError) and hex_errno:
        num = int(hex_errno, 16)
        filename = str(cwd) if msg == "noexec" else executable  # noexec: chdir failed
        return cls(num, os.strerror(num) if num else "", filename)
    if isinstance(cls, type) and issubclass(cls, Exception):
        return cls(msg)
    return subprocess.SubprocessError(msg)


def _fork_exec(argv: list[str], cwd: str | Path, env: Mapping[str, str], stdin: int, out: int) -> Launched:
    """Start ``argv`` as ``Popen(argv, cwd=cwd, env=env, stdin=stdin, stdout=out,
    stderr=STDOUT, start_new_session=True)`` would; OSError as it would raise it."""
    args = [os.fsencode(a) for a in argv]
    errpipe_read, errpipe_write = os.pipe2(os.O_CLOEXEC)
    try:
        try:
            pid = _posixsubprocess.fork_exec(
                args, _executables(argv[0], env), True, (errpipe_write,), str(cwd), _env_list(env),
                stdin, -1, -1, out, -1, out, errpipe_read, errpipe_write,
                True, True, -1, None, None, None, -1, None, True,  # type: ignore[arg-type]  # preexec_fn None
            )  # fmt: skip
        finally:
            os.close(errpipe_write)
        data = bytearray()
        while True:  # empty at once when the exec worked (the pipe is close-on-exec)
            part = os.read(errpipe_read, 50000)
            data += part
            if not part or len(data) > 50000:
                break
    finally:
        os.close(errpipe_read)
    if data:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        raise _child_error(bytes(data), argv[0], cwd)
    return Launched(pid)


def spawn(p: Prepared, stdin: int) -> Launched | subprocess.Popen[bytes]:
    """Start the job in its own session (process group = its pid). OSError if it cannot start;
    UnsafePath if a link now lies on the way to its workdir.

    With ``p.root``, the workdir is opened from ``data/`` without following links (as
    ``prepare`` checked it) and the job starts *in that opened directory*: its ``cwd`` is
    ``/proc/self/fd/N``, which the child's ``chdir`` resolves to the open directory itself, not
    to a path walked again — a parent job that swaps the directory for a link between the check
    and the start cannot send this job elsewhere. ``job.out`` is opened in it ``O_NOFOLLOW``.
    A ``p.dirfd`` (``prepare(..., open_dir=True)``) is that directory already: used, then closed."""
    if p.dirfd >= 0:
        dirfd, p.dirfd = p.dirfd, -1
        cwd: str | Path = f"/proc/self/fd/{dirfd}"
    elif p.root is not None:
        dirfd = open_dir_nofollow(p.root, p.cwd.relative_to(p.root))
        cwd = f"/proc/self/fd/{dirfd}"  # the fd is open in the child until its exec
    else:
        p.cwd.mkdir(parents=True, exist_ok=True)
        dirfd = os.open(p.cwd, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        cwd = p.cwd
    null = -1
    try:
        fd = os.open(OUTPUT_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o660,
                     dir_fd=dirfd)
        if _DIRECT:
            try:
                if stdin < 0:  # subprocess.DEVNULL and friends: a caller without its own /dev/null
                    stdin = null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
                if p.argv is not None:
                    try:
                        return _fork_exec(p.argv, cwd, p.env, stdin, fd)
                    except OSError:
                        pass  # let the shell run it and report why it cannot (127/126 in job.out)
                return _fork_exec(["/bin/sh", "-c", p.command], cwd, p.env, stdin, fd)
            finally:
                os.close(fd)
        with open(fd, "wb") as out:
            if p.argv is not None:
                try:
                    return subprocess.Popen(
                        p.argv, cwd=cwd, env=p.env, stdin=stdin, stdout=out, stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                except OSError:
                    pass  # let the shell run it and report why it cannot (127/126 in job.out)
            return subprocess.Popen(
                p.command, shell=True, cwd=cwd, env=p.env, stdin=stdin, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    finally:
        os.close(dirfd)
        if null >= 0:
            os.close(null)


def output_tail(workdir: Path, lines: int = TAIL_LINES, max_bytes: int = TAIL_BYTES) -> str | None:
    """The last ``lines`` lines of ``job.out`` (at most ``max_bytes``), or None if unreadable."""
    try:
        with open(workdir / OUTPUT_FILE, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return None
    if len(data) == max_bytes and size > max_bytes:
        data = data.split(b"\n", 1)[-1]  # drop the cut-off first line
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])
