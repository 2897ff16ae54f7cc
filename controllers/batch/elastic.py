"""ElasticQueueReconciler: BatchJobs sized to the runnable backlog (``Site.spec.elasticQueue``).

One request per Site. A pass, at most every ``min_interval`` seconds however many job
events arrive, records ONE step:

1. deletes an elastic BatchJob that has waited (pending_submission or queued) longer than
   ``maxQueueWaitMin`` — the BatchJob reconciler cancels it in the scheduler; or
2. creates one BatchJob of the size that ``sizing.size_request`` decides (the rule is in
   ``sizing.py``), labelled ``balsam.io/elastic-queue: <site>``; or nothing.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from apis import BatchJob, BatchJobSpec, ElasticQueue, Job, JobState, Node, ObjectMeta, Site, utcnow

from .._controller import Context, Request, Result
from .._informer import Informer
from ..placement.reconciler import wants_placement
from .reconciler import site_of
from .sizing import HOLDING, WAITING, Allocation, Need, per_node, size_request

LABEL = "balsam.io/elastic-queue"
RUNNABLE = (JobState.PREPROCESSED, JobState.RESTART_READY)


def within_queue_limits(eq: ElasticQueue, site: Site) -> ElasticQueue:
    """The elastic queue held to the limits of its scheduler queue when the Site lists it in
    ``spec.queues`` (``init --template``): nodes, wall time and queued BatchJobs."""
    limits = site.spec.queues.get(eq.queue or "")
    if limits is None:
        return eq
    max_nodes = min(eq.max_nodes, limits.max_nodes)
    max_wall = min(eq.max_wall_time_min, limits.max_wall_time_min)
    return eq.model_copy(update={
        "max_nodes": max_nodes, "min_nodes": min(eq.min_nodes, max_nodes),
        "max_wall_time_min": max_wall, "min_wall_time_min": min(eq.min_wall_time_min, max_wall),
        "max_queued_jobs": min(eq.max_queued_jobs, limits.max_queued_jobs)})


def backlog(jobs: Informer[Job], site: Site, eq: ElasticQueue) -> list[Need]:
    """The site's runnable, unbound jobs that match the queue's selector, grouped by shape."""
    nd = site.spec.node_defaults
    groups: Counter[tuple[int, int, float]] = Counter()
    for state in RUNNABLE:
        for j in jobs.by_index("state", state.value):
            if not wants_placement(j) or j.spec.site not in (None, site.name):
                continue
            if any(j.metadata.labels.get(k) != v for k, v in eq.selector.items()):
                continue
            r = j.spec.resources
            k = 1 if r.num_nodes > 1 else per_node(r, nd.cpus, nd.gpus)
            groups[(r.num_nodes, k, r.wall_time_min)] += 1
    return [Need(count, nodes, k, wall) for (nodes, k, wall), count in groups.items()]


def allocations(bjs: list[BatchJob], nodes: Informer[Node], site: Site, eq: ElasticQueue) -> list[Allocation]:
    registered: Counter[str] = Counter()
    idle: Counter[str] = Counter()
    for n in nodes.items():
        if n.spec.batch_job:
            registered[n.spec.batch_job] += 1
            if not n.status.running_jobs and n.status.occupancy == 0:
                idle[n.spec.batch_job] += 1
    return [
        Allocation(b.spec.num_nodes, b.status.state, b.metadata.labels.get(LABEL) == site.name,
                   b.spec.num_nodes - registered[b.name] + idle[b.name],
                   all(eq.selector.get(k) == v for k, v in b.spec.selector.items()))
        for b in bjs if b.status.state in HOLDING
    ]


class ElasticQueueReconciler:
    name = "elastic-queue"

    def __init__(self, min_interval: float = 0.5) -> None:
        self.min_interval = min_interval
        self._last: dict[str, float] = {}
        self.last_decision: dict[str, str] = {}  # site -> why (for logs and tests)

    def register(self, informers: dict[str, Informer[Any]], enqueue: Callable[[Request], None]) -> None:
        sites: Informer[Site] = informers["Site"]
        ns = sites.namespace

        def all_sites(*_: Any) -> None:
            for s in sites.items():
                if s.spec.elastic_queue is not None and s.spec.elastic_queue.enabled:
                    enqueue(Request(s.name, ns))

        def on_job(typ: str, old: Job | None, new: Job | None) -> None:
            if (old is not None and wants_placement(old)) != (new is not None and wants_placement(new)):
                all_sites()

        def on_site(typ: str, old: Site | None, new: Site | None) -> None:
            enqueue(Request((new or old).name, ns))  # type: ignore[union-attr]

        sites.add_handler(on_site)  # type: ignore[arg-type]
        informers["Job"].add_handler(on_job)  # type: ignore[arg-type]
        informers["BatchJob"].add_handler(all_sites)
        informers["Node"].add_handler(all_sites)

    def reconcile(self, req: Request, ctx: Context) -> Result | None:
        sites: Informer[Site] = ctx.caches["Site"]
        site = sites.get(req.name)
        eq = site.spec.elastic_queue if site is not None else None
        if site is None or eq is None or not eq.enabled:
            return None
        eq = within_queue_limits(eq, site)
        now_m = time.monotonic()
        wait = self._last.get(site.name, -math.inf) + self.min_interval - now_m
        if wait > 0:
            return Result(requeue_after=wait)
        self._last[site.name] = now_m
        bjs = [b for b in ctx.caches["BatchJob"].items() if (s := site_of(b, sites)) is not None and s.name == site.name]
        now, limit, next_check = utcnow(), eq.max_queue_wait_min * 60, math.inf
        for b in bjs:
            if b.metadata.labels.get(LABEL) != site.name or b.status.state not in WAITING:
                continue
            if b.metadata.deletion_timestamp is not None:
                continue
            waited = (now - (b.metadata.creation_timestamp or now)).total_seconds()
            if waited >= limit:
                self.last_decision[site.name] = f"deleting {b.name}: waited {waited / 60:.1f} min in the queue"
                ctx.delete(b)
                return Result(requeue_after=self.min_interval)
            next_check = min(next_check, limit - waited)
        d = size_request(backlog(ctx.caches["Job"], site, eq), allocations(bjs, ctx.caches["Node"], site, eq), eq)
        self.last_decision[site.name] = d.why
        if d.nodes:
            ctx.create(BatchJob(
                metadata=ObjectMeta(generate_name=f"{site.name}-eq-", namespace=req.namespace,
                                    labels={LABEL: site.name}),
                spec=BatchJobSpec(site=site.name, num_nodes=d.nodes, wall_time_min=d.wall_time_min,
                                  queue=eq.queue, project=eq.project, job_mode=eq.job_mode,
                                  selector=dict(eq.selector)),
            ))  # fmt: skip
            return Result(requeue_after=self.min_interval)
        return Result(requeue_after=next_check) if next_check < math.inf else None
