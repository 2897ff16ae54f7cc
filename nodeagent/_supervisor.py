"""The supervisor: launching the jobs the source queued, reaping them, their timers, the
Python worker pool.

* **Launch.** The loop reads what a job needs from the store (its App, cached until the App
  watch says otherwise; the hosts of a multi-node placement) and hands it to spawner threads:
  render, create the workdir, fork/exec. Several run at once (``fork_exec`` and ``mkdir``
  release the GIL, so children's start-up overlaps with the loop's reads and writes; one
  thread spawns ~550/s here, four ~1,700-2,300/s; eight, the default, start a burst of freed
  slots sooner, so exits and writes batch better: issue 19, sixth round). A Python app's job
  goes to the Python worker pool instead (``_pyapps.py``: a warm interpreter, or a fresh fork).
* **Exits** come from the reaper (``_reaper.py``: epoll on pidfds) or from the Python pool,
  always after their :class:`Spawned`. **Wall time** is a timer heap: SIGTERM at the wall
  time, SIGKILL ``kill_grace`` later, to the job's process group.
* **Failure choices** (state table in ``apis/_states.py``): a command that cannot be rendered,
  a missing App or unknown launcher → ``FAILED`` (it never ran; retrying cannot fix a
  template); a process that cannot be started → ``RUNNING → RUN_ERROR`` without a return
  code (the retry policy decides: often a node problem); a machine error (full disk, no fds)
  → started again later, state untouched. Killed by a signal: ``returnCode`` is minus the
  signal. ``outputTail`` is recorded for RUN_ERROR and RUN_TIMEOUT.
* **Fencing.** Each job's process group is registered with the lease keeper's guardian the
  moment it exists; a run in a workdir that already has a ``job.out`` first kills and awaits
  any process of the same job still alive on this host (``_fence.py``).
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import itertools
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from apis import (
    App,
    Job,
    JobState,
    Node,
    Placement,
    Registry,
    Site,
    SiteConfig,
    StoreUnavailable,
    no_op_steps,
    step_work,
)
from apis._forkserver import Preforked

from ._fence import fence_earlier_runs
from ._launch import (
    OUTPUT_FILE,
    GpuPinning,
    PrepareError,
    is_python_app,
    job_key,
    output_tail,
    prepare,
    prepare_python,
    spawn,
)
from ._lease import LeaseKeeper
from ._messages import Exited, Post, SpawnDeferred, Spawned, SpawnFailed, SpawnSkipped
from ._pyapps import PythonApps, read_result
from ._reaper import Reaper
from ._run import Process, Run, Step

if TYPE_CHECKING:
    from ._source import JobSource
    from ._status import StatusWriter

S = JobState
_T = TypeVar("_T")

#: Errors of the machine, not of the job: a job that meets one is started again later instead
#: of being marked RUN_ERROR/FAILED (a full disk for a minute must not fail jobs).
_MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN})


def machine_trouble(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in _MACHINE_ERRNOS


@dataclass(frozen=True, slots=True)
class _Order:
    """What a spawner thread needs to start one run."""

    run: Run
    job: Job
    app: App
    launcher: str
    hosts: list[str]


class Supervisor:
    def __init__(self, registry: Registry, site: SiteConfig, node: str, hostname: str, lease: LeaseKeeper,
                 post: Post, log: logging.Logger, *, kill_grace: float, launcher: str | None,
                 spawn_workers: int, gpu_pinning: GpuPinning, base_env: Mapping[str, str],
                 warm_python: bool | Preforked = False) -> None:
        self.registry = registry
        self.site = site
        self.namespace = site.namespace
        self.node = node
        self.hostname = hostname
        self.lease = lease
        self.post = post
        self.log = log
        self.kill_grace = kill_grace
        self.gpu_pinning = gpu_pinning
        self.base_env = dict(base_env)
        self.source: JobSource  # set by the agent once all parts exist
        self.writer: StatusWriter
        self.mark_usage: Callable[[], None] = lambda: None
        self.stopping = False
        self.stop_reason = ""
        self.runs: dict[str, Run] = {}  # by job name: launched, or failed to launch, not yet written off
        self.by_pid: dict[int, Run] = {}  # runs whose process is (or was just) alive
        self.spawning = 0  # runs handed to the spawners whose outcome is not back yet
        # Runs we cancelled whose process may still start or live (handed to a spawner, or
        # signalled and not reaped): no new run of the job starts until theirs is gone. A
        # spawner thread still preparing the old run is invisible to the fence's /proc scan.
        self.draining: dict[str, Run] = {}
        self.starts_deferred: str | None = None  # why jobs cannot be started now (a full disk...)
        self._launcher_override = launcher
        self._spawn_q: queue.SimpleQueue[_Order | None] = queue.SimpleQueue()
        self.spawn_workers = max(1, spawn_workers)
        self._timers: list[tuple[float, int, Run, int]] = []  # (when, seq, run, signal)
        self._seq = itertools.count()
        self.apps: dict[str, App | None] = {}
        self._devnull = -1
        self._reaper: Reaper | None = None
        self._pyapps_lock = threading.Lock()
        self._pyapps: PythonApps | None = None  # the Python worker pool, made on first use
        self.stats = {"launched": 0, "finished": 0, "fenced": 0, "held_back": 0}
        # Start the Python fork server with the agent, not on the first job (a Preforked: that one).
        self.warm_python = warm_python

    def open(self, spawn_thread: Callable[..., None]) -> None:
        self._devnull = os.open(os.devnull, os.O_RDONLY)
        self._reaper = Reaper(lambda pid, code: self.post(Exited(pid, code)))
        for i in range(self.spawn_workers):
            spawn_thread(self._spawner, f"spawner-{i}")

    def warm_up(self) -> None:
        """Start the Python fork server now (if asked to): its imports (~0.35 s of CPU) then
        overlap with the agent's registration instead of delaying the site's first Python job."""
        if not self.warm_python:
            return
        try:
            self.python_apps().warm_up()
        except Exception as e:  # noqa: BLE001 - the first Python job will try (and report) again
            self.log.warning("cannot start the Python fork server: %s", e)

    # --- what holds the node --------------------------------------------------------------

    def held(self) -> Iterator[tuple[str, Placement]]:
        return ((r.name, r.placement) for r in self.by_pid.values() if r.live)

    def busy(self) -> bool:
        return self.spawning > 0 or any(r.live for r in self.by_pid.values())

    def forget(self, run: Run) -> None:
        """Its final step is written: the run is over for us."""
        self.runs.pop(run.name, None)

    # --- launching ----------------------------------------------------------------------

    def launch(self, job: Job) -> bool:
        """Hand a bound job to the spawner threads (what needs the store is read here);
        False if the store did not answer (the job is queued again)."""
        placement = job.status.placement
        assert placement is not None
        if job.name in self.draining:
            self.stats["held_back"] += 1
            return True  # observed again when the cancelled run is gone (_drained)
        run = Run(name=job.name, snapshot=job, placement=placement)
        try:
            app = self.app(job.spec.app)
            multi = len(placement.nodes) > 1 or job.spec.resources.ranks_per_node > 1
            launcher = self._site_launcher() if multi else "none"
            hosts = self._hosts(placement.nodes) if multi else [self.hostname]
        except StoreUnavailable as e:
            self.log.warning("cannot read what job %s needs: %s; will retry", job.name, e)
            self.source.enqueue(job)
            return False
        self.runs[job.name] = run
        if app is None:
            self.launch_failed(run, S.FAILED, f'cannot start: app "{job.spec.app}" not found')
            return True
        self.spawning += 1
        self._spawn_q.put(_Order(run, job, app, launcher, hosts))
        return True

    def app(self, name: str) -> App | None:
        if name in self.apps:
            return self.apps[name]
        app = self.registry.try_get(App, name, self.namespace)
        self.apps[name] = app
        return app

    def _site_launcher(self) -> str:
        if self._launcher_override:
            return self._launcher_override
        site = self.registry.try_get(Site, self.site.name, self.namespace)
        return site.spec.launcher if site is not None else "mpirun"

    def _hosts(self, nodes: list[str]) -> list[str]:
        """Hostnames of the placement's nodes (their Node objects say; else the names)."""
        if nodes == [self.node]:
            return [self.hostname]
        found = self.registry.get_many(Node, nodes, self.namespace)
        return [n.spec.hostname if n is not None else name for name, n in zip(nodes, found, strict=True)]

    # --- spawner threads ------------------------------------------------------------------

    def _spawner(self) -> None:
        while True:
            order = self._spawn_q.get()
            if order is None:
                return
            run, job, app = order.run, order.job, order.app
            if run.cancelled or self.stopping:
                self.post(SpawnSkipped(run))
                continue
            if is_python_app(app):
                self._spawn_python(run, job, app)
                continue
            prepared = self._prepared(
                run, prepare, job, app,
                data_path=self.site.data_path, site_path=self.site.path, base_env=self.base_env,
                launcher=order.launcher, hosts=order.hosts, gpus=run.placement.gpus, pinning=self.gpu_pinning,
                open_dir=True,  # the workdir walked once: the spawn starts the job in the directory checked
            )  # fmt: skip
            if prepared is None:
                continue
            run.workdir = prepared.cwd
            if not self._fenced(run, job):
                prepared.close()
                continue
            try:
                proc = spawn(prepared, self._devnull)
            except Exception as e:  # noqa: BLE001 - OSError mostly: fork, exec, mkdir, open
                if machine_trouble(e):
                    self.post(SpawnDeferred(run, f"could not start the process: {e}"))
                else:
                    self.post(SpawnFailed(run, S.RUN_ERROR, f"could not start the process: {e}"))
                continue
            self.lease.guard(proc.pid)  # at once: an agent killed now leaves no orphan
            self.post(Spawned(run, proc))  # queued before the reaper can queue its Exited
            assert self._reaper is not None
            self._reaper.add(proc.pid)

    def _fenced(self, run: Run, job: Job) -> bool:
        """Before a run in a workdir that already has a ``job.out`` (an earlier run of the
        job, or of another job sharing the workdir), kill and await whatever of this job still
        runs on this host. False (and the job's SpawnFailed is posted) if one survives."""
        assert run.workdir is not None
        if not (run.workdir / OUTPUT_FILE).exists():
            return True
        try:
            killed = fence_earlier_runs(job_key(job), self.site.path)
        except (TimeoutError, OSError) as e:
            self.post(SpawnFailed(run, S.RUN_ERROR, f"could not start the process: {e}"))
            return False
        if killed:
            self.stats["fenced"] += len(killed)
            self.log.warning("job %s: killed %d process(es) of an earlier run still alive on this host (pids %s) "
                             "before running it again", job.name, len(killed), " ".join(map(str, killed)))
        return True

    def _prepared(self, run: Run, make: Callable[..., _T], *args: Any, **kw: Any) -> _T | None:
        """``make(*args, **kw)`` (``prepare`` or ``prepare_python``: the job made ready to
        start); when it raises, SpawnFailed FAILED ("cannot start: ...") is posted and None
        returned."""
        try:
            return make(*args, **kw)
        except PrepareError as e:
            self.post(SpawnFailed(run, S.FAILED, f"cannot start: {e}"))
        except OSError as e:
            if machine_trouble(e):  # the workdir cannot be made now: a full disk, no fds...
                self.post(SpawnDeferred(run, f"cannot make the workdir: {e}"))
            else:
                self.post(SpawnFailed(run, S.FAILED, f"cannot start: {type(e).__name__}: {e}"))
        except Exception as e:  # noqa: BLE001 - a bug here must not kill the thread
            self.post(SpawnFailed(run, S.FAILED, f"cannot start: {type(e).__name__}: {e}"))
        return None

    def python_apps(self) -> PythonApps:
        with self._pyapps_lock:
            if self._pyapps is None:
                logs = self.site.logs_path
                pre = self.warm_python if isinstance(self.warm_python, Preforked) else None
                self._pyapps = PythonApps(self.post, log_dir=logs if logs.is_dir() else None, preforked=pre,
                                          guard=self.lease.guard, unguard=self.lease.unguard)
            return self._pyapps

    def _spawn_python(self, run: Run, job: Job, app: App) -> None:
        """A Python app's job: run by the Python worker pool, which posts its Spawned and
        Exited (in that order), as the reaper does for commands."""
        pyapps = self.python_apps()
        result_path = pyapps.result_path(job.name, job.status.attempts + 1)
        spec = self._prepared(
            run, prepare_python, job, app,
            data_path=self.site.data_path, site_path=self.site.path, base_env=self.base_env,
            gpus=run.placement.gpus, result_path=result_path, store_url=self.registry.store.url,
            pinning=self.gpu_pinning,
        )  # fmt: skip
        if spec is None:
            return
        run.workdir = Path(spec["cwd"])
        run.result_path = result_path
        if not self._fenced(run, job):
            return
        try:
            pyapps.spawn(run, spec)
        except Exception as e:  # noqa: BLE001 - the pool cannot be started or reached
            self.post(SpawnFailed(run, S.RUN_ERROR, f"could not start the process: {e}"))

    # --- spawn outcomes (on the loop) ----------------------------------------------------

    def on_spawned(self, run: Run, proc: Process) -> None:
        self.spawning -= 1
        if self.starts_deferred is not None:
            self.starts_deferred = None
            self.log.warning("jobs start again")
        run.proc, run.pid = proc, proc.pid
        run.spawned_at = time.monotonic()
        self.by_pid[proc.pid] = run
        self.stats["launched"] += 1
        self.mark_usage()
        if run.cancelled or self.runs.get(run.name) is not run:
            run.cancelled = run.cancelled or "no longer bound here"
            self.signal(run, signal.SIGTERM)
            return
        run.steps.append(Step(S.RUNNING, f"started on {self.node}"))
        self.writer.mark(run, urgent=False)
        if self.stopping:
            run.signalled = f"node agent {self.node} {self.stop_reason}; killed"
            self.signal(run, signal.SIGTERM)
            return
        wall = run.snapshot.spec.resources.wall_time_min
        if wall > 0:
            self._timer(time.monotonic() + wall * 60.0, run, signal.SIGTERM)

    def _drained(self, run: Run) -> None:
        """``run``'s process is gone (or never started): if it was cancelled, its job may run
        again here, so it is looked at again."""
        if self.draining.get(run.name) is run:
            del self.draining[run.name]
            self.source.recheck.add(run.name)

    def on_spawn_failed(self, run: Run, to: JobState, message: str) -> None:
        self.spawning -= 1
        self._drained(run)
        if run.cancelled or self.runs.get(run.name) is not run:
            return
        self.log.warning("job %s: %s", run.name, message)
        self.launch_failed(run, to, message)

    def on_spawn_deferred(self, run: Run, message: str) -> None:
        """The machine, not the job, kept it from starting: launch it again after a backoff
        (one log line per episode; the job's state and attempts are untouched)."""
        self.spawning -= 1
        self._drained(run)
        if run.cancelled or self.runs.get(run.name) is not run:
            return
        del self.runs[run.name]
        if self.starts_deferred is None:
            self.log.warning("cannot start jobs now (%s); retrying them until it works", message)
        self.starts_deferred = message
        if run.name not in self.source.queued:
            self.source.enqueue(run.snapshot)

    def on_spawn_skipped(self, run: Run) -> None:
        self.spawning -= 1
        self._drained(run)
        if self.runs.get(run.name) is run:
            del self.runs[run.name]  # still bound; the placement reconciler unbinds it

    def launch_failed(self, run: Run, to: JobState, message: str) -> None:
        run.exited = run.finished = True
        if to is S.RUN_ERROR:  # it got as far as starting: RUNNING → RUN_ERROR
            run.steps.append(Step(S.RUNNING, f"starting on {self.node}"))
        run.steps.append(Step(to, message))
        self.writer.mark(run, urgent=True)

    def orphan(self, job: Job) -> None:
        """RUNNING here but not by us: an earlier agent of this node died with it."""
        run = Run(name=job.name, snapshot=job, placement=job.status.placement or Placement(),
                  started=True, attempt=job.status.attempts, exited=True, finished=True)
        run.steps.append(Step(S.RUN_TIMEOUT, f"process lost: the node agent of {self.node} restarted"))
        self.runs[job.name] = run
        self.writer.mark(run, urgent=True)

    # --- timers, kills --------------------------------------------------------------------

    def _timer(self, when: float, run: Run, sig: int) -> None:
        heapq.heappush(self._timers, (when, next(self._seq), run, sig))

    def next_timer(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def fire_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, run, sig = heapq.heappop(self._timers)
            # By run, not pid: a warm Python worker's pid runs the next job after this one.
            if not run.live or self.by_pid.get(run.pid) is not run:
                continue
            if sig == signal.SIGTERM and not run.signalled and not run.cancelled:
                wall = run.snapshot.spec.resources.wall_time_min
                run.signalled = f"exceeded its wall time of {wall:g} min; killed by the node agent"
                self.log.info("job %s %s", run.name, run.signalled)
            self.signal(run, sig)

    def signal(self, run: Run, sig: int) -> None:
        """Signal the run's process group; SIGTERM schedules SIGKILL after ``kill_grace``."""
        if not run.live:
            return
        level = 2 if sig == signal.SIGKILL else 1
        if run.kill_sent >= level:
            return
        run.kill_sent = level
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(run.pid, sig)
        if sig == signal.SIGTERM:
            self._timer(time.monotonic() + self.kill_grace, run, signal.SIGKILL)

    def cancel(self, run: Run, why: str) -> None:
        """The job is no longer ours to run: kill it (now, or when its spawn returns),
        forget its unwritten steps."""
        run.cancelled = run.cancelled or why
        if not run.exited:
            self.draining[run.name] = run
        if run.live:
            self.log.info("killing job %s: %s", run.name, why)
            self.signal(run, signal.SIGTERM)
        self.writer.forget(run)
        self.runs.pop(run.name, None)
        if not run.live and self.by_pid.get(run.pid) is run:
            del self.by_pid[run.pid]
        self.mark_usage()

    # --- exits --------------------------------------------------------------------------

    def on_exit(self, pid: int, code: int, died: str = "", outcome: dict[str, Any] | None = None) -> None:
        run = self.by_pid.pop(pid, None)
        if run is None or not run.worker:  # a warm worker lives on: the Python pool unguards it at its end
            self.lease.unguard(pid)  # reaped: nothing of it to fence
        if run is None:
            return
        run.exited = True
        self._drained(run)
        if (code == -signal.SIGKILL and not run.signalled and not run.cancelled
                and self.lease.killed_by_guardian(run.spawned_at)):
            run.signalled = (f"killed by the job guardian of {self.node}: the node's lease was about to expire "
                             "unrenewed (agent stopped or store unreachable)")
        if run.proc is not None:
            run.proc.returncode = code  # keep Popen's own bookkeeping from waiting on it again
        self.mark_usage()
        if run.cancelled or self.runs.get(run.name) is not run:
            return
        run.finished = True
        self.stats["finished"] += 1
        handoff = outcome if outcome is not None else read_result(run.result_path) if run.result_path else None
        if run.signalled:
            tail = output_tail(run.workdir) if run.workdir else None
            run.steps.append(Step(S.RUN_TIMEOUT, run.signalled, code, tail))
        elif code == 0:
            run.steps.append(Step(S.RUN_DONE, "exited with code 0", 0))
        else:
            tail = output_tail(run.workdir) if run.workdir else None
            if code < 0:
                try:
                    sig = signal.Signals(-code).name
                except ValueError:
                    sig = f"signal {-code}"
                msg = f"killed by {sig}"
            else:
                msg = f"exited with code {code}"
            if died:
                msg = f"{msg}: {died}"
            run.steps.append(Step(S.RUN_ERROR, msg, code, tail))
        if handoff is not None:
            run.steps[-1].result = handoff
        if run.steps[-1].to is S.RUN_DONE:
            self._finish_here(run)
        self.writer.mark(run, urgent=True)

    def _finish_here(self, run: Run) -> None:
        """After ``RUN_DONE``: the no-op steps of the state table (no postprocess hook, nothing
        to stage out: ``→ POSTPROCESSED → STAGED_OUT → JOB_FINISHED``) ride in the same write as
        the exit, each in the history; a job with a hook or stage-out stops at ``RUN_DONE`` for
        the controller manager. The App is the one cached at launch (read again if its watch
        dropped it since); if it is gone or the store does not answer, the job stops at
        ``RUN_DONE`` and the controller manager takes the steps."""
        job = run.snapshot
        try:
            app = self.app(job.spec.app)
        except StoreUnavailable:
            return
        if app is None:
            return
        for state, msg in no_op_steps(S.RUN_DONE, lambda work: step_work(job, app, work)):
            run.steps.append(Step(state, msg))

    # --- shutdown -------------------------------------------------------------------------

    def begin_stop(self, reason: str) -> None:
        self.stopping = True
        self.stop_reason = reason
        live = [r for r in self.runs.values() if r.live]
        self.log.info("stopping (%s): killing %d running job(s)", reason, len(live))
        for r in live:
            if not r.signalled:
                r.signalled = f"node agent {self.node} {reason}; killed"
            self.signal(r, signal.SIGTERM)

    def kill_all(self) -> None:
        for r in list(self.by_pid.values()):
            if r.live:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(r.pid, signal.SIGKILL)

    def close(self) -> None:
        for _ in range(self.spawn_workers):
            self._spawn_q.put(None)
        if self._reaper is not None:
            self._reaper.close()
        if self._pyapps is not None:
            self._pyapps.close()
        if self._devnull >= 0:
            with contextlib.suppress(OSError):
                os.close(self._devnull)
            self._devnull = -1
