"""PlacementReconciler: binds PREPROCESSED / RESTART_READY jobs to nodes.

One request per namespace ("the allocation"): every relevant change (a job becomes runnable
or leaves a node, a node comes or goes, a batch job's selector changes) enqueues the same key,
so bursts of events collapse into one pass. A pass

1. syncs the :class:`Packer` with the informer caches — nodes added/removed, and the jobs
   whose binding changed since the last pass (tracked by the event handler, so a pass does not
   re-read 100k bound jobs);
2. moves the jobs of vanished nodes on (RUNNING → RUN_TIMEOUT "node X lost", bound but not
   started → unbound) so nothing strands when an agent dies;
3. places the runnable backlog in priority order (higher ``spec.priority`` first, then
   oldest), and records every binding as one step each — the controller writes them all in one
   transaction;
4. marks jobs that no node of the allocation could ever hold ``Unschedulable`` with the reason
   in words, and clears that condition when it no longer holds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from apis import (
    BatchJob,
    Job,
    JobState,
    Node,
    Placement,
    get_condition,
    remove_condition,
    set_condition,
    transition,
    utcnow,
)

from .._controller import Context, Request, Result
from .._informer import Informer
from .packing import JobShape, NodeOccupancy, Packer, PlacementConflict, PlacementRequest, UnknownNode

KEY = "placement"
RUNNABLE = (JobState.PREPROCESSED, JobState.RESTART_READY)
HOLDING = (JobState.PREPROCESSED, JobState.RESTART_READY, JobState.RUNNING)


def holds_resources(job: Job) -> bool:
    """A job holds room on its nodes while bound (not yet started) or running."""
    return job.status.placement is not None and bool(job.status.placement.nodes) and job.status.state in HOLDING


def wants_placement(job: Job) -> bool:
    return job.status.state in RUNNABLE and not holds_resources(job) and not job.spec.suspend


class PlacementReconciler:
    name = "placement"

    def __init__(self) -> None:
        self.packer = Packer()
        self._dirty: set[str] = set()
        self._lock = threading.Lock()
        self._full_sync = True
        self._shapes: dict[tuple[Any, ...], JobShape] = {}

    def register(self, informers: dict[str, Informer[Any]], enqueue: Callable[[Request], None]) -> None:
        jobs: Informer[Job] = informers["Job"]
        ns = jobs.namespace

        def on_job(typ: str, old: Job | None, new: Job | None) -> None:
            relevant = False
            for j in (old, new):
                if j is not None and (holds_resources(j) or wants_placement(j)):
                    relevant = True
            if old is not None and new is not None and relevant:
                # Nothing that placement reads changed (e.g. a RUNNING job's heartbeat-like edit)?
                same = (
                    old.status.state == new.status.state
                    and old.status.placement == new.status.placement
                    and old.spec.priority == new.spec.priority
                    and old.spec.suspend == new.spec.suspend
                    and old.spec.resources == new.spec.resources
                    and old.metadata.labels == new.metadata.labels
                )
                relevant = not same
            if relevant:
                with self._lock:
                    self._dirty.add((new or old).name)  # type: ignore[union-attr]
                enqueue(Request(KEY, ns))

        def on_other(typ: str, old: Any, new: Any) -> None:
            if typ != "MODIFIED" or old is None or new is None or old.spec != new.spec:
                enqueue(Request(KEY, ns))

        jobs.add_handler(on_job)  # type: ignore[arg-type]
        informers["Node"].add_handler(on_other)
        informers["BatchJob"].add_handler(on_other)
        enqueue(Request(KEY, ns))

    # --- sync ----------------------------------------------------------------------------

    def _shape(self, job: Job) -> JobShape:
        r = job.spec.resources
        key = (r.num_nodes, r.ranks_per_node, r.threads_per_rank, r.threads_per_core, r.gpus_per_rank,
               r.node_packing_count)
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._shapes[key] = JobShape.from_resources(r)
        return shape

    def _sync_nodes(self, nodes: Informer[Node]) -> list[str]:
        """Add new nodes, remove vanished ones; returns the names of vanished nodes."""
        live = {n.name: n for n in nodes.items()}
        gone = [n.name for n in self.packer.nodes() if n.name not in live]
        for name in gone:
            self.packer.remove_node(name)
        for name, node in live.items():
            if name not in self.packer:
                self.packer.add_node(NodeOccupancy(name, node.spec.cpus, node.spec.gpus, node.spec.batch_job))
        return gone

    def _sync_job(self, job: Job | None, name: str) -> None:
        if job is None or not holds_resources(job):
            self.packer.release(name)
            return
        p = job.status.placement
        assert p is not None
        try:
            self.packer.bind_existing(name, self._shape(job), p.nodes, p.cpus, p.gpus, p.occupancy or None)
        except (UnknownNode, PlacementConflict):
            self.packer.release(name)  # its node is gone: handled as a lost node below

    # --- reconcile -----------------------------------------------------------------------

    def reconcile(self, req: Request, ctx: Context) -> Result | None:
        jobs: Informer[Job] = ctx.caches["Job"]
        nodes: Informer[Node] = ctx.caches["Node"]
        batchjobs: Informer[BatchJob] = ctx.caches["BatchJob"]
        now = utcnow()
        gone = set(self._sync_nodes(nodes))
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            full, self._full_sync = self._full_sync, False
        if full:
            for name in list(self.packer.bound_jobs()):
                self._sync_job(jobs.get(name), name)
            for state in HOLDING:
                for job in jobs.by_index("state", state.value):
                    self._sync_job(job, job.name)
        else:
            for name in dirty:
                self._sync_job(jobs.get(name), name)

        # Jobs of nodes that vanished (agent died, lease expired): move them on.
        live = set(nodes.names())
        lost_nodes = set(gone)
        if full:
            lost_nodes |= {v for v in jobs.index_values("node") if v not in live}
        for node_name in lost_nodes:
            for job in jobs.by_index("node", node_name):
                if not holds_resources(job):
                    continue
                new = job.status_copy()
                if job.status.state is JobState.RUNNING:
                    transition(new, JobState.RUN_TIMEOUT, f"node {node_name} lost (its agent stopped heartbeating)",
                               now=now)
                else:
                    new.status.placement = None
                    new.status.message = f"unbound: node {node_name} lost before the job started"
                self.packer.release(job.name)
                ctx.update(job, new)

        # The backlog, in priority order.
        pending = [j for s in RUNNABLE for j in jobs.by_index("state", s.value) if wants_placement(j)]
        if not pending:
            return None
        pending.sort(key=lambda j: (-j.spec.priority, j.metadata.creation_timestamp or now, j.name))
        selectors = [(b.name, b.spec.selector) for b in batchjobs.items() if b.spec.selector]
        allowed_cache: dict[tuple[tuple[str, str], ...], frozenset[str | None] | None] = {}

        def allowed(job: Job) -> frozenset[str | None] | None:
            if not selectors:
                return None
            key = tuple(sorted(job.metadata.labels.items()))
            if key not in allowed_cache:
                unrestricted = {b.name for b in batchjobs.items() if not b.spec.selector}
                ok = {name for name, sel in selectors if all(job.metadata.labels.get(k) == v for k, v in sel.items())}
                allowed_cache[key] = frozenset({None, *unrestricted, *ok})
            return allowed_cache[key]

        requests = [PlacementRequest(j.name, self._shape(j), allowed(j)) for j in pending]
        by_name = {j.name: j for j in pending}
        for d in self.packer.place(requests):
            job = by_name[d.job]
            cond = get_condition(job.status.conditions, "Unschedulable")
            if d.bound:
                new = job.status_copy()
                new.status.placement = Placement(**d.placement_fields())
                remove_condition(new.status.conditions, "Unschedulable")
                ctx.update(job, new)
            elif d.never_fits:
                if cond is None or cond.message != d.reason:
                    new = job.status_copy()
                    set_condition(new.status.conditions, "Unschedulable", "True", "NeverFits", d.reason, now)
                    ctx.update(job, new)
            elif cond is not None:
                new = job.status_copy()
                remove_condition(new.status.conditions, "Unschedulable")
                ctx.update(job, new)
        return None

    def on_write_failed(self, names: list[str]) -> None:
        """The controller could not write some steps: resync those jobs next pass."""
        with self._lock:
            self._dirty.update(names)
