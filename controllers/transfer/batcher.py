"""TransferBatcher: gathers the transfer items of waiting jobs into batched TransferTasks.

A job READY with filled stage-in slots (or POSTPROCESSED with stage-out slots) has one item
per slot. Items that no TransferTask holds yet are grouped by (direction, location, site);
a group becomes a TransferTask as soon as it has ``batch_size`` items, or once no item has
joined it for ``window`` seconds, or when its oldest item has waited ``max_wait`` seconds —
so 1,000 jobs reading from one endpoint make two tasks, not 1,000, even while they trickle
in, and a lone job waits only ``window``. The wait is a ``requeue_after``, never a sleep.

One request per namespace: every job that starts waiting enqueues the same key, and a pass
looks only at the jobs that changed since the last one (plus all waiting jobs on the first).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime

from apis import (
    App,
    Job,
    JobState,
    PlannedItem,
    Site,
    TransferItem,
    TransferTask,
    TransferTaskSpec,
    plan_items,
    provider_of,
    site_name_for,
    utcnow,
)

from .._controller import Context, Request, Result
from .._informer import Informer

KEY = "transfer-batch"
DIRECTION = {JobState.READY: "in", JobState.POSTPROCESSED: "out"}


def item_key(direction: str, job: str, slot: str, job_uid: str | None) -> str:
    """The TransferTask informer's ``item`` index value: one job's slot, one direction."""
    return f"{direction}/{job}/{slot}/{job_uid or ''}"


def covering_task(tasks: Informer[TransferTask], direction: str, job: Job, slot: str) -> TransferTask | None:
    """The newest TransferTask that holds this job's slot (None: not batched yet)."""
    found = tasks.by_index("item", item_key(direction, job.name, slot, job.metadata.uid))
    if not found:
        return None
    return max(found, key=lambda t: (t.metadata.creation_timestamp or utcnow(), t.name))


def waiting_since(job: Job, now: datetime) -> datetime:
    h = job.status.history
    return h[-1].time if h and h[-1].to_state is job.status.state else now


def resolve_site(job: Job, app: App | None, sites: Informer[Site]) -> Site | None:
    name = site_name_for(job, app, sites.names())
    return sites.get(name) if name else None


class TransferBatcher:
    name = "transfer-batch"

    def __init__(self, batch_size: int = 500, window: float = 0.5, max_wait: float = 2.0) -> None:
        self.batch_size = batch_size
        self.window = window
        self.max_wait = max(max_wait, window)
        self._candidates: set[str] = set()
        self._full = True
        self._lock = threading.Lock()
        self.tasks_created = 0

    def register(self, informers: dict[str, Informer], enqueue: Callable[[Request], None]) -> None:
        ns = informers["Job"].namespace

        def on_job(typ: str, old: Job | None, new: Job | None) -> None:
            if new is not None and new.spec.transfers and new.status.state in DIRECTION and (
                    old is None or old.status.state is not new.status.state):
                with self._lock:
                    self._candidates.add(new.name)
                enqueue(Request(KEY, ns))

        def on_task(typ: str, old: TransferTask | None, new: TransferTask | None) -> None:
            if new is None and old is not None:  # its items are nobody's now
                with self._lock:
                    self._candidates.update(i.job for i in old.spec.items)
                enqueue(Request(KEY, ns))

        informers["Job"].add_handler(on_job)  # type: ignore[arg-type]
        informers["TransferTask"].add_handler(on_task)  # type: ignore[arg-type]
        enqueue(Request(KEY, ns))

    def on_write_failed(self, names: list[str]) -> None:
        with self._lock:
            self._full = True  # the tasks were not made: look at every waiting job again

    def reconcile(self, req: Request, ctx: Context) -> Result | None:
        jobs: Informer[Job] = ctx.caches["Job"]
        apps: Informer[App] = ctx.caches["App"]
        sites: Informer[Site] = ctx.caches["Site"]
        tasks: Informer[TransferTask] = ctx.caches["TransferTask"]
        with self._lock:
            names, self._candidates = self._candidates, set()
            full, self._full = self._full, False
        if full:
            names |= {j.name for s in DIRECTION for j in jobs.by_index("state", s.value) if j.spec.transfers}
        now = utcnow()
        groups: dict[tuple[str, str, str], list[tuple[datetime, PlannedItem]]] = defaultdict(list)
        keep: set[str] = set()
        for name in names:
            job = jobs.get(name)
            if job is None or not job.spec.transfers or job.status.state not in DIRECTION:
                continue
            direction = DIRECTION[job.status.state]
            app = apps.get(job.spec.app)
            site = resolve_site(job, app, sites)
            if app is None or site is None:
                keep.add(name)  # its App or Site is not in the cache yet
                continue
            since = waiting_since(job, now)
            for item in plan_items(job, app, site, direction):  # type: ignore[arg-type]
                if covering_task(tasks, direction, job, item.slot) is None:
                    groups[(direction, item.location, site.name)].append((since, item))
        wait: float | None = None
        for (direction, location, site_name), items in groups.items():
            items.sort(key=lambda p: (p[0], p[1].job, p[1].slot))
            while len(items) >= self.batch_size:
                self._make_task(ctx, req.namespace, direction, location, sites.get(site_name),
                                [i for _, i in items[: self.batch_size]])
                items = items[self.batch_size:]
            if not items:
                continue
            oldest = (now - items[0][0]).total_seconds()
            newest = (now - items[-1][0]).total_seconds()
            if newest >= self.window or oldest >= self.max_wait:
                self._make_task(ctx, req.namespace, direction, location, sites.get(site_name), [i for _, i in items])
            else:
                left = min(self.window - newest, self.max_wait - oldest)
                wait = left if wait is None else min(wait, left)
                keep.update(i.job for _, i in items)  # still gathering: look again next pass
        # Jobs put into a task now are done here (if the write fails, on_write_failed rescans).
        with self._lock:
            self._candidates |= keep
        return Result(requeue_after=max(wait, 0.001)) if wait is not None else None

    def _make_task(self, ctx: Context, namespace: str, direction: str, location: str, site: Site | None,
                   items: list[PlannedItem]) -> None:
        provider = provider_of(location)
        spec = TransferTaskSpec(
            provider=provider,
            direction=direction,  # type: ignore[arg-type]
            location=location,
            site=site.name if site is not None else None,
            local_endpoint=site.spec.globus_endpoint_id if site is not None and provider == "globus" else None,
            items=[TransferItem(job=i.job, slot=i.slot, source=i.source, destination=i.destination,
                                recursive=i.recursive, job_uid=i.job_uid) for i in items],
        )
        ctx.create(TransferTask(metadata={"generateName": f"stage{direction}-{provider}-",  # type: ignore[arg-type]
                                          "namespace": namespace}, spec=spec))
        self.tasks_created += 1
