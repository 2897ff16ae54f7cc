"""The node agent: registers a Node under a store lease, runs the jobs bound to it.

Protocol (docs/design.md, "Binding protocol"): the placement reconciler binds a job by
writing ``status.placement``; the agent of ``placement.nodes[0]`` launches it and moves it
``→ RUNNING`` (``attempts += 1``) and later ``→ RUN_DONE | RUN_ERROR | RUN_TIMEOUT``; the
agents of ``nodes[1:]`` only account its resources.

The agent is five parts around one loop (docs/design.md, "Node agent"), one file each:

* the **lease keeper** (``_lease.py``): the lease, renewed on a thread, and the guardian
  that fences our jobs by it;
* the **job source** (``_source.py``): store watches of what is bound here; reads the jobs
  they name and decides what to launch, account, cancel;
* the **supervisor** (``_supervisor.py``): launching (spawner threads, the Python worker
  pool), reaping, wall-time timers, kills;
* the **status writer** (``_status.py``): every ready job transition in one CAS write;
* the **node reporter** (``_reporter.py``): the Node object and its coalesced status.

Threads never touch the loop's state: they post typed messages (``_messages.py``) on one
queue. Each turn drains the queue and dispatches with ``match``, reads the jobs named, fires
timers, launches what is bound, writes, reports — no polling anywhere.

Shutdown (``stop()``, SIGTERM/SIGINT in the CLI): running process groups get SIGTERM, then
SIGKILL after ``kill_grace`` seconds; their jobs become RUN_TIMEOUT ("node agent stopped");
the lease is revoked, which deletes the Node. If the agent is killed outright, its lease
expires and the placement reconciler requeues its jobs; the guardian (``_fence.py``) has
killed them before that can happen. An agent given a ``supervisor`` (the ``local`` runner of
its allocation) stops when that process is gone; an agent of an allocation (``batch_job``)
stops when its BatchJob is finished (or submit_failed) or gone.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import store as st
from apis import (
    NodeSpec,
    Placement,
    Registry,
    SiteConfig,
    StoreUnavailable,
    load_site_config,
    retry_while_store_unavailable,
)
from apis._forkserver import Preforked

from ._claims import Claimer
from ._launch import GpuPinning
from ._lease import LeaseKeeper
from ._messages import (
    AllocationChanged,
    AppsChanged,
    Exited,
    JobsChanged,
    JobsClaimable,
    LeaseLost,
    Message,
    Resync,
    SpawnDeferred,
    Spawned,
    SpawnFailed,
    SpawnSkipped,
    Stop,
    WindowChanged,
)
from ._reporter import HEARTBEAT_INTERVAL, NodeReporter, Usage
from ._source import ALLOCATION_OVER, CHUNK, JobSource
from ._status import BATCH_WINDOW, START_DELAY, StatusWriter
from ._supervisor import Supervisor

#: A message handled again once the store answers (it needs the store).
_Retryable = Resync | AllocationChanged | LeaseLost

#: Exit codes of a job killed by a signal an allocation's end sends to every process of the
#: step at once (Slurm's time limit: SIGTERM to the agent and its jobs alike).
_STOP_SIGNALS = frozenset({-signal.SIGTERM, -signal.SIGINT, -signal.SIGHUP})
#: How long such an exit waits for the agent's own stop signal before it counts as the job's
#: own failure: which of the two arrives first is a race.
HOLD_EXTERNAL_KILL_S = 1.0


def default_node_name(hostname: str) -> str:
    """A DNS-1123 name from a hostname (``Login_01.Cluster`` → ``login-01.cluster``)."""
    name = re.sub(r"[^a-z0-9.-]+", "-", hostname.lower())
    name = re.sub(r"\.{2,}", ".", name).strip("-.")
    return name or "node"


class NodeAgent:
    """Runs the jobs bound to one Node. ``run()`` blocks until ``stop()``; ``start()`` runs it
    in a thread. See the module docstring for the parts."""

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
        spawn_workers: int = 8,
        log_to_file: bool = True,
        gpu_pinning: GpuPinning | None = None,
        supervisor: tuple[int, str] | None = None,
        warm_python: bool | Preforked = False,
        acquire: bool | None = None,
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
        self.kill_grace = kill_grace
        self.log = logging.getLogger(f"nodeagent.{self.name}")
        self._log_handler: logging.Handler | None = None
        if log_to_file:
            self._attach_log_file()

        self._q: queue.SimpleQueue[Message] = queue.SimpleQueue()
        post = self._q.put
        ttl = float(lease_ttl)
        self.leases = LeaseKeeper(self.store, ttl, post, self.log, supervisor=supervisor,
                                  stopping=lambda: self._stopping)
        # Claims (``_claims.py``): on unless the agent or the Site's configuration turns them off.
        self.acquire = self.site.agents_acquire if acquire is None else acquire
        spec = NodeSpec(batch_job=batch_job, hostname=self.hostname, cpus=self.cpus, gpus=gpus, acquires=self.acquire)
        self.reporter = NodeReporter(registry, self.namespace, self.name, spec, self.leases, post, self.log,
                                     report_interval=report_interval,
                                     register_timeout=register_timeout if register_timeout is not None
                                     else 2 * ttl + 2)
        self.source = JobSource(registry, self.namespace, self.name, post, self.log, batch_job=batch_job)
        self.supervisor = Supervisor(registry, self.site, self.name, self.hostname, self.leases, post, self.log,
                                     kill_grace=kill_grace, launcher=launcher, spawn_workers=spawn_workers,
                                     gpu_pinning=self.gpu_pinning, base_env=os.environ, warm_python=warm_python)
        self.writer = StatusWriter(registry, self.log)
        self.claims = Claimer(registry, self.namespace, self.name, self.cpus, gpus, post, self.log,
                              enabled=self.acquire, batch_job=batch_job)
        self.claims.source, self.claims.supervisor, self.claims.writer = self.source, self.supervisor, self.writer
        self.claims.leases, self.claims.reporter, self.claims.usage_for_report = self.leases, self.reporter, self.usage
        self.source.claims = self.acquire
        self.source.claimable_arrived = self.claims.keys_arrived
        self.source.supervisor = self.writer.supervisor = self.supervisor
        self.writer.source = self.supervisor.source = self.source
        self.supervisor.writer = self.writer
        if self.claims.enabled:
            self.writer.follow = self.claims.follow
        self.source.mark_usage = self.supervisor.mark_usage = self._mark_usage

        self._deferred: list[_Retryable] = []  # handled again once the store answers
        self._stopping = False
        self._stop_requested = ""  # set by stop() at once (a signal handler): read before each message
        self._held: list[tuple[float, Exited]] = []  # job exits by a stop signal, waiting for ours
        self._stop_deadline = 0.0
        self._retry_delay = 0.0
        self._retry_at = 0.0
        self._threads: list[threading.Thread] = []
        self._closed = threading.Event()  # tells the threads to end
        self._done = threading.Event()  # set when shutdown is complete
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # --- public surface ------------------------------------------------------------

    def start(self) -> NodeAgent:
        """Register and run the loop in a background thread; returns once registered."""
        self._register_or_close()
        self._thread = threading.Thread(target=self._run_loop_guarded, name=f"nodeagent-{self.name}", daemon=True)
        self._thread.start()
        return self

    def run(self) -> None:
        """Register and run in this thread until :meth:`stop` (or a signal handler calling it)."""
        if not self._register_or_close():
            return  # stopped while waiting for the store
        self._run_loop_guarded()
        if self.error is not None:
            raise self.error

    def stop(self, reason: str = "stopped", wait: bool = True, timeout: float | None = None) -> None:
        """Kill running jobs (→ RUN_TIMEOUT), delete the Node, end the loop. Safe from a signal
        handler with ``wait=False``."""
        self._stop_requested = self._stop_requested or reason
        self._q.put(Stop(reason))
        if wait and self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """True once the agent has shut down (its Node deleted, its threads ended)."""
        return self._done.wait(timeout)

    @property
    def lease(self) -> int:
        return self.leases.lease

    @property
    def stats(self) -> dict[str, int]:
        """Counters, for tests and logs."""
        return {**self.supervisor.stats, **self.writer.stats, **self.claims.stats, "node_writes": self.reporter.writes,
                "reads": self.source.reads}

    def usage(self) -> Usage:
        """(busy cpus, busy gpus, occupancy, job names) of what holds this node now."""
        cpus: set[int] = set()
        gpus: set[int] = set()
        occ = 0.0
        names: list[str] = []
        held: Iterable[tuple[str, Placement]] = itertools.chain(self.supervisor.held(), self.source.secondary.items())
        for name, p in held:
            cpus.update(p.cpus)
            gpus.update(p.gpus)
            occ += p.occupancy
            names.append(name)
        return sorted(cpus), sorted(gpus), round(occ, 6), sorted(names)

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

    # --- registration ------------------------------------------------------------------

    def _register_or_close(self) -> bool:
        try:
            registered = self._register()
        except BaseException:
            self._close()
            raise
        if not registered:
            self._close()
        return registered

    def _register(self) -> bool:
        """Take a lease and write our Node, waiting while the store does not answer (an
        allocation may start us during a store outage); False if stopped meanwhile."""
        self.supervisor.warm_up()
        self.leases.open()
        if not self._until_store_answers(self._take_node):
            return False
        self.log.info("registered node %s (host %s, %d cpus, %d gpus%s) under lease %d", self.name, self.hostname,
                      self.cpus, self.gpus, f", batch job {self.batch_job}" if self.batch_job else "", self.lease)
        self.supervisor.open(self._spawn_thread)
        self.source.open_watches(self._spawn_thread, self._closed)
        self._spawn_thread(self.leases.keep_alive, "keepalive", self._closed)
        self._q.put(Resync())
        if self.batch_job:
            self._q.put(AllocationChanged())
        return True

    def _take_node(self) -> None:
        self.leases.grant()
        self.reporter.register()

    def _until_store_answers(self, fn: Callable[[], None]) -> bool:
        """``fn()``, tried again with backoff while the store is unreachable. False when a stop
        was asked for, or supervision was lost, meanwhile."""
        def take() -> bool:
            fn()
            return True

        done = retry_while_store_unavailable(
            take, say=self.log.warning, doing=f"; registering node {self.name}",
            give_up=lambda: self._not_registered_because(self._stop_requested or self.leases.supervision_lost()),
            unavailable=(StoreUnavailable, st.Unavailable))
        return bool(done)

    def _not_registered_because(self, why: str) -> str:
        return f"node {self.name} not registered: {why}" if why else ""

    def _reregister(self) -> None:
        """Our lease expired under us (the store was unreachable, the process was stopped):
        the Node vanished, so come back under a new lease. The placement reconciler may
        have re-queued our jobs meanwhile; CAS on every write sorts that out."""
        self.log.warning("lease %d lost; registering node %s again", self.lease, self.name)
        try:
            self.reporter.reregister()
        except st.LeaseNotFound:
            # The new lease ran out before the Node was written under it (the store stalled
            # longer than the TTL, e.g. a held SQLite lock): the same loss again, not a crash.
            self.log.warning("lease %d expired before node %s was registered under it; again", self.lease, self.name)
            self._deferred.append(LeaseLost(self.lease))
            self._backoff()
            return
        self._q.put(Resync())

    def _spawn_thread(self, fn: Callable[..., Any], what: str, *args: Any) -> None:
        t = threading.Thread(target=fn, args=args, name=f"nodeagent-{self.name}-{what}", daemon=True)
        self._threads.append(t)
        t.start()

    # --- the loop ------------------------------------------------------------------------

    def _run_loop_guarded(self) -> None:
        try:
            self._loop()
        except BaseException as e:
            self.error = e
            self.log.exception("node agent %s crashed", self.name)
            self.supervisor.kill_all()
        finally:
            self._close()

    def _loop(self) -> None:
        while True:
            for msg in self._drain(self._next_timeout()):
                if self._stop_requested and not self._stopping:
                    self._begin_stop(self._stop_requested)  # before any exit it explains
                self._handle(msg)
            if self._held:
                self._release_held()
            now = time.monotonic()
            if self.source.recheck and now >= self._retry_at and not self.source.do_recheck(stopping=self._stopping):
                self._backoff()
            self.supervisor.fire_timers()
            if self._deferred and time.monotonic() >= self._retry_at:
                deferred, self._deferred = self._deferred, []
                for msg in deferred:
                    self._handle(msg)
            if self.claims.enabled and time.monotonic() >= self._retry_at:
                self._retrying_claims()
            if self.source.launch_queue and not self._stopping:
                self._launch_some()
            self._flush()
            self.leases.flush_guard()
            if self._stopping or time.monotonic() >= self.reporter.due():
                # usage() walks every run here (~1 µs each): only when a report is due
                self.reporter.maybe_report(self.usage(), stopping=self._stopping)
            if self._stopping and self._shutdown_step():
                return

    def _release_held(self) -> None:
        """Classify held exits: all once we stop (each is then the stop's), else those whose
        wait for our own stop signal is over (each is then the job's own failure)."""
        now = time.monotonic()
        due = [m for at, m in self._held if self._stopping or at <= now]
        self._held = [(at, m) for at, m in self._held if not (self._stopping or at <= now)]
        for m in due:
            self.supervisor.on_exit(m.pid, m.code, m.died, m.outcome)

    def _next_timeout(self) -> float | None:
        now = time.monotonic()
        launching = bool(self.source.launch_queue) and not self._stopping
        if launching and now >= self._retry_at:
            return 0.0
        t = max(0.0, self.reporter.due() - now)
        if self.source.recheck or self._deferred or launching:
            t = min(t, max(0.0, self._retry_at - now))
        if self._claim_due():
            t = min(t, max(0.0, self._retry_at - now, self.claims.next_round() - now))
        due = self.writer.due(stopping=self._stopping, retry_at=self._retry_at, others_running=self._others())
        if due is not None:
            t = min(t, max(0.0, due - now))
        timer = self.supervisor.next_timer()
        if timer is not None:
            t = min(t, max(0.0, timer - now))
        if self._held:
            t = min(t, max(0.0, min(at for at, _ in self._held) - now))
        if self._stopping:
            t = min(t, 0.05)
        return t

    def _drain(self, timeout: float | None) -> list[Message]:
        items: list[Message] = []
        try:
            items.append(self._q.get(timeout=timeout) if timeout is None or timeout > 0 else self._q.get_nowait())
        except queue.Empty:
            return items
        while True:
            try:
                items.append(self._q.get_nowait())
            except queue.Empty:
                return items

    def _handle(self, msg: Message) -> None:
        sup = self.supervisor
        match msg:
            case JobsChanged():
                self.source.on_events(msg)
            case Exited(pid=pid, code=code, died=died, outcome=outcome):
                self.claims.wake = True  # its slot is free: look for a job to claim
                run = sup.by_pid.get(pid)
                if code in _STOP_SIGNALS and not self._stopping and run is not None and not run.signalled:
                    self._held.append((time.monotonic() + HOLD_EXTERNAL_KILL_S, msg))
                else:
                    sup.on_exit(pid, code, died, outcome)
            case Spawned(run=run, proc=proc):
                sup.on_spawned(run, proc)
            case SpawnFailed(run=run, to=to, message=message):
                sup.on_spawn_failed(run, to, message)
            case SpawnSkipped(run=run):
                sup.on_spawn_skipped(run)
            case SpawnDeferred(run=run, message=message):
                sup.on_spawn_deferred(run, message)
                self._backoff()
            case AppsChanged(names=names):
                for name in names:
                    sup.apps.pop(name, None)
            case Resync():
                self._retrying(msg, self.source.resync)
            case AllocationChanged():
                self._retrying(msg, self._check_allocation)
            case LeaseLost(lease=lease):
                if lease == self.lease and not self._stopping:
                    # An agent whose allocation's runner is gone stops; it must not come
                    # back under a new lease (its Node would outlive the allocation).
                    lost = self.leases.supervision_lost()
                    if lost:
                        self._begin_stop(lost)
                    else:
                        self._retrying(msg, self._reregister)
            case Stop(reason=reason):
                self._begin_stop(reason)
            case WindowChanged(window=window, revision=revision):
                self.claims.on_window(window, revision)
            case JobsClaimable():
                self.claims.woken()

    def _retrying(self, msg: _Retryable, fn: Callable[[], None]) -> None:
        """Run ``fn``; if the store is unreachable, handle ``msg`` again after a backoff."""
        try:
            fn()
        except (StoreUnavailable, st.Unavailable) as e:
            self.log.warning("%s failed: %s; will retry", type(msg).__name__, e)
            self._deferred.append(msg)
            self._backoff()

    def _backoff(self) -> None:
        self._retry_delay = min(1.0, max(0.05, self._retry_delay * 2))
        self._retry_at = time.monotonic() + self._retry_delay

    def _check_allocation(self) -> None:
        if self._stopping:
            return
        why = self.source.allocation_over()
        if why:
            self._begin_stop(why)

    def _claim_due(self) -> bool:
        """Whether the claimer has something to do this turn (claim, list, acknowledge)."""
        c = self.claims
        if not c.enabled:
            return False
        if c.window.open:
            return not self._stopping and (not c.synced or (c.wake and not self.source.recheck))
        return c.window.epoch > c.acked

    def _retrying_claims(self) -> None:
        try:
            self.claims.turn(stopping=self._stopping)
        except (StoreUnavailable, st.Unavailable) as e:
            self.log.warning("claiming failed: %s; will retry", e)
            self._backoff()
        if self.writer.rider is not None:
            self._flush()  # the claims, and every step ready to ride with them

    def _launch_some(self) -> None:
        while self.source.launch_queue and time.monotonic() >= self._retry_at:
            if not self.supervisor.launch(self.source.pop()):
                self._backoff()

    def _flush(self) -> None:
        txns = self.writer.stats["job_txns"]
        ok = self.writer.flush(stopping=self._stopping, retry_at=self._retry_at, others_running=self._others())
        if self.writer.stats["job_txns"] != txns:
            self._retry_delay = 0.0
        if not ok:
            self._backoff()

    def _others(self) -> bool:
        """Whether more results may come soon (jobs running, being started or queued here)."""
        return bool(self.supervisor.by_pid or self.supervisor.spawning or self.source.launch_queue)

    def _mark_usage(self) -> None:
        self.reporter.dirty = True

    # --- shutdown --------------------------------------------------------------------------

    def _begin_stop(self, reason: str) -> None:
        if self._stopping:
            return
        self._stopping = True
        self.source.clear_queue()
        self.supervisor.begin_stop(reason)
        self._stop_deadline = time.monotonic() + self.kill_grace + 5.0

    def _shutdown_step(self) -> bool:
        """True when every child is reaped and every result written (or we give up)."""
        if (self.supervisor.busy() or self.writer.dirty) and time.monotonic() < self._stop_deadline:
            return False
        if self.writer.dirty:
            self.log.error("could not write %d job result(s) before shutting down", len(self.writer.dirty))
        return True

    def _close(self) -> None:
        self._closed.set()
        self.leases.revoke()  # deletes the Node and its index keys
        self.source.close()
        self.supervisor.close()
        self.leases.close()  # the guardian kills what is left of our jobs, if anything
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=2)
        s = self.stats
        self.log.info("node %s stopped (%d launched, %d finished, %d job writes in %d transactions, "
                      "%d conflicts, %d node writes)", self.name, s["launched"], s["finished"],
                      s["job_writes"], s["job_txns"], s["conflicts"], s["node_writes"])
        if self._log_handler is not None:
            self.log.removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None
        self._done.set()


__all__ = ["ALLOCATION_OVER", "BATCH_WINDOW", "CHUNK", "HEARTBEAT_INTERVAL", "START_DELAY", "NodeAgent",
           "default_node_name"]
