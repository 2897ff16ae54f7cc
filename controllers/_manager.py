"""The controller manager: shared informers, one controller per reconciler, leader election.

``ControllerManager.run(stop)`` waits for leadership, starts the informers (jobs, apps,
nodes, batch jobs, sites), syncs them, registers each reconciler's handlers and runs the
controllers until ``stop`` is set or the leader lease is lost.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from apis import App, BatchJob, Node, Registry, Site, TransferTask
from store.process import freeze_long_lived

from ._controller import Controller, Request
from ._informer import Informer
from ._jobcache import JobInformer
from ._leader import STORE_TROUBLE, LeaderElector
from .hooks import HookRunner, NoHooks
from .transfer import task_indexers

log = logging.getLogger(__name__)


def job_indexers() -> dict[str, Any]:
    return {
        "state": lambda j: (j.status.state.value,),
        "children": lambda j: tuple(j.spec.parents),
        "node": lambda j: tuple(j.status.placement.nodes) if j.status.placement else (),
    }


def default_reconcilers(hooks: HookRunner) -> list[Any]:
    from .batch.elastic import ElasticQueueReconciler
    from .batch.reconciler import BatchJobReconciler
    from .dependency import DependencyReconciler
    from .hook import HookReconciler
    from .placement.reconciler import PlacementReconciler
    from .transfer import transfer_reconcilers

    # Placement releases the jobs whose steps up to PREPROCESSED are all no-ops, in the write
    # that binds them; the dependency reconciler leaves those to it (issue 19: one writer each).
    return [DependencyReconciler(hooks, placement_binds_ready=True), HookReconciler(hooks),
            PlacementReconciler(hooks), *transfer_reconcilers(hooks),
            BatchJobReconciler(), ElasticQueueReconciler()]


class ControllerManager:
    def __init__(
        self,
        registry: Registry,
        namespace: str = "default",
        identity: str | None = None,
        lease_ttl: float = 15.0,
        hooks: HookRunner | None = None,
        reconcilers: list[Any] | None = None,
        freeze_gc: bool = False,
    ) -> None:
        self.registry = registry
        self.namespace = namespace
        self.identity = identity or f"{socket.gethostname()}-{os.getpid()}"
        self.hooks = hooks or NoHooks()
        self.elector = LeaderElector(registry.store, namespace, self.identity, lease_ttl)
        self._reconcilers = reconcilers
        self.freeze_gc = freeze_gc
        self.informers: dict[str, Informer[Any]] = {}
        self.controllers: list[Controller] = []
        self.leading = threading.Event()
        self.terms = 0  # how many times this manager became leader
        self._lost = threading.Event()

    def _build(self) -> None:
        reg, ns = self.registry, self.namespace
        self.informers = {
            "Job": JobInformer(reg, ns, job_indexers()),
            "App": Informer(reg, App, ns),
            "Node": Informer(reg, Node, ns),
            "BatchJob": Informer(reg, BatchJob, ns),
            "Site": Informer(reg, Site, ns),
            "TransferTask": Informer(reg, TransferTask, ns, task_indexers()),
        }
        reconcilers = self._reconcilers if self._reconcilers is not None else default_reconcilers(self.hooks)
        self.controllers = [Controller(r, reg, self.informers) for r in reconcilers]

    def wire(self) -> None:
        """Build the informers and controllers, start the informers and register each
        reconciler's handlers on them; the controllers' loops are not started (``start``
        does; ``bench informer`` drives the handlers itself)."""
        self._build()
        for inf in self.informers.values():
            inf.start()
        for ctl in self.controllers:
            register = getattr(ctl.reconciler, "register", None)
            if register is not None:
                register(self.informers, ctl.enqueue)

    def start(self) -> None:
        """Start informers and controllers (assumes leadership is held or not needed)."""
        self.wire()
        for ctl in self.controllers:
            ctl.start()
        if self.freeze_gc:
            # The caches just listed live as long as the process: keep the cyclic GC from
            # walking them on every full collection (10^5 jobs are millions of containers).
            freeze_long_lived()

    def stop(self) -> None:
        self._stop_term()
        close_hooks = getattr(self.hooks, "close", None)
        if close_hooks is not None:
            close_hooks()  # running hook processes are killed

    def _stop_term(self) -> None:
        """Stop acting: controllers and informers (the hook runner stays for the next term)."""
        for ctl in self.controllers:
            ctl.stop()
            close = getattr(ctl.reconciler, "close", None)
            if close is not None:
                close()
        for inf in self.informers.values():
            inf.stop()
        self.controllers, self.informers = [], {}

    def run(self, stop: threading.Event) -> int:
        """Lead and reconcile until ``stop`` (exit 0). A lost lease, or a store outage that
        keeps the lease from being renewed, ends the term: controllers stop at once, and the
        manager campaigns again (a standby may lead meanwhile). The process never exits
        because the store was away."""
        try:
            while not stop.is_set():
                if not self.elector.wait_for_leadership(stop):
                    return 0
                self._lead(stop)
                if self._lost.is_set() and not stop.is_set():
                    log.warning("%s stepped down; campaigning again", self.identity)
            return 0
        finally:
            close_hooks = getattr(self.hooks, "close", None)
            if close_hooks is not None:
                close_hooks()

    def _lead(self, stop: threading.Event) -> None:
        """One term as leader: start, reconcile until stop or the lease is lost, stop."""
        self._lost.clear()
        self.terms += 1
        self.leading.set()
        term_over = threading.Event()
        keeper = threading.Thread(
            target=self.elector.keep_leading, args=(stop, self._on_lost, term_over), name="leader-lease",
            daemon=True,
        )
        keeper.start()
        try:
            try:
                self.start()
            except STORE_TROUBLE as e:  # the informers' first list: the store went away meanwhile
                log.warning("store unavailable while starting the controllers (%s); stepping down", e)
                self._lost.set()
            while not stop.is_set() and not self._lost.is_set():
                stop.wait(0.5)
        finally:
            term_over.set()
            self._stop_term()
            self.leading.clear()
            self.elector.step_down()  # best effort: a lost lease is gone already
            if self._lost.is_set():
                stop.wait(min(1.0, self.elector.ttl / 3))  # let the store settle before campaigning

    def _on_lost(self) -> None:
        self._lost.set()

    def idle(self) -> bool:
        return all(c.queue.idle() for c in self.controllers)

    def wait_idle(self, timeout: float = 10.0, settle: float = 0.05) -> bool:
        """Test helper: wait until every queue is idle for ``settle`` seconds."""
        deadline = time.monotonic() + timeout
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            if self.idle():
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= settle:
                    return True
            else:
                quiet_since = None
            time.sleep(0.005)
        return False

    def enqueue_all(self, name: str) -> None:
        for c in self.controllers:
            c.enqueue(Request(name, self.namespace))
