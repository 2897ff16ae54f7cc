"""Claim windows, placement's side (issue 19, eighth round; the protocol: ``apis/_windows.py``).

Placement lends a node to its agent (a *claim window*) when its own engine has nothing to
decide there; the agent then starts single-node jobs itself, one CAS per job, and placement
writes nothing per such job. The rules, per namespace (one pass decides for all its nodes):

* **Open** every node's window when every registered node's agent advertises
  ``spec.acquires``, no BatchJob has a selector, and the queue holds no multi-node job. Jobs
  that no node could ever hold do not keep windows closed: they get their Unschedulable
  condition (the engine's words) and wait.
* **Close** them all as soon as one of those stops holding (a multi-node job arrives, a node
  that does not acquire registers, a selector appears). A closed node stays *held* — the
  engine places nothing there — until its agent's acknowledgement names the closing epoch
  and the Job cache has seen the agent's last job write (``claimsThrough``): from then on the
  cache shows everything the agent started, and the engine's accounting is exact.
* All or nothing, so that the engine never works beside open windows: while windows are open
  the engine does not run, so it can neither bind on a lent node nor write Waiting words about
  room it cannot see. A multi-node job waiting for whole nodes keeps the windows closed until
  it is placed: the agents cannot starve it.

Invariant (tested in tests/controllers/test_windows.py): at any revision, a node's jobs are
started by one writer — its agent while the window key says open, placement's engine once the
close is acknowledged; an agent's claim compares the window key's revision, so none lands
after a close.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import store as st
from apis import BatchJob, Job, Node, Registry
from apis._windows import Window, window_key, window_prefix

from .._informer import Informer
from .packing import NodeOccupancy, Outcome, Packer, PlacementRequest

log = logging.getLogger(__name__)


class ClaimWindows:
    """The windows of one namespace as placement last wrote them, and what they hold back."""

    def __init__(self, registry: Registry, namespace: str, *, enabled: bool = True) -> None:
        self.registry = registry
        self.namespace = namespace
        self.enabled = enabled
        self.windows: dict[str, Window] = {}
        self._loaded = False
        #: Nodes the engine may not place on: window open, or closed and not acknowledged yet.
        self.held: frozenset[str] = frozenset()
        self.open = False  # windows are open (wanted so, at the last pass)
        self.writes = 0

    def _load(self) -> None:
        """The windows as stored (a new term of placement starts from what the last wrote)."""
        prefix = window_prefix(self.namespace)
        res = self.registry.store.range(prefix)
        self.windows = {kv.key[len(prefix):]: Window.decode(kv.value) for kv in res.kvs}
        self._loaded = True

    @staticmethod
    def want_open(nodes: list[Node], batchjobs: Informer[BatchJob], engine_jobs: bool) -> bool:
        """The rule of the module docstring."""
        return bool(nodes) and not engine_jobs and all(n.spec.acquires for n in nodes) and \
            not any(b.spec.selector for b in batchjobs.items())

    def sync(self, nodes: list[Node], jobs: Informer[Job], want_open: bool) -> frozenset[str]:
        """Write the window keys that must change (one transaction) and return the nodes the
        engine may not place on. Raises the store's errors (the controller backs off)."""
        if not self.enabled:
            want_open = False
        if not self.windows and not want_open and not any(n.spec.acquires for n in nodes):
            self.open, self.held = False, frozenset()
            return self.held  # no agent here claims (a window left open by an earlier term is harmless)
        try:
            return self._sync(nodes, jobs, want_open)
        except st.Forbidden as e:
            # A site whose store role predates the windows (no grant on their prefix): bind
            # every job as before, and say so once.
            log.warning("claim windows off: the store refuses their keys (%s); placement binds every job", e)
            self.enabled = False
            self.open, self.held = False, frozenset()
            return self.held

    def _sync(self, nodes: list[Node], jobs: Informer[Job], want_open: bool) -> frozenset[str]:
        if not self._loaded:
            self._load()
        held: set[str] = set()
        puts: dict[str, Window] = {}
        live = {n.name for n in nodes}
        for node in nodes:
            name = node.name
            w = self.windows.get(name, Window())
            if want_open and node.spec.acquires:
                if not w.open:
                    puts[name] = Window(w.epoch + 1, True)
                held.add(name)
            elif w.open:
                puts[name] = Window(w.epoch + 1, False)
                held.add(name)
            elif w.epoch and (node.status.window_ack < w.epoch or jobs.revision < node.status.claims_through):
                held.add(name)  # closed, not acknowledged (or its claims not seen) yet
        gone = [name for name in self.windows if name not in live]
        if puts or gone:
            ops: list[st.Op] = [st.Put(window_key(self.namespace, n), w.encode()) for n, w in puts.items()]
            ops.extend(st.Delete(window_key(self.namespace, n)) for n in gone)
            self.registry.store.txn([], ops)
            self.writes += 1
            self.windows.update(puts)
            for n in gone:
                del self.windows[n]
        self.open = want_open and bool(held)
        self.held = frozenset(held)
        return self.held


def never_fits_reason(nodes: Iterable[Node], name: str, request: PlacementRequest) -> str | None:
    """The engine's words for a job no node could ever hold (None when some node could): asked
    while windows are open, when the engine does not run. Builds a packer of idle nodes for
    the one job: a job that never fits is rare, and this keeps the words the engine's own."""
    occ = [NodeOccupancy(n.name, n.spec.cpus, n.spec.gpus, n.spec.batch_job) for n in nodes]
    shape = request.shape
    if any(o.could_ever_fit(shape) for o in occ):
        return None
    d = Packer(occ).place_pairs([(name, request)])[0]
    return d[7] if d[1] is Outcome.NEVER_FITS else None
