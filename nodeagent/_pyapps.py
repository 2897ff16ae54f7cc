"""Python apps (``run()``) on a node: each job in a warm worker of the agent's fork server.

A Python app's job is launched like any other (bound, ``→ RUNNING``, wall time, kills by
process group, ``job.out`` in its workdir), except that it runs in a process of the agent's
fork server (:mod:`apis._forkserver`, started with the CLI's agent, else on the first Python
job) instead of an exec'ed one: a warm worker of its pool key (App code, App environment,
GPU set; ``_launch.pool_key``), or a fresh fork when the App asks for ``freshProcess``. The
job runs in its workdir with its environment; its ``run(**parameters)`` result or exception
is recorded with the job (:mod:`apis._pycodec` for the encoding and caps): a warm worker
answers it with the job's end, a fresh process writes it to a small JSON file of the agent's
runtime directory.

The App's code goes to the fork server once per pool (``ForkServer.submit``), each job's
parameters, job JSON, cwd and env per job — straight to an idle warm worker on its own
socket, which answers there (the server only forks workers and reports their ends). The
``Ended(pid, code)`` of a job (the worker's pid for a warm worker, with the job's outcome, or
with the reason when the worker died under its job) and the ``Started`` before it become the
agent loop's own :class:`Spawned` / :class:`SpawnFailed` / :class:`Exited`, in order (a job's
``Exited`` never precedes its ``Spawned``). Every process started is guarded by the job
guardian as soon as it is known: a warm worker once for its whole life (unguarded when it
ends), a fresh one until the agent reaps it. If the server dies, its running jobs are reported
as killed (SIGKILL) and a new server starts on the next Python job.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from apis import JobState
from apis._forkserver import (
    Ended,
    ForkServer,
    ForkServerError,
    FromServer,
    Preforked,
    ServerDied,
    Started,
    StartFailed,
    WorkerGone,
    runtime_dir,
)

from ._messages import Exited, Post, Spawned, SpawnFailed
from ._run import ForkedProcess, Run

log = logging.getLogger(__name__)


def _no_guard(pgid: int) -> None:
    pass


class PythonApps:
    """The agent's fork server for Python apps; ``put`` is the agent loop's queue ``put``.

    ``guard``/``unguard`` (the lease keeper's): this pool tells the job guardian of every
    process it starts as soon as it is known (before its ``Spawned``), and of a warm worker's
    end when the server reports it — once per worker, not per job (issue 14, fifth round).
    A fresh process is unguarded by the agent when it is reaped, as a command's is."""

    def __init__(self, put: Post, *, log_dir: Path | None = None, preforked: Preforked | None = None,
                 guard: Callable[[int], None] = _no_guard, unguard: Callable[[int], None] = _no_guard) -> None:
        self._put = put
        self._guard, self._unguard = guard, unguard
        self._lock = threading.Lock()
        self._tokens = itertools.count(1)
        self._pending: dict[int, tuple[int, Run]] = {}  # token → (generation, run)
        self._live: dict[tuple[int, int], Run] = {}  # (generation, pid) → run
        self._workers: set[tuple[int, int]] = set()  # (generation, pid) of the warm workers we guard
        self._dead: set[int] = set()  # generations whose server died
        self.runtime_dir = Path(runtime_dir("balsam-pyapps-"))
        self._runtime_prefix = f"{self.runtime_dir}{os.sep}"  # result_path per job without pathlib
        stderr = (log_dir / "pyapps-forkserver.log") if log_dir is not None else None
        self._server = ForkServer(self._on_message, name="python app fork server", stderr=stderr, preforked=preforked)

    def warm_up(self) -> None:
        """Start the fork server now, so that the site's first Python job does not wait for it."""
        self._server.start()

    def result_path(self, job_name: str, attempt: int) -> str:
        return f"{self._runtime_prefix}{job_name}.{attempt}.json"

    def spawn(self, run: Run, spec: dict[str, Any]) -> None:
        """Fork the job's process; ``spawned``/``spawn_failed`` and later ``exit`` reach the
        loop through ``put``. Raises ForkServerError when the server cannot be reached."""
        token = next(self._tokens)
        with self._lock:
            self._pending[token] = (0, run)
        key = spec.pop("pool", None)
        run.worker = key is not None
        try:  # not under the lock: the reader needs it
            gen = self._server.submit(token, key, spec.pop("app"), spec) if key else self._server.spawn(token, spec)
        except ForkServerError:
            with self._lock:
                self._pending.pop(token, None)
            raise
        with self._lock:
            if token in self._pending:
                if gen in self._dead:  # the server died before answering
                    del self._pending[token]
                    raise ForkServerError("the python app fork server died")
                self._pending[token] = (gen, run)

    def _on_message(self, gen: int, msg: FromServer) -> None:
        with self._lock:
            match msg:
                case Started(token=token, pid=pid, forked=forked):
                    _, run = self._pending.pop(token, (0, None))
                    if run is not None:
                        if forked:  # a new process: guarded at once (a warm worker for its whole life)
                            self._guard(pid)
                            if run.worker:
                                self._workers.add((gen, pid))
                        self._live[(gen, pid)] = run
                        self._put(Spawned(run, ForkedProcess(pid)))
                case StartFailed(token=token, message=message):
                    _, run = self._pending.pop(token, (0, None))
                    if run is not None:
                        self._put(SpawnFailed(run, JobState.RUN_ERROR, f"could not start the process: {message}"))
                case Ended(pid=pid, code=code, died=died, outcome=outcome):
                    if self._live.pop((gen, pid), None) is not None:
                        self._put(Exited(pid, code, died, outcome))
                case WorkerGone(pid=pid):
                    if (gen, pid) in self._workers:
                        self._workers.discard((gen, pid))
                        self._unguard(pid)
                case ServerDied(reason=reason):
                    self._server_died(gen, reason)

    def _server_died(self, gen: int, reason: str) -> None:
        self._dead.add(gen)
        for g, pid in [w for w in self._workers if w[0] == gen]:
            self._workers.discard((g, pid))
            self._unguard(pid)
        for token, (g, run) in list(self._pending.items()):
            if g == gen:
                del self._pending[token]
                self._put(SpawnFailed(run, JobState.RUN_ERROR, f"could not start the process: {reason}"))
        for (g, pid), _run in list(self._live.items()):
            if g == gen:
                del self._live[(g, pid)]
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                log.warning("python app process %d lost: %s", pid, reason)
                self._put(Exited(pid, -int(signal.SIGKILL)))

    def close(self) -> None:
        self._server.close()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)


def read_result(path: str) -> dict[str, Any]:
    """The handoff file a Python app's process wrote (``{}`` when it wrote none), removed."""
    try:
        with open(path) as f:
            doc: dict[str, Any] = json.load(f)
    except (OSError, ValueError):
        return {}
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
    return doc
