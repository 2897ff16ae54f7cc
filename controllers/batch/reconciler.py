"""BatchJobReconciler: a BatchJob's allocation in the site's scheduler, one step per reconcile.

    pending_submission ──submit──▶ queued ──▶ running ──▶ finished
          │ (refused for good)                     ▲
          ▼                                        │ (cancelled in the scheduler)
    submit_failed          delete ──▶ pending_deletion

* A live BatchJob carries the finalizer ``balsam.io/scheduler`` (added as its first step), so
  ``delete`` only marks it (``deletionTimestamp``): the reconciler moves it to
  pending_deletion, cancels the scheduler job, records finished, then drops the finalizer
  and the store removes it. Setting ``status.state: pending_deletion`` by hand cancels too.
* The scheduler is the Site's ``spec.scheduler`` unless the BatchJob names its own
  (``spec.scheduler``: ``balsamctl up`` submits ``local`` allocations on a Slurm site).
* Submit renders the site's batch script (``script.py``) and calls ``plugin.submit``; the
  plugin is idempotent per scheduler job name, and the id is remembered until it is
  written, so a lost write or a timed-out ``sbatch`` never queues a second allocation.
* Queued and running BatchJobs are looked at every ``poll_queued`` / ``poll_running``
  seconds through ONE ``status`` call for all of them (``snapshot.py``). A job the
  scheduler no longer knows is finished with a message saying it vanished.
* A scheduler that fails, hangs or prints garbage sets the condition ``SchedulerError``
  (reason SchedulerCommandFailed | SchedulerTimeout | SchedulerGarbage) and the request is
  retried with exponential backoff (1 s doubling to ``max_backoff``); it is cleared by the
  next good answer. Nothing here raises into the controller: the manager keeps running.
* When a BatchJob has ended, Nodes still registered for it after ``node_grace`` seconds
  (agents that could not stop cleanly) are deleted: the placement reconciler then moves
  their RUNNING jobs to RUN_TIMEOUT, and those run again in another allocation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apis import BatchJob, Node, Site, get_condition, set_condition, utcnow

from .._controller import Context, Request, Result
from .._informer import Informer
from . import plugin_for, scheduler_site
from .scheduler import SchedulerError, SchedulerPlugin, SubmitRequest
from .script import TemplateError, scheduler_job_name, script_paths, write_script
from .snapshot import StatusSnapshots

FINALIZER = "balsam.io/scheduler"
ACTIVE = ("queued", "running", "pending_deletion")
ENDED = ("finished", "submit_failed")
CONDITION = "SchedulerError"


def site_of(bj: BatchJob, sites: Informer[Site]) -> Site | None:
    """The BatchJob's Site: ``spec.site``, else the namespace's only Site."""
    if bj.spec.site:
        return sites.get(bj.spec.site)
    items = sites.items()
    return items[0] if len(items) == 1 else None


class BatchJobReconciler:
    name = "batch"

    def __init__(
        self,
        plugins: Callable[[Site], SchedulerPlugin] = plugin_for,
        *,
        poll_queued: float = 1.0,
        poll_running: float = 3.0,
        node_grace: float = 15.0,
        max_backoff: float = 60.0,
        status_ttl: float = 0.5,
        python: str | None = None,
    ) -> None:
        self.plugins = plugins
        self.poll = {"queued": poll_queued, "running": poll_running}
        self.node_grace = node_grace
        self.max_backoff = max_backoff
        self.python = python
        self.snapshots = StatusSnapshots(status_ttl)
        self._failures: dict[str, int] = {}
        # uid -> (name, scheduler id, plugin) of a submit whose id is not written yet
        self._submitted: dict[str, tuple[str, str, SchedulerPlugin]] = {}

    def register(self, informers: dict[str, Informer[Any]], enqueue: Callable[[Request], None]) -> None:
        bjs: Informer[BatchJob] = informers["BatchJob"]
        ns = bjs.namespace

        def on_batchjob(typ: str, old: BatchJob | None, new: BatchJob | None) -> None:
            enqueue(Request((new or old).name, ns))  # type: ignore[union-attr]

        def on_node(typ: str, old: Node | None, new: Node | None) -> None:
            for n in (old, new):
                if n is not None and n.spec.batch_job:
                    enqueue(Request(n.spec.batch_job, ns))

        def on_site(typ: str, old: Site | None, new: Site | None) -> None:
            for b in bjs.items():
                if b.spec.site in (None, (new or old).name):  # type: ignore[union-attr]
                    enqueue(Request(b.name, ns))

        bjs.add_handler(on_batchjob)  # type: ignore[arg-type]
        informers["Node"].add_handler(on_node)  # type: ignore[arg-type]
        informers["Site"].add_handler(on_site)  # type: ignore[arg-type]

    # --- reconcile -------------------------------------------------------------------------

    def reconcile(self, req: Request, ctx: Context) -> Result | None:
        bj: BatchJob | None = ctx.caches["BatchJob"].get(req.name)
        if bj is None:
            self._failures.pop(req.name, None)
            return self._orphan(req.name)
        uid = bj.metadata.uid or ""
        if bj.status.scheduler_id:
            self._submitted.pop(uid, None)
        state, deleting = bj.status.state, bj.metadata.deletion_timestamp is not None
        if state in ENDED:
            return self._ended(bj, ctx)
        site = site_of(bj, ctx.caches["Site"])
        if deleting and state == "pending_submission":
            sid = self._submitted.get(uid, ("", "", None))[1]
            if not sid:
                return self._finish(bj, ctx, "deleted before it was submitted")
            return self._step(bj, ctx, state="pending_deletion", scheduler_id=sid, message=f"deleting: cancelling {sid}")
        if deleting and state in ("queued", "running"):
            return self._step(bj, ctx, state="pending_deletion",
                              message=f"deleting: cancelling scheduler job {bj.status.scheduler_id}")
        if site is None:
            if deleting:
                return self._finish(bj, ctx, f"site {bj.spec.site or '(default)'} not found: could not cancel "
                                             f"scheduler job {bj.status.scheduler_id}")
            return self._failed(bj, ctx, "SiteNotFound", f"site {bj.spec.site or '(the only one)'} not found")
        if FINALIZER not in bj.metadata.finalizers:
            new = bj.model_copy(deep=True)
            new.metadata.finalizers.append(FINALIZER)
            ctx.update(bj, new)
            return None
        plugin = self.plugins(scheduler_site(bj, site))
        if state == "pending_submission":
            return self._submit(bj, site, plugin, ctx)
        if state == "pending_deletion":
            return self._cancel(bj, plugin, ctx)
        return self._observe(bj, plugin, ctx)

    # --- steps -----------------------------------------------------------------------------

    def _submit(self, bj: BatchJob, site: Site, plugin: SchedulerPlugin, ctx: Context) -> Result | None:
        uid = bj.metadata.uid or ""
        sid = self._submitted.get(uid, ("", "", None))[1]
        if not sid:
            try:
                script = write_script(bj, site, getattr(ctx.registry.store, "url", None), self.python)
                sid = plugin.submit(SubmitRequest(
                    job_name=scheduler_job_name(bj), script=script, output=script_paths(bj, site)[1],
                    num_nodes=bj.spec.num_nodes, wall_time_min=bj.spec.wall_time_min, queue=bj.spec.queue,
                    project=bj.spec.project, optional_params=dict(bj.spec.optional_params)))  # fmt: skip
            except TemplateError as e:
                return self._step(bj, ctx, state="submit_failed", message=str(e))
            except OSError as e:
                return self._failed(bj, ctx, "ScriptNotWritten", f"cannot write the batch script: {e}")
            except SchedulerError as e:
                if e.permanent:
                    return self._rejected(bj, ctx, e)
                return self._failed(bj, ctx, e.reason, e.message)
            self._submitted[uid] = (bj.name, sid, plugin)
            self.snapshots.invalidate(plugin)
        return self._step(bj, ctx, state="queued", scheduler_id=sid, message=f"submitted to {plugin.name} as job {sid}")

    def _observe(self, bj: BatchJob, plugin: SchedulerPlugin, ctx: Context) -> Result | None:
        sid = bj.status.scheduler_id or ""
        bjs: Informer[BatchJob] = ctx.caches["BatchJob"]
        sites: Informer[Site] = ctx.caches["Site"]
        active = [b.status.scheduler_id for b in bjs.items() if b.status.state in ACTIVE and b.status.scheduler_id
                  and (s := site_of(b, sites)) is not None and self.plugins(scheduler_site(b, s)) is plugin]
        try:
            info = self.snapshots.lookup(plugin, sid, [a for a in active if a])
        except SchedulerError as e:
            return self._failed(bj, ctx, e.reason, e.message)
        if info is None:
            return self._finish(bj, ctx, f"{plugin.name} job {sid} vanished: the scheduler no longer knows it")
        if info.phase == "finished":
            return self._finish(bj, ctx, f"{plugin.name} job {sid} ended: {info.describe()}",
                                start=bj.status.start_time or info.start_time, end=info.end_time,
                                scheduler_state=info.state)
        if info.phase == "running":
            return self._step(bj, ctx, state="running", start_time=bj.status.start_time or info.start_time or utcnow(),
                              message=f"running in {plugin.name} as job {sid}", scheduler_state=info.state)
        return self._step(bj, ctx, state="queued", message=f"queued in {plugin.name}: {info.describe()}",
                          scheduler_state=info.state)

    def _cancel(self, bj: BatchJob, plugin: SchedulerPlugin, ctx: Context) -> Result | None:
        sid = bj.status.scheduler_id
        if sid:
            try:
                plugin.cancel(sid)
            except SchedulerError as e:
                return self._failed(bj, ctx, e.reason, e.message)
            self.snapshots.invalidate(plugin)
        return self._finish(bj, ctx, f"cancelled in {plugin.name} (job {sid})" if sid else "cancelled")

    def _orphan(self, name: str) -> Result | None:
        """A BatchJob removed from the store between our submit and its write: cancel that
        allocation (raises to retry with backoff if the scheduler does not answer)."""
        for uid, (n, sid, plugin) in list(self._submitted.items()):
            if n == name:
                plugin.cancel(sid)
                del self._submitted[uid]
        return None

    def _ended(self, bj: BatchJob, ctx: Context) -> Result | None:
        self._failures.pop(bj.name, None)
        if FINALIZER in bj.metadata.finalizers:  # nothing left to cancel: a delete may remove it now
            new = bj.model_copy(deep=True)
            new.metadata.finalizers = [f for f in new.metadata.finalizers if f != FINALIZER]
            ctx.update(bj, new)
            return None
        nodes = [n for n in ctx.caches["Node"].items() if n.spec.batch_job == bj.name]
        if not nodes:
            return None
        left = self.node_grace - (utcnow() - (bj.status.end_time or utcnow())).total_seconds()
        if left > 0:
            return Result(requeue_after=left)
        for n in nodes:  # their agents did not stop: the placement reconciler requeues their jobs
            ctx.delete(n)
        return None

    # --- one write ---------------------------------------------------------------------------

    def _finish(self, bj: BatchJob, ctx: Context, message: str, start: Any = None, end: Any = None,
                scheduler_state: str | None = None) -> Result | None:
        return self._step(bj, ctx, state="finished", message=message, start_time=start or bj.status.start_time,
                          end_time=end or utcnow(), scheduler_state=scheduler_state)

    def _step(self, bj: BatchJob, ctx: Context, **status: Any) -> Result | None:
        """Record the status fields given (and clear SchedulerError): the one step."""
        self._failures.pop(bj.name, None)
        new = bj.model_copy(update={"status": bj.status.model_copy(update=status)})
        new.status.conditions = [c for c in bj.status.conditions if c.type != CONDITION]
        if new.status != bj.status:
            ctx.update(bj, new)
        return Result(requeue_after=self.poll[new.status.state]) if new.status.state in self.poll else None

    def _rejected(self, bj: BatchJob, ctx: Context, e: SchedulerError) -> Result | None:
        """submit_failed, with the scheduler's refusal (``qsub: Unknown queue``) both as the
        message and as the SchedulerError condition (reason SubmitRejected): one write."""
        self._failures.pop(bj.name, None)
        new = bj.model_copy(update={"status": bj.status.model_copy(update={
            "state": "submit_failed", "message": e.message, "conditions": list(bj.status.conditions)})})
        set_condition(new.status.conditions, CONDITION, "True", e.reason, e.message)
        ctx.update(bj, new)
        return None

    def _failed(self, bj: BatchJob, ctx: Context, reason: str, message: str) -> Result:
        """Say why in the SchedulerError condition and look again after a growing delay."""
        n = self._failures[bj.name] = self._failures.get(bj.name, 0) + 1
        delay = min(self.max_backoff, 2.0 ** (n - 1))
        new = bj.model_copy(update={"status": bj.status.model_copy(update={"conditions": list(bj.status.conditions)})})
        set_condition(new.status.conditions, CONDITION, "True", reason, f"{message} (retrying with backoff)")
        cond = get_condition(new.status.conditions, CONDITION)
        if cond != get_condition(bj.status.conditions, CONDITION):
            ctx.update(bj, new)
        return Result(requeue_after=delay)
