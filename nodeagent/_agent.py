"""The node agent: registers a Node under a store lease, runs the jobs bound to it.

Protocol (docs/design.md, "Binding protocol"): the placement reconciler binds a job by
writing ``status.placement``; the agent of ``placement.nodes[0]`` launches it and moves it
``→ RUNNING`` (``attempts += 1``) and later ``→ RUN_DONE | RUN_ERROR | RUN_TIMEOUT``; the
agents of ``nodes[1:]`` only account its resources.

How it stays fast (no polling anywhere):

* **Events in.** One raw store watch on this node's ``boundnode`` index prefix
  (``/index/jobs/boundnode/<ns>/<node>/``): a PUT is a job bound here, a DELETE a job that
  stopped holding this node (finished, failed or re-queued by a user, unbound, deleted).
  The agent reads (``get_many``) only the jobs those events name. A second watch on the
  App prefix invalidates the agent's App cache. Children's exits come from a reaper thread
  blocked in epoll on pidfds (``_reaper.py``); wall-time kills from a timer heap.
* **One loop, batched writes out.** Everything runs on one loop thread fed by a queue.
  Each turn drains what arrived, launches what is bound, then writes every job transition
  that became ready in ONE ``Registry.update_many`` transaction (CAS on each job). Under
  load, work piles up while a turn runs, so batches grow by themselves; idle, a single
  exit is written at once. A job that starts and ends within one turn is written once
  (``→ RUNNING → RUN_DONE``; history keeps both steps).
* **Conflicts.** If the batch's CAS fails (someone else wrote one of the jobs), the agent
  re-reads those jobs and re-applies its steps to the ones that are still what it thinks;
  a job the user moved away (``FAILED``, ``RESTART_READY``, deleted, re-bound elsewhere)
  has its process group killed and its result dropped — never written over the user's.
* **Node status** (busyCpus, busyGpus, occupancy, runningJobs, heartbeat) is written at
  most every ``report_interval`` seconds while it changes, never once per job.

Failure choices (state table in ``apis/_states.py``):

* The command cannot be rendered (undeclared variable, missing or undeclared parameter),
  the App is missing or the launcher unknown: ``PREPROCESSED|RESTART_READY → FAILED`` with
  the reason as message. The job never ran, so it is not a RUN_ERROR (which means "the
  process exited non-zero" and goes through retries): retrying cannot fix a template.
* The process cannot be started (fork/exec error, workdir not creatable):
  ``→ RUNNING → RUN_ERROR`` with ``returnCode`` unset and the OS error as message; the
  retry policy decides (it is often a node problem).
* Killed by a signal: ``returnCode`` is the negative signal number (Python's convention).
* ``outputTail`` (the last 20 lines of ``job.out``) is recorded for RUN_ERROR and
  RUN_TIMEOUT; a successful run's output stays in its file.

Shutdown (``stop()``, SIGTERM/SIGINT in the CLI): running process groups get SIGTERM,
then SIGKILL after ``kill_grace`` seconds; their jobs become RUN_TIMEOUT ("node agent
stopped"); the lease is revoked, which deletes the Node. If the agent is killed outright,
its lease expires and the placement reconciler requeues its jobs.

Job processes never outlive the agent unsupervised (``_fence.py``, docs/design.md "One live
run of a job"): each job's process group is registered with the agent's guardian, a small
process of its own session that SIGKILLs them when the agent dies or when the agent's lease
is about to expire unrenewed (a SIGSTOPped agent) — before the placement reconciler can see
the node lost and re-run them. A run in a workdir that already has a ``job.out`` first kills
and awaits any process of the same job still alive on this host (an orphan whose guardian
died too). A job killed by the guardian while the agent lives is RUN_TIMEOUT. An agent given
a ``supervisor`` (the ``local`` runner of its allocation) stops when that process is gone.

An agent of an allocation (``batch_job``) also watches its BatchJob's key and shuts down
the same way when the BatchJob is finished (or submit_failed) or gone: its allocation is
over even if the scheduler did not kill it (a Slurm job that vanished, a ``local`` runner
killed outright), and an agent living on would register again each time the batch
reconciler deleted its Node.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import itertools
import logging
import os
import queue
import re
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import store as st
from apis import (
    RUNNABLE,
    AlreadyExists,
    App,
    BatchJob,
    Conflict,
    Job,
    JobState,
    Node,
    NodeSpec,
    NodeStatus,
    NotFound,
    ObjectMeta,
    Placement,
    Registry,
    Site,
    SiteConfig,
    StoreUnavailable,
    load_site_config,
    transition,
    utcnow,
)
from apis._registry import index_prefix, kind_prefix

from ._fence import Guardian, fence_earlier_runs, process_start_ticks
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
from ._pyapps import PythonApps, read_result
from ._reaper import Reaper

S = JobState
_T = TypeVar("_T")

#: Largest number of jobs read in one ``get_many`` / written in one transaction.
CHUNK = 2000
#: Results written within this long of the previous job write share its transaction (s).
BATCH_WINDOW = 0.002
#: A ``→ RUNNING`` with no result to ride along is written at most this late (s).
START_DELAY = 0.01
#: Node heartbeat is refreshed at least this often (seconds) even when nothing changes.
HEARTBEAT_INTERVAL = 30.0
#: BatchJob states in which its allocation is over: its agents stop.
ALLOCATION_OVER = ("finished", "submit_failed")


#: Errors of the machine, not of the job: a job that meets one is started again later instead
#: of being marked RUN_ERROR/FAILED (a full disk for a minute must not fail jobs).
_MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN})


def _machine_trouble(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in _MACHINE_ERRNOS


def default_node_name(hostname: str) -> str:
    """A DNS-1123 name from a hostname (``Login_01.Cluster`` → ``login-01.cluster``)."""
    name = re.sub(r"[^a-z0-9.-]+", "-", hostname.lower())
    name = re.sub(r"\.{2,}", ".", name).strip("-.")
    return name or "node"


# --- what the loop keeps per job ----------------------------------------------------


@dataclass(eq=False)
class _Step:
    to: JobState
    message: str
    return_code: int | None = None
    output_tail: str | None = None
    result: dict[str, Any] | None = None  # a Python app's handoff: result or exception


@dataclass(eq=False)
class _Run:
    """A job this agent launches (or failed to launch): its process and its unwritten steps."""

    name: str
    snapshot: Job  # the job as last read or written (its resourceVersion is the CAS base)
    placement: Placement
    proc: Any = None  # subprocess.Popen
    pid: int = 0
    workdir: Path | None = None
    started: bool = False  # our → RUNNING write is committed
    attempt: int = 0
    steps: list[_Step] = field(default_factory=list)
    exited: bool = False
    finished: bool = False  # the final step is queued (or written)
    cancelled: str = ""  # why we killed it for good (result will not be written)
    signalled: str = ""  # why we signalled it (timeout / stop): its end is RUN_TIMEOUT
    kill_sent: int = 0  # 0 none, 1 SIGTERM, 2 SIGKILL
    spawned_at: float = 0.0  # time.monotonic() when its process was known started
    result_path: str | None = None  # a Python app's handoff file

    @property
    def live(self) -> bool:
        return self.pid != 0 and not self.exited


def _same_binding(a: Placement | None, b: Placement | None) -> bool:
    return a is not None and b is not None and a.nodes == b.nodes and a.cpus == b.cpus and a.gpus == b.gpus


def _copy_job(job: Job) -> Job:
    """A copy whose status we may transition (history list copied, entries shared)."""
    n = job.model_copy()
    n.status = job.status.model_copy()
    n.status.history = list(job.status.history)
    return n


# --- the agent ----------------------------------------------------------------------


class NodeAgent:
    """Runs the jobs bound to one Node. ``run()`` blocks until ``stop()``; ``start()`` runs it
    in a thread. See the module docstring for the protocol."""

    def __init__(
        self,
        registry: Registry,
        name: str | None = None,
        cpus: int | None = None,
        gpus: int = 0,
        hostname: str | None = None,
        batch_job: str | None = None,
        site_config: SiteConfig | None = None,
        lease_ttl: float = 10.0,
        *,
        kill_grace: float = 5.0,
        report_interval: float = 0.5,
        register_timeout: float | None = None,
        launcher: str | None = None,
        spawn_workers: int = 4,
        log_to_file: bool = True,
        gpu_pinning: GpuPinning | None = None,
        supervisor: tuple[int, str] | None = None,
    ) -> None:
        self.registry = registry
        self.store: st.Store = registry.store
        self.site = site_config if site_config is not None else load_site_config()
        self.namespace = self.site.namespace
        self.hostname = hostname or socket.gethostname()
        self.name = name or default_node_name(self.hostname)
        self.cpus = cpus if cpus is not None else (os.cpu_count() or 1)
        self.gpus = gpus
        self.gpu_pinning = gpu_pinning or GpuPinning()  # how a job is pinned to its GPUs (per platform)
        self.batch_job = batch_job
        self.lease_ttl = float(lease_ttl)
        self.kill_grace = kill_grace
        self.report_interval = report_interval
        self.register_timeout = register_timeout if register_timeout is not None else 2 * self.lease_ttl + 2
        self._launcher_override = launcher
        # (pid, start ticks) of the process that supervises this agent (an allocation's
        # runner): when it is gone, nobody would stop us at the allocation's end, so we stop.
        self.supervisor = supervisor
        # The guardian kills our jobs this long before the lease could expire unrenewed.
        self.fence_margin = min(1.0, 0.1 * self.lease_ttl)
        self._guardian: Guardian | None = None
        self._lease_deadline = 0.0  # time.monotonic() until which our lease is surely valid
        self._fenced_at = 0.0  # when the guardian last killed our jobs (a late renewal)
        self.log = logging.getLogger(f"nodeagent.{self.name}")
        self._log_handler: logging.Handler | None = None
        if log_to_file:
            self._attach_log_file()

        self._q: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._lease = 0
        self._node: Node | None = None
        self._runs: dict[str, _Run] = {}
        self._by_pid: dict[int, _Run] = {}
        self._secondary: dict[str, Placement] = {}  # multi-node jobs whose other node we are
        self._launch_queue: deque[Job] = deque()
        self._spawn_q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._spawn_workers = max(1, spawn_workers)
        self._spawning = 0  # runs handed to the spawners whose outcome is not back yet
        self._queued: set[str] = set()
        self._recheck: set[str] = set()
        self._dirty: dict[str, _Run] = {}
        self._timers: list[tuple[float, int, int, int]] = []  # (when, seq, pid, signal)
        self._seq = itertools.count()
        self._apps: dict[str, App | None] = {}
        self._deferred: list[tuple[Any, ...]] = []  # items to handle again once the store answers
        self._usage_dirty = True
        self._last_report = 0.0
        self._stop_reason = ""
        self._stopping = False
        self._stop_deadline = 0.0
        self._retry_delay = 0.0
        self._starts_deferred: str | None = None  # why jobs cannot be started now (a full disk...)
        self._retry_at = 0.0
        self._urgent_since: float | None = None
        self._start_since: float | None = None
        self._last_job_write = 0.0
        self._watches: list[st.Watch] = []
        self._threads: list[threading.Thread] = []
        self._closed = threading.Event()  # tells the threads to end
        self._done = threading.Event()  # set when shutdown is complete
        self._thread: threading.Thread | None = None
        self._devnull = -1
        self._base_env = dict(os.environ)
        self._pyapps_lock = threading.Lock()
        self._pyapps: PythonApps | None = None  # the fork server of Python apps, made on first use
        self._reaper: Reaper | None = None
        self._bound_prefix = index_prefix(Job, "boundnode", self.namespace, self.name)
        self._app_prefix = kind_prefix(App, self.namespace)
        self._batch_job_key = f"{kind_prefix(BatchJob, self.namespace)}{batch_job}" if batch_job else ""
        self.error: BaseException | None = None
        # counters, for tests and logs
        self.stats = {"launched": 0, "finished": 0, "job_writes": 0, "job_txns": 0, "node_writes": 0,
                      "conflicts": 0, "reads": 0, "fenced": 0}

    # --- public surface ------------------------------------------------------------

    def start(self) -> NodeAgent:
        """Register and run the loop in a background thread; returns once registered."""
        self._register_or_close()
        self._thread = threading.Thread(target=self._run_loop_guarded, name=f"nodeagent-{self.name}", daemon=True)
        self._thread.start()
        return self

    def run(self) -> None:
        """Register and run in this thread until :meth:`stop` (or a signal handler calling it)."""
        self._register_or_close()
        self._run_loop_guarded()
        if self.error is not None:
            raise self.error

    def stop(self, reason: str = "stopped", wait: bool = True, timeout: float | None = None) -> None:
        """Kill running jobs (→ RUN_TIMEOUT), delete the Node, end the loop. Safe from a signal
        handler with ``wait=False``."""
        self._q.put(("stop", reason))
        if wait and self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """True once the agent has shut down (its Node deleted, its threads ended)."""
        return self._done.wait(timeout)

    @property
    def lease(self) -> int:
        return self._lease

    # --- logging ---------------------------------------------------------------------

    def _attach_log_file(self) -> None:
        logs = self.site.logs_path
        try:
            logs.mkdir(parents=True, exist_ok=True)
            h = logging.FileHandler(logs / f"nodeagent-{self.name}.log")
        except OSError as e:
            self.log.warning("cannot write the log file in %s: %s", logs, e)
            return
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.log.addHandler(h)
        if self.log.level == logging.NOTSET or self.log.level > logging.INFO:
            self.log.setLevel(logging.INFO)
        self._log_handler = h

    # --- registration and lease ------------------------------------------------------

    def _node_object(self) -> Node:
        return Node(
            metadata=ObjectMeta(name=self.name, namespace=self.namespace),
            spec=NodeSpec(batch_job=self.batch_job, hostname=self.hostname, cpus=self.cpus, gpus=self.gpus),
            status=NodeStatus(heartbeat=utcnow()),
        )

    def _register_or_close(self) -> None:
        try:
            self._register()
        except BaseException:
            self._close()
            raise

    def _register(self) -> None:
        """Create the Node under a fresh lease. If a Node of that name exists (a killed
        agent's, whose lease has not expired yet), wait up to ``register_timeout`` for it
        to vanish; a live agent keeps it, and we refuse to start."""
        self._guardian = Guardian(self.fence_margin)
        self._grant_lease()
        deadline = time.monotonic() + self.register_timeout
        node_key = f"{kind_prefix(Node, self.namespace)}{self.name}"
        while True:
            try:
                self._node = self.registry.create(self._node_object(), lease=self._lease)
                break
            except AlreadyExists:
                left = deadline - time.monotonic()
                if left <= 0:
                    with contextlib.suppress(Exception):
                        self.store.lease_revoke(self._lease)
                    self._lease = 0
                    raise AlreadyExists(Node.resource_name(), self.name) from None
                self.log.info("node %s is still registered (an earlier agent's lease); waiting up to %.0fs",
                              self.name, left)
                w = self.store.watch(node_key)
                try:
                    if self.store.get(node_key) is not None:
                        end = time.monotonic() + left
                        while time.monotonic() < end:
                            evs = w.poll(min(1.0, max(0.0, end - time.monotonic())))
                            if any(e.type == "DELETE" and e.kv.key == node_key for e in evs):
                                break
                finally:
                    w.close()
        self.log.info("registered node %s (host %s, %d cpus, %d gpus%s) under lease %d", self.name, self.hostname,
                      self.cpus, self.gpus, f", batch job {self.batch_job}" if self.batch_job else "", self._lease)
        self._devnull = os.open(os.devnull, os.O_RDONLY)
        self._reaper = Reaper(lambda pid, code: self._q.put(("exit", pid, code)))
        for i in range(self._spawn_workers):
            self._spawn_thread(self._spawner, f"spawner-{i}")
        self._open_watches()
        self._spawn_thread(self._keepalive_loop, "keepalive")
        self._q.put(("resync",))
        if self.batch_job:
            self._q.put(("batchjob",))

    def _reregister(self) -> None:
        """Our lease expired under us (the store was unreachable, the process was stopped):
        the Node vanished, so come back under a new lease. The placement reconciler may
        have re-queued our jobs meanwhile; CAS on every write sorts that out."""
        self.log.warning("lease %d lost; registering node %s again", self._lease, self.name)
        self._grant_lease()
        try:
            self._node = self.registry.create(self._node_object(), lease=self._lease)
        except AlreadyExists:
            cur = self.registry.get(Node, self.name, self.namespace)
            new = cur.model_copy(deep=True)
            new.spec = self._node_object().spec
            self._node = self.registry.update_many([(cur, new)], lease=self._lease)[0]
        self._usage_dirty = True
        self._q.put(("resync",))

    def _grant_lease(self) -> None:
        sent = time.monotonic()
        self._lease = self.store.lease_grant(self.lease_ttl)
        self._lease_valid_until(sent + self.lease_ttl)

    def _lease_valid_until(self, deadline: float) -> None:
        """Tell the guardian: the store cannot expire our lease before ``deadline`` (the
        request was sent after ``deadline - ttl``), so our jobs may live until then."""
        fence_at = self._lease_deadline - self.fence_margin
        if self._lease_deadline and time.monotonic() >= fence_at:
            self._fenced_at = fence_at  # renewed too late: the guardian killed our jobs then
        self._lease_deadline = deadline
        if self._guardian is not None:
            self._guardian.lease_until(deadline)

    def _supervision_lost(self) -> str:
        """Why this agent must stop on its own, or "": its runner or its guardian is gone."""
        if self.supervisor is not None and process_start_ticks(self.supervisor[0]) != self.supervisor[1]:
            return f"stopped: its allocation runner (pid {self.supervisor[0]}) is gone"
        if self._guardian is not None and not self._guardian.alive():
            return "stopped: its job guardian is gone (its jobs would outlive it unsupervised)"
        return ""

    def _keepalive_loop(self) -> None:
        interval = max(0.05, self.lease_ttl / 3)
        while not self._closed.wait(interval):
            lost = self._supervision_lost()
            if lost and not self._stopping:
                self._q.put(("stop", lost))
            lease = self._lease
            try:
                sent = time.monotonic()
                self.store.lease_keepalive(lease)
                if lease == self._lease:
                    self._lease_valid_until(sent + self.lease_ttl)
                interval = max(0.05, self.lease_ttl / 3)
            except st.LeaseNotFound:
                if not self._closed.is_set() and lease == self._lease:
                    self._q.put(("lease_lost", lease))
                interval = max(0.05, self.lease_ttl / 3)
            except Exception as e:  # noqa: BLE001 - store hiccup: try again soon
                if self._closed.is_set():
                    return
                self.log.warning("lease keepalive failed: %s", e)
                interval = max(0.05, self.lease_ttl / 10)

    # --- watches -----------------------------------------------------------------------

    def _spawn_thread(self, fn: Any, what: str, *args: Any) -> None:
        t = threading.Thread(target=fn, args=args, name=f"nodeagent-{self.name}-{what}", daemon=True)
        self._threads.append(t)
        t.start()

    def _open_watches(self) -> None:
        # Opened here, before the loop's first list ("resync"), so no event between the
        # list and the watch can be missed.
        watched = [(self._bound_prefix, "jobs"), (self._app_prefix, "apps")]
        if self._batch_job_key:
            watched.append((self._batch_job_key, "batchjob"))
        for prefix, what in watched:
            w = self.store.watch(prefix)
            self._watches.append(w)
            self._spawn_thread(self._watch_loop, f"watch-{what}", prefix, what, w)

    def _watch_loop(self, prefix: str, what: str, first: st.Watch) -> None:
        """Feed the loop with store events under ``prefix``; reopen (and relist) when the
        watch fails or reports compaction."""
        start: int | None = None
        w: st.Watch | None = first
        while not self._closed.is_set():
            if w is None:
                try:
                    w = self.store.watch(prefix, start)
                except Exception as e:  # noqa: BLE001
                    if self._closed.is_set():
                        return
                    self.log.warning("cannot watch %s: %s; retrying", prefix, e)
                    time.sleep(0.2)
                    start = None
                    continue
                self._watches.append(w)
                if start is None:  # events may have been missed: list again
                    self._q.put({"jobs": ("resync",), "apps": ("apps_reset",)}.get(what, ("batchjob",)))
            try:
                while not self._closed.is_set():
                    events = w.poll(None)
                    if not events:
                        continue
                    start = events[-1].revision + 1
                    if what == "jobs":
                        self._q.put(("jobs", [(e.type, e.kv.key[len(prefix):]) for e in events]))
                    elif what == "batchjob":  # the prefix is the key: skip longer names under it
                        if any(e.kv.key == prefix for e in events):
                            self._q.put(("batchjob",))
                    else:
                        self._q.put(("apps", [e.kv.key[len(prefix):] for e in events]))
            except st.WatchClosed:
                return
            except st.Compacted as e:
                self.log.warning("watch of %s lost events (%s); relisting", prefix, e)
                start = None  # reopened from now, then relisted
            except Exception as e:  # noqa: BLE001 - store trouble: reopen
                if self._closed.is_set():
                    return
                self.log.warning("watch of %s failed: %s; reopening", prefix, e)
                time.sleep(0.1)
            finally:
                with contextlib.suppress(Exception):
                    w.close()
                with contextlib.suppress(ValueError):
                    self._watches.remove(w)
                w = None

    # --- the loop ------------------------------------------------------------------------

    def _run_loop_guarded(self) -> None:
        try:
            self._loop()
        except BaseException as e:
            self.error = e
            self.log.exception("node agent %s crashed", self.name)
            self._emergency_cleanup()
        finally:
            self._close()

    def _loop(self) -> None:
        while True:
            items = self._drain(self._next_timeout())
            for item in items:
                self._handle(item)
            if self._recheck and time.monotonic() >= self._retry_at:
                self._do_recheck()
            self._fire_timers()
            if self._deferred and time.monotonic() >= self._retry_at:
                deferred, self._deferred = self._deferred, []
                for item in deferred:
                    self._handle(item)
            if self._launch_queue and not self._stopping:
                self._launch_some()
            self._flush()
            self._maybe_report()
            if self._stopping and self._shutdown_step():
                return

    def _next_timeout(self) -> float | None:
        now = time.monotonic()
        if self._launch_queue and not self._stopping and now >= self._retry_at:
            return 0.0
        t = max(0.0, self._last_report + HEARTBEAT_INTERVAL - now)
        if self._recheck or self._deferred or (self._launch_queue and not self._stopping):
            t = min(t, max(0.0, self._retry_at - now))
        due = self._flush_due()
        if due is not None:
            t = min(t, max(0.0, due - now))
        if self._timers:
            t = min(t, max(0.0, self._timers[0][0] - now))
        if self._usage_dirty:
            t = min(t, max(0.0, self._last_report + self.report_interval - now))
        if self._stopping:
            t = min(t, 0.05)
        return t

    def _mark_dirty(self, run: _Run, urgent: bool) -> None:
        """``run`` has steps to write. Results (urgent) are written within BATCH_WINDOW of the
        previous job write; a lone ``→ RUNNING`` waits up to START_DELAY, so a short job's
        start and end usually share one write."""
        self._dirty[run.name] = run
        now = time.monotonic()
        if urgent:
            if self._urgent_since is None:
                self._urgent_since = now
        elif self._start_since is None:
            self._start_since = now

    def _flush_due(self) -> float | None:
        """When the pending job writes should go out (monotonic time), None if there are none."""
        if not self._dirty:
            return None
        if self._stopping:
            return self._retry_at
        if self._urgent_since is not None:
            due = max(self._urgent_since, self._last_job_write + BATCH_WINDOW)
        else:
            due = (self._start_since or 0.0) + START_DELAY
        return max(due, self._retry_at)

    def _backoff(self) -> None:
        self._retry_delay = min(1.0, max(0.05, self._retry_delay * 2))
        self._retry_at = time.monotonic() + self._retry_delay

    def _drain(self, timeout: float | None) -> list[tuple[Any, ...]]:
        items: list[tuple[Any, ...]] = []
        try:
            items.append(self._q.get(timeout=timeout) if timeout is None or timeout > 0 else self._q.get_nowait())
        except queue.Empty:
            return items
        while True:
            try:
                items.append(self._q.get_nowait())
            except queue.Empty:
                return items

    def _handle(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "jobs":
            for typ, name in item[1]:
                # A PUT is a (re)binding; a DELETE matters only for a job we hold.
                if typ == "PUT" or name in self._runs or name in self._secondary or name in self._queued:
                    self._recheck.add(name)
        elif kind == "exit":
            self._on_exit(item[1], item[2])
        elif kind == "spawned":
            self._on_spawned(item[1], item[2])
        elif kind == "spawn_failed":
            self._on_spawn_failed(item[1], item[2], item[3])
        elif kind == "spawn_skipped":
            self._on_spawn_skipped(item[1])
        elif kind == "spawn_deferred":
            self._on_spawn_deferred(item[1], item[2])
        elif kind == "apps":
            for name in item[1]:
                self._apps.pop(name, None)
        elif kind == "apps_reset":
            self._apps.clear()
        elif kind == "resync":
            self._retrying(item, self._resync)
        elif kind == "batchjob":
            self._retrying(item, self._check_allocation)
        elif kind == "lease_lost":
            if item[1] == self._lease and not self._stopping:
                self._retrying(item, self._reregister)
        elif kind == "stop":
            self._begin_stop(str(item[1]))

    def _retrying(self, item: tuple[Any, ...], fn: Any) -> None:
        """Run ``fn``; if the store is unreachable, handle ``item`` again after a backoff."""
        try:
            fn()
        except (StoreUnavailable, st.Unavailable) as e:
            self.log.warning("%s failed: %s; will retry", item[0], e)
            self._deferred.append(item)
            self._backoff()

    # --- reading jobs ------------------------------------------------------------------

    def _resync(self) -> None:
        names = self.registry.index_names(Job, "boundnode", self.name, self.namespace)
        self._recheck.update(names)
        self._recheck.update(self._runs)
        self._recheck.update(self._secondary)
        self._recheck.update(self._queued)

    def _check_allocation(self) -> None:
        """Stop when our BatchJob is over or gone (read on each event of its key)."""
        if not self.batch_job or self._stopping:
            return
        bj = self.registry.try_get(BatchJob, self.batch_job, self.namespace)
        if bj is None:
            self._begin_stop(f"stopped: its BatchJob {self.batch_job} is gone")
        elif bj.status.state in ALLOCATION_OVER:
            self._begin_stop(f"stopped: its BatchJob {self.batch_job} is {bj.status.state}")

    def _read_jobs(self, names: list[str]) -> list[tuple[str, Job | None]]:
        out: list[tuple[str, Job | None]] = []
        for i in range(0, len(names), CHUNK):
            chunk = names[i : i + CHUNK]
            self.stats["reads"] += 1
            out.extend(zip(chunk, self.registry.get_many(Job, chunk, self.namespace), strict=True))
        return out

    def _do_recheck(self) -> None:
        names, self._recheck = list(self._recheck), set()
        try:
            jobs = self._read_jobs(names)
        except StoreUnavailable as e:
            self.log.warning("reading jobs failed: %s; retrying", e)
            self._recheck.update(names)
            self._backoff()
            return
        for name, job in jobs:
            self._observe(name, job)

    def _observe(self, name: str, job: Job | None) -> None:
        """Bring what we do for ``name`` in line with the job as just read."""
        run = self._runs.get(name)
        if run is not None:
            why = self._run_still_ours(run, job)
            if not why:
                assert job is not None
                if int(job.metadata.resource_version or 0) > int(run.snapshot.metadata.resource_version or 0):
                    run.snapshot = job
                return
            self._cancel(run, why)
        placement = job.status.placement if job is not None else None
        if job is None or placement is None or self.name not in placement.nodes:
            self._drop_secondary(name)
            self._unqueue(name)
            return
        state = job.status.state
        first = placement.nodes[0] == self.name
        if state in RUNNABLE:
            if first:
                if name not in self._queued and not self._stopping:
                    self._queued.add(name)
                    self._launch_queue.append(job)
                elif name in self._queued:
                    self._replace_queued(job)
            elif name not in self._secondary:
                self._secondary[name] = placement
                self._mark_usage()
        elif state is S.RUNNING:
            if first:
                # RUNNING here, but not by this agent: an earlier agent of this node died
                # with it. Nobody watches that process any more.
                self._orphan(job)
            elif name not in self._secondary:
                self._secondary[name] = placement
                self._mark_usage()
        else:
            self._drop_secondary(name)
            self._unqueue(name)

    def _drop_secondary(self, name: str) -> None:
        if self._secondary.pop(name, None) is not None:
            self._mark_usage()

    def _run_still_ours(self, run: _Run, job: Job | None) -> str:
        """'' when ``job`` is consistent with our run of it, else why it no longer is."""
        if job is None:
            return "the job was deleted"
        p = job.status.placement
        if not run.started:
            if job.status.state in RUNNABLE and _same_binding(p, run.placement):
                return ""
        elif (job.status.state is S.RUNNING and job.status.attempts == run.attempt and p is not None
              and p.nodes and p.nodes[0] == self.name):
            return ""
        st_msg = f": {job.status.message}" if job.status.message else ""
        return f"the job was moved to {job.status.state.value}{st_msg}"

    def _replace_queued(self, job: Job) -> None:
        for i, j in enumerate(self._launch_queue):
            if j.name == job.name:
                self._launch_queue[i] = job
                return

    def _unqueue(self, name: str) -> None:
        if name in self._queued:
            self._queued.discard(name)
            self._launch_queue = deque(j for j in self._launch_queue if j.name != name)

    def _orphan(self, job: Job) -> None:
        run = _Run(name=job.name, snapshot=job, placement=job.status.placement or Placement(),
                   started=True, attempt=job.status.attempts, exited=True, finished=True)
        run.steps.append(_Step(S.RUN_TIMEOUT, f"process lost: the node agent of {self.name} restarted"))
        self._runs[job.name] = run
        self._mark_dirty(run, urgent=True)

    # --- launching -----------------------------------------------------------------------

    def _launch_some(self) -> None:
        while self._launch_queue and time.monotonic() >= self._retry_at:
            job = self._launch_queue.popleft()
            self._queued.discard(job.name)
            self._launch(job)

    def _app(self, name: str) -> App | None:
        if name in self._apps:
            return self._apps[name]
        app = self.registry.try_get(App, name, self.namespace)
        self._apps[name] = app
        return app

    def _site_launcher(self) -> str:
        if self._launcher_override:
            return self._launcher_override
        site = self.registry.try_get(Site, self.site.name, self.namespace)
        return site.spec.launcher if site is not None else "mpirun"

    def _launch(self, job: Job) -> None:
        """Hand a bound job to the spawner threads (what needs the store is read here)."""
        placement = job.status.placement
        assert placement is not None
        run = _Run(name=job.name, snapshot=job, placement=placement)
        try:
            app = self._app(job.spec.app)
            multi = len(placement.nodes) > 1 or job.spec.resources.ranks_per_node > 1
            launcher = self._site_launcher() if multi else "none"
            hosts = self._hosts(placement.nodes) if multi else [self.hostname]
        except StoreUnavailable as e:
            self.log.warning("cannot read what job %s needs: %s; will retry", job.name, e)
            self._queued.add(job.name)
            self._launch_queue.append(job)
            self._backoff()
            return
        self._runs[job.name] = run
        if app is None:
            self._launch_failed(run, S.FAILED, f'cannot start: app "{job.spec.app}" not found')
            return
        self._spawning += 1
        self._spawn_q.put((run, job, app, launcher, hosts))

    def _spawner(self) -> None:
        """A spawner thread: render, create the workdir, fork/exec. Several run at once:
        ``fork_exec`` and ``mkdir`` release the GIL, so the children's start-up overlaps with
        the loop's reads and writes (one thread spawns ~550/s here, four ~1,700-2,300/s)."""
        while True:
            item = self._spawn_q.get()
            if item is None:
                return
            run, job, app, launcher, hosts = item
            if run.cancelled or self._stopping:
                self._q.put(("spawn_skipped", run))
                continue
            if is_python_app(app):
                self._spawn_python(run, job, app)
                continue
            prepared = self._prepared(
                run, prepare, job, app,
                data_path=self.site.data_path, site_path=self.site.path, base_env=self._base_env,
                launcher=launcher, hosts=hosts, gpus=run.placement.gpus, pinning=self.gpu_pinning,
            )  # fmt: skip
            if prepared is None:
                continue
            run.workdir = prepared.cwd
            if not self._fenced(run, job):
                continue
            try:
                proc = spawn(prepared, self._devnull)
            except Exception as e:  # noqa: BLE001 - OSError mostly: fork, exec, mkdir, open
                if _machine_trouble(e):
                    self._q.put(("spawn_deferred", run, f"could not start the process: {e}"))
                else:
                    self._q.put(("spawn_failed", run, S.RUN_ERROR, f"could not start the process: {e}"))
                continue
            if self._guardian is not None:
                self._guardian.add(proc.pid)  # at once: an agent killed now leaves no orphan
            # "spawned" is queued before the reaper can queue its "exit".
            self._q.put(("spawned", run, proc))
            assert self._reaper is not None
            self._reaper.add(proc.pid)

    def _fenced(self, run: _Run, job: Job) -> bool:
        """Before a run in a workdir that already has a ``job.out`` (an earlier run of the
        job, or of another job sharing the workdir), kill and await whatever of this job still
        runs on this host. False (and the job's spawn_failed is queued) if one survives."""
        assert run.workdir is not None
        if not (run.workdir / OUTPUT_FILE).exists():
            return True
        try:
            killed = fence_earlier_runs(job_key(job), self.site.path)
        except (TimeoutError, OSError) as e:
            self._q.put(("spawn_failed", run, S.RUN_ERROR, f"could not start the process: {e}"))
            return False
        if killed:
            self.stats["fenced"] += len(killed)
            self.log.warning("job %s: killed %d process(es) of an earlier run still alive on this host (pids %s) "
                             "before running it again", job.name, len(killed), " ".join(map(str, killed)))
        return True

    def _prepared(self, run: _Run, make: Callable[..., _T], *args: Any, **kw: Any) -> _T | None:
        """``make(*args, **kw)`` (``prepare`` or ``prepare_python``: the job made ready to
        start); when it raises, the job is queued as spawn_failed FAILED ("cannot start: ...")
        and None is returned."""
        try:
            return make(*args, **kw)
        except PrepareError as e:
            self._q.put(("spawn_failed", run, S.FAILED, f"cannot start: {e}"))
        except OSError as e:
            if _machine_trouble(e):  # the workdir cannot be made now: a full disk, no fds...
                self._q.put(("spawn_deferred", run, f"cannot make the workdir: {e}"))
            else:
                self._q.put(("spawn_failed", run, S.FAILED, f"cannot start: {type(e).__name__}: {e}"))
        except Exception as e:  # noqa: BLE001 - a bug here must not kill the thread
            self._q.put(("spawn_failed", run, S.FAILED, f"cannot start: {type(e).__name__}: {e}"))
        return None

    def _python_apps(self) -> PythonApps:
        with self._pyapps_lock:
            if self._pyapps is None:
                logs = self.site.logs_path
                self._pyapps = PythonApps(self._q.put, log_dir=logs if logs.is_dir() else None)
            return self._pyapps

    def _spawn_python(self, run: _Run, job: Job, app: App) -> None:
        """A Python app's job: forked from the fork server, which reports its ``spawned`` and
        ``exit`` (in that order) through the loop's queue, as the reaper does for commands."""
        pyapps = self._python_apps()
        result_path = pyapps.result_path(job.name, job.status.attempts + 1)
        spec = self._prepared(
            run, prepare_python, job, app,
            data_path=self.site.data_path, site_path=self.site.path, base_env=self._base_env,
            gpus=run.placement.gpus, result_path=result_path, store_url=self.store.url, pinning=self.gpu_pinning,
        )  # fmt: skip
        if spec is None:
            return
        run.workdir = Path(spec["cwd"])
        run.result_path = result_path
        if not self._fenced(run, job):
            return
        try:
            pyapps.spawn(run, spec)
        except Exception as e:  # noqa: BLE001 - the fork server cannot be started or reached
            self._q.put(("spawn_failed", run, S.RUN_ERROR, f"could not start the process: {e}"))

    def _on_spawned(self, run: _Run, proc: Any) -> None:
        self._spawning -= 1
        if self._starts_deferred is not None:
            self._starts_deferred = None
            self.log.warning("jobs start again")
        run.proc, run.pid = proc, proc.pid
        run.spawned_at = time.monotonic()
        self._by_pid[proc.pid] = run
        if self._guardian is not None and run.result_path:
            self._guardian.add(proc.pid)  # a Python app's process (forked by the fork server)
        self.stats["launched"] += 1
        self._mark_usage()
        if run.cancelled or self._runs.get(run.name) is not run:
            run.cancelled = run.cancelled or "no longer bound here"
            self._signal(run, signal.SIGTERM)
            return
        run.steps.append(_Step(S.RUNNING, f"started on {self.name}"))
        self._mark_dirty(run, urgent=False)
        if self._stopping:
            run.signalled = f"node agent {self.name} {self._stop_reason}; killed"
            self._signal(run, signal.SIGTERM)
            return
        wall = run.snapshot.spec.resources.wall_time_min
        if wall > 0:
            self._timer(time.monotonic() + wall * 60.0, proc.pid, signal.SIGTERM)

    def _on_spawn_failed(self, run: _Run, to: JobState, message: str) -> None:
        self._spawning -= 1
        if run.cancelled or self._runs.get(run.name) is not run:
            return
        self.log.warning("job %s: %s", run.name, message)
        self._launch_failed(run, to, message)

    def _on_spawn_deferred(self, run: _Run, message: str) -> None:
        """The machine, not the job, kept it from starting: launch it again after a backoff
        (one log line per episode; the job's state and attempts are untouched)."""
        self._spawning -= 1
        if run.cancelled or self._runs.get(run.name) is not run:
            return
        del self._runs[run.name]
        if self._starts_deferred is None:
            self.log.warning("cannot start jobs now (%s); retrying them until it works", message)
        self._starts_deferred = message
        if run.name not in self._queued:
            self._queued.add(run.name)
            self._launch_queue.append(run.snapshot)
        self._backoff()

    def _on_spawn_skipped(self, run: _Run) -> None:
        self._spawning -= 1
        if self._runs.get(run.name) is run:
            del self._runs[run.name]  # still bound; the placement reconciler unbinds it

    def _launch_failed(self, run: _Run, to: JobState, message: str) -> None:
        run.exited = run.finished = True
        if to is S.RUN_ERROR:  # it got as far as starting: RUNNING → RUN_ERROR
            run.steps.append(_Step(S.RUNNING, f"starting on {self.name}"))
        run.steps.append(_Step(to, message))
        self._mark_dirty(run, urgent=True)

    def _hosts(self, nodes: list[str]) -> list[str]:
        """Hostnames of the placement's nodes (their Node objects say; else the names)."""
        if nodes == [self.name]:
            return [self.hostname]
        found = self.registry.get_many(Node, nodes, self.namespace)
        return [n.spec.hostname if n is not None else name for name, n in zip(nodes, found, strict=True)]

    # --- exits, timers, kills ------------------------------------------------------------

    def _timer(self, when: float, pid: int, sig: int) -> None:
        heapq.heappush(self._timers, (when, next(self._seq), pid, sig))

    def _fire_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, pid, sig = heapq.heappop(self._timers)
            run = self._by_pid.get(pid)
            if run is None or not run.live:
                continue
            if sig == signal.SIGTERM and not run.signalled and not run.cancelled:
                wall = run.snapshot.spec.resources.wall_time_min
                run.signalled = f"exceeded its wall time of {wall:g} min; killed by the node agent"
                self.log.info("job %s %s", run.name, run.signalled)
            self._signal(run, sig)

    def _signal(self, run: _Run, sig: int) -> None:
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
            self._timer(time.monotonic() + self.kill_grace, run.pid, signal.SIGKILL)

    def _cancel(self, run: _Run, why: str) -> None:
        """The job is no longer ours to run: kill it (now, or when its spawn returns),
        forget its unwritten steps."""
        run.cancelled = run.cancelled or why
        if run.live:
            self.log.info("killing job %s: %s", run.name, why)
            self._signal(run, signal.SIGTERM)
        self._dirty.pop(run.name, None)
        run.steps.clear()
        self._runs.pop(run.name, None)
        if not run.live:
            self._by_pid.pop(run.pid, None)
        self._mark_usage()

    def _on_exit(self, pid: int, code: int) -> None:
        run = self._by_pid.pop(pid, None)
        if self._guardian is not None:
            self._guardian.remove(pid)  # reaped: its process group is gone
        if run is None:
            return
        run.exited = True
        if (code == -signal.SIGKILL and not run.signalled and not run.cancelled
                and (run.spawned_at <= self._fenced_at
                     or time.monotonic() >= self._lease_deadline - self.fence_margin)):
            run.signalled = (f"killed by the job guardian of {self.name}: the node's lease was about to expire "
                             "unrenewed (agent stopped or store unreachable)")
        if run.proc is not None:
            run.proc.returncode = code  # keep Popen's own bookkeeping from waiting on it again
        self._mark_usage()
        if run.cancelled or self._runs.get(run.name) is not run:
            return
        run.finished = True
        self.stats["finished"] += 1
        handoff = read_result(run.result_path) if run.result_path else None
        if run.signalled:
            tail = output_tail(run.workdir) if run.workdir else None
            run.steps.append(_Step(S.RUN_TIMEOUT, run.signalled, code, tail))
        elif code == 0:
            run.steps.append(_Step(S.RUN_DONE, "exited with code 0", 0))
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
            run.steps.append(_Step(S.RUN_ERROR, msg, code, tail))
        if handoff is not None:
            run.steps[-1].result = handoff
        self._mark_dirty(run, urgent=True)

    # --- writing -------------------------------------------------------------------------

    def _apply(self, run: _Run, base: Job) -> Job:
        new = _copy_job(base)
        now = utcnow()
        for step in run.steps:
            transition(new, step.to, step.message, now=now)
            if step.to is S.RUNNING:
                new.status.attempts += 1
                new.status.return_code = None
                new.status.output_tail = None
                new.status.result = new.status.exception = new.status.exception_data = None
            elif step.to in (S.RUN_DONE, S.RUN_ERROR, S.RUN_TIMEOUT):
                new.status.return_code = step.return_code
                new.status.output_tail = step.output_tail
                if step.result is not None:
                    new.status.result = step.result.get("result")
                    new.status.exception = step.result.get("exception")
                    new.status.exception_data = step.result.get("exceptionData")
        return new

    def _flush(self) -> None:
        """Write every ready step of every job: one transaction per CHUNK jobs."""
        due = self._flush_due()
        if due is None or due > time.monotonic():
            return
        runs = list(self._dirty.values())
        for i in range(0, len(runs), CHUNK):
            self._write_runs(runs[i : i + CHUNK])
        self._last_job_write = time.monotonic()
        if not self._dirty:
            self._urgent_since = self._start_since = None

    def _write_runs(self, runs: list[_Run]) -> None:
        for _attempt in range(5):
            runs = [r for r in runs if self._dirty.get(r.name) is r and r.steps]
            if not runs:
                return
            pairs = [(r.snapshot, self._apply(r, r.snapshot)) for r in runs]
            try:
                written = self.registry.update_many(pairs)
            except (Conflict, NotFound):
                self.stats["conflicts"] += 1
                try:
                    fresh = self._read_jobs([r.name for r in runs])
                except StoreUnavailable:
                    self._backoff()
                    return
                for name, job in fresh:
                    self._observe(name, job)
                continue
            except StoreUnavailable as e:
                self.log.warning("writing %d job(s) failed: %s; will retry", len(runs), e)
                self._backoff()
                return
            self._retry_delay = 0.0
            self.stats["job_txns"] += 1
            self.stats["job_writes"] += len(runs)
            for r, new in zip(runs, written, strict=True):
                r.snapshot = new
                if any(s.to is S.RUNNING for s in r.steps):
                    r.started = True
                    r.attempt = new.status.attempts
                r.steps.clear()
                del self._dirty[r.name]
                if r.finished:
                    self._runs.pop(r.name, None)
        self._backoff()  # still conflicting after retries: again a little later

    # --- node status -----------------------------------------------------------------------

    def _mark_usage(self) -> None:
        self._usage_dirty = True

    def usage(self) -> tuple[list[int], list[int], float, list[str]]:
        """(busy cpus, busy gpus, occupancy, job names) of what holds this node now."""
        cpus: set[int] = set()
        gpus: set[int] = set()
        occ = 0.0
        names: list[str] = []
        held: Iterable[tuple[str, Placement]] = itertools.chain(
            ((r.name, r.placement) for r in self._by_pid.values() if r.live),
            self._secondary.items(),
        )
        for name, p in held:
            cpus.update(p.cpus)
            gpus.update(p.gpus)
            occ += p.occupancy
            names.append(name)
        return sorted(cpus), sorted(gpus), round(occ, 6), sorted(names)

    def _maybe_report(self, force: bool = False) -> None:
        now = time.monotonic()
        due_usage = self._usage_dirty and now >= self._last_report + self.report_interval
        due_heartbeat = now >= self._last_report + HEARTBEAT_INTERVAL
        if not (force or due_usage or due_heartbeat) or self._node is None:
            return
        cpus, gpus, occ, names = self.usage()
        self._last_report = now
        self._usage_dirty = False
        for _ in range(3):
            node = self._node
            new = node.model_copy()
            new.status = NodeStatus(busy_cpus=cpus, busy_gpus=gpus, occupancy=occ, running_jobs=names,
                                    heartbeat=utcnow(), conditions=node.status.conditions)
            try:
                self._node = self.registry.update_many([(node, new)], lease=self._lease)[0]
                self.stats["node_writes"] += 1
                return
            except Conflict:
                fresh = self.registry.try_get(Node, self.name, self.namespace)
                if fresh is None:
                    break
                self._node = fresh
            except (NotFound, st.LeaseNotFound):
                break
            except StoreUnavailable as e:
                self.log.warning("node status write failed: %s", e)
                self._usage_dirty = True
                return
        if not self._stopping:
            self._q.put(("lease_lost", self._lease))

    # --- shutdown --------------------------------------------------------------------------

    def _begin_stop(self, reason: str) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._stop_reason = reason
        self._launch_queue.clear()
        self._queued.clear()
        live = [r for r in self._runs.values() if r.live]
        self.log.info("stopping (%s): killing %d running job(s)", reason, len(live))
        for r in live:
            if not r.signalled:
                r.signalled = f"node agent {self.name} {reason}; killed"
            self._signal(r, signal.SIGTERM)
        self._stop_deadline = time.monotonic() + self.kill_grace + 5.0

    def _shutdown_step(self) -> bool:
        """True when every child is reaped and every result written (or we give up)."""
        waiting = self._spawning > 0 or any(r.live for r in self._by_pid.values())
        if (waiting or self._dirty) and time.monotonic() < self._stop_deadline:
            return False
        if self._dirty:
            self.log.error("could not write %d job result(s) before shutting down", len(self._dirty))
        return True

    def _emergency_cleanup(self) -> None:
        for r in list(self._by_pid.values()):
            if r.live:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(r.pid, signal.SIGKILL)

    def _close(self) -> None:
        self._closed.set()
        if self._lease:
            try:
                self.store.lease_revoke(self._lease)  # deletes the Node and its index keys
            except st.LeaseNotFound:
                pass
            except Exception as e:  # noqa: BLE001
                self.log.warning("could not revoke lease %d: %s", self._lease, e)
        for w in list(self._watches):
            with contextlib.suppress(Exception):
                w.close()
        for _ in range(self._spawn_workers):
            self._spawn_q.put(None)
        if self._reaper is not None:
            self._reaper.close()
        if self._pyapps is not None:
            self._pyapps.close()
        if self._guardian is not None:
            self._guardian.close()  # kills what is left of our jobs, if anything
        if self._devnull >= 0:
            with contextlib.suppress(OSError):
                os.close(self._devnull)
            self._devnull = -1
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=2)
        self.log.info("node %s stopped (%d launched, %d finished, %d job writes in %d transactions, "
                      "%d conflicts, %d node writes)", self.name, self.stats["launched"], self.stats["finished"],
                      self.stats["job_writes"], self.stats["job_txns"], self.stats["conflicts"],
                      self.stats["node_writes"])
        if self._log_handler is not None:
            self.log.removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None
        self._done.set()


__all__ = ["NodeAgent", "default_node_name"]
