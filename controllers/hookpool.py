"""Lifecycle hooks out of the reconciler's process: a pool of hook processes with a time limit.

:class:`ProcessHookRunner` is the :class:`~controllers.hooks.HookRunner` of a site. The hook
reconciler asks it for a hook's outcome; the first ask starts the hook and answers "not yet"
(None); when the hook's process ends, the runner keeps its outcome and wakes the reconciler,
whose next ask gets it. The reconciler never waits.

* Each hook runs in a fresh process forked from a warm fork server (:mod:`apis._forkserver`),
  in the job's workdir (created), with ``BALSAM_SITE_PATH``, ``BALSAM_STORE`` and
  ``BALSAM_JOB_ID`` set; its stdout and stderr are appended to ``job.hooks.out`` there.
* At most ``workers`` hooks run at once; the others queue, first come first served.
* A hook that runs past its limit (the App's ``python.hookTimeoutSeconds``, else ``timeout``)
  has its process group killed and its job FAILED ("did not finish within ..."). A hook that
  raises, or whose process dies, FAILS its job with the exception and the traceback's tail.
  Nothing a hook does can stop the reconciler or the manager.
* Outcomes are keyed by job uid, hook and the time the job entered its state, so a retry of
  the reconciler's write (a conflict) gets the same outcome instead of running the hook
  again; they are forgotten ``KEEP_DONE`` seconds after the hook ended.
* An App whose ``python.hooks`` lists the hooks it defines costs nothing for the others (the
  default step is taken at once); a manifest without that list runs the class for every hook.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import os
import shutil
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apis import App, Job, declares_hook
from apis._forkserver import (
    Ended,
    ForkServer,
    ForkServerError,
    FromServer,
    ServerDied,
    Started,
    StartFailed,
    runtime_dir,
)

from .hooks import HookName, HookOutcome

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 300.0
KEEP_DONE = 600.0
HOOK_OUTPUT = "job.hooks.out"

_Key = tuple[str, str, str, str, str]


@dataclass(eq=False)
class _Call:
    key: _Key
    job: str
    namespace: str
    hook: str
    timeout: float
    spec: dict[str, Any]
    token: int = 0
    gen: int = 0
    pid: int = 0
    deadline: float = 0.0
    timed_out: bool = False
    outcome: HookOutcome | None = None
    finished_at: float = 0.0
    stdout: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class ProcessHookRunner:
    """Runs hooks in a pool of processes (see the module docstring)."""

    def __init__(self, *, store_url: str, site_path: Path | None = None, workers: int | None = None,
                 timeout: float = DEFAULT_TIMEOUT, log_dir: Path | None = None, namespace: str | None = None) -> None:
        self.store_url = store_url
        self.site_path = site_path
        self.workers = max(1, workers or (os.cpu_count() or 2))
        self.timeout = timeout
        self._runtime_path: Path | None = None  # made on the first hook
        env = dict(os.environ)
        env["BALSAM_STORE"] = store_url
        if site_path is not None:
            env["BALSAM_SITE_PATH"] = str(site_path)
        if namespace is not None:  # a hook's Job.objects works where its manager does (-n included)
            env["BALSAM_NAMESPACE"] = namespace
        self._env = env
        stderr = (log_dir / "hooks-forkserver.log") if log_dir is not None else None
        self._server = ForkServer(self._on_message, name="hook fork server", env=env, stderr=stderr)
        self._lock = threading.Lock()
        self._waker: Callable[[str], None] | None = None
        self._calls: dict[_Key, _Call] = {}
        self._queue: deque[_Call] = deque()
        self._running = 0
        self._tokens = 0
        self._by_token: dict[int, _Call] = {}
        self._by_pid: dict[tuple[int, int], _Call] = {}
        self._dead: set[int] = set()  # fork server generations that died
        self._done: deque[_Call] = deque()
        self._timers: list[tuple[float, int, _Call]] = []
        self._timer_cv = threading.Condition(self._lock)
        self._closed = False
        self._timer_thread = threading.Thread(target=self._timer_loop, name="hook-timeouts", daemon=True)
        self._timer_thread.start()
        self.stats = {"started": 0, "finished": 0, "timed_out": 0, "failed": 0}

    # --- HookRunner ------------------------------------------------------------------------

    def has_hook(self, app: App | None, hook: HookName) -> bool:
        return declares_hook(app, hook)

    def set_waker(self, wake: Callable[[str], None]) -> None:
        self._waker = wake

    def outcome(self, job: Job, app: App, hook: HookName) -> HookOutcome | None:
        hist = job.status.history
        entered = hist[-1].time.isoformat() if hist else ""
        key: _Key = (job.namespace, job.name, job.metadata.uid or "", hook, entered)
        with self._lock:
            c = self._calls.get(key)
            if c is not None:
                if c.outcome is not None and c.outcome.transient:
                    del self._calls[key]  # the store was away: the next look runs the hook again
                return c.outcome
            self._prune()
            c = self._new_call(key, job, app, hook)
            self._calls[key] = c
            self._queue.append(c)
            started = self._pump()
        self._after_pump(started)
        return None

    @property
    def _runtime(self) -> Path:
        if self._runtime_path is None:
            self._runtime_path = Path(runtime_dir("balsam-hooks-"))
        return self._runtime_path

    # --- calls -----------------------------------------------------------------------------

    def _workdir(self, job: Job) -> Path:
        if self.site_path is not None:
            return self.site_path / "data" / job.spec.workdir
        return self._runtime / "workdirs" / job.namespace / job.name

    def _new_call(self, key: _Key, job: Job, app: App, hook: str) -> _Call:
        py = app.spec.python
        assert py is not None
        timeout = py.hook_timeout_seconds or self.timeout
        self._tokens += 1
        token = self._tokens
        cwd = self._workdir(job)
        env = dict(self._env)
        env["BALSAM_JOB_ID"] = job.name
        spec = {
            "task": "hook",
            "hook": hook,
            "app": py.model_dump(by_alias=True, exclude_none=True),
            "job": job.to_json(),
            "resource_version": job.metadata.resource_version,
            "cwd": str(cwd),
            "stdout": str(cwd / HOOK_OUTPUT),
            "append": True,
            "env": env,
            "result_path": str(self._runtime / f"{token}.json"),
            "apps_dir": str(self.site_path / "apps") if self.site_path is not None else None,
            "argv0": f"balsam-hook {hook} {job.name}",
        }
        return _Call(key=key, job=job.name, namespace=job.namespace, hook=hook, timeout=timeout, spec=spec,
                     token=token, stdout=spec["stdout"])

    def _pump(self) -> list[_Call]:
        """Calls to start now (under the lock; started by _after_pump outside it)."""
        out = []
        while self._queue and self._running < self.workers and not self._closed:
            c = self._queue.popleft()
            self._running += 1
            self._by_token[c.token] = c
            c.deadline = time.monotonic() + c.timeout
            heapq.heappush(self._timers, (c.deadline, c.token, c))
            out.append(c)
        if out:
            self._timer_cv.notify()
        return out

    def _after_pump(self, calls: list[_Call]) -> None:
        for c in calls:
            self.stats["started"] += 1
            try:
                gen = self._server.spawn(c.token, c.spec)
            except ForkServerError as e:
                with self._lock:
                    self._by_token.pop(c.token, None)
                self._finish(c, HookOutcome(error=f"could not start the hook process: {e}"))
                continue
            with self._lock:
                if c.gen == 0:
                    c.gen = gen
                lost = gen in self._dead and c.token in self._by_token
                if lost:
                    self._by_token.pop(c.token, None)
            if lost:
                self._finish(c, HookOutcome(error="the hook process was lost: its fork server died"))

    def _prune(self) -> None:
        limit = time.monotonic() - KEEP_DONE
        while self._done and self._done[0].finished_at < limit:
            c = self._done.popleft()
            if self._calls.get(c.key) is c:
                del self._calls[c.key]

    # --- the fork server's messages ---------------------------------------------------------

    def _on_message(self, gen: int, msg: FromServer) -> None:
        match msg:
            case Started(token=token, pid=pid):
                with self._lock:
                    c = self._by_token.pop(token, None)
                    if c is None:
                        return
                    c.gen, c.pid = gen, pid
                    self._by_pid[(gen, c.pid)] = c
                    late = c.timed_out
                if late:
                    self._kill(c)
            case StartFailed(token=token, message=message):
                with self._lock:
                    c = self._by_token.pop(token, None)
                if c is not None:
                    self._finish(c, HookOutcome(error=f"could not start the hook process: {message}"))
            case Ended(pid=pid, code=code):
                with self._lock:
                    c = self._by_pid.pop((gen, pid), None)
                if c is not None:
                    self._finish(c, self._read_outcome(c, code))
            case ServerDied(reason=reason):
                with self._lock:
                    self._dead.add(gen)
                    lost = [c for c in self._by_token.values() if c.gen == gen]
                    lost += [c for (g, _), c in self._by_pid.items() if g == gen]
                    for c in lost:
                        self._by_token.pop(c.token, None)
                        self._by_pid.pop((gen, c.pid), None)
                for c in lost:
                    self._finish(c, HookOutcome(error=f"the hook process was lost: {reason}"))

    def _read_outcome(self, c: _Call, code: int) -> HookOutcome:
        path = Path(c.spec["result_path"])
        if c.timed_out:
            with contextlib.suppress(OSError):
                path.unlink()
            self.stats["timed_out"] += 1
            return HookOutcome(error=f"did not finish within its time limit of {c.timeout:g}s; killed "
                                     f"(output in {c.stdout})")
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            why = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            return HookOutcome(error=f"the hook process {why} before reporting an outcome (output in {c.stdout})")
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
        if doc.get("error"):
            return HookOutcome(error=str(doc["error"]), transient=bool(doc.get("transient")))
        try:
            new_jobs = [Job.model_validate(d) for d in doc.get("newJobs") or []]
        except Exception as e:  # noqa: BLE001 - a job the hook built that does not validate
            return HookOutcome(error=f"the hook created an invalid job: {e}")
        return HookOutcome(state=doc.get("state"), data=doc.get("data"), fields=doc.get("fields") or None,
                           new_jobs=new_jobs)

    def _finish(self, c: _Call, outcome: HookOutcome) -> None:
        if outcome.error is not None:
            self.stats["failed"] += 1
            log.warning("hook %s of job %s failed: %s", c.hook, c.job, outcome.error.splitlines()[0])
        with self._lock:
            if c.outcome is not None:
                return
            c.outcome = outcome
            c.finished_at = time.monotonic()
            self._done.append(c)
            self._running -= 1
            self.stats["finished"] += 1
            started = self._pump()
        self._after_pump(started)
        wake = self._waker
        if wake is not None:
            wake(c.job)

    # --- time limits ---------------------------------------------------------------------------

    def _kill(self, c: _Call) -> None:
        if c.pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(c.pid, signal.SIGKILL)

    def _timer_loop(self) -> None:
        with self._lock:
            while not self._closed:
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    _, _, c = heapq.heappop(self._timers)
                    if c.outcome is None and not c.timed_out:
                        c.timed_out = True
                        log.warning("hook %s of job %s ran past %gs; killing it", c.hook, c.job, c.timeout)
                        self._kill(c)
                wait = (self._timers[0][0] - now) if self._timers else None
                self._timer_cv.wait(wait)

    # --- shutdown ------------------------------------------------------------------------------

    def close(self) -> None:
        """Kill running hooks and stop the fork server."""
        with self._lock:
            self._closed = True
            self._timer_cv.notify_all()
        self._server.close()
        self._timer_thread.join(timeout=2)
        if self._runtime_path is not None:
            shutil.rmtree(self._runtime_path, ignore_errors=True)
