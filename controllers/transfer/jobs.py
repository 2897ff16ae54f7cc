"""TransferJobReconciler: moves a job on when its transfers are done.

READY → STAGED_IN when every stage-in item of the job has arrived (then → PREPROCESSED in the
same write when the App has no preprocess hook); POSTPROCESSED → STAGED_OUT → JOB_FINISHED
when every stage-out item has. An item that failed for good fails the job with the
provider's message. While it waits, the job carries its tasks' ``TransferStalled`` and
``TransferAuthRequired`` conditions, so ``describe job`` says why it is not moving.
"""

from __future__ import annotations

from collections.abc import Callable

from apis import (
    App,
    Job,
    JobState,
    TransferTask,
    advance,
    remove_condition,
    set_condition,
    transition,
    utcnow,
)

from .._controller import Context, Request, Result
from .._informer import Informer
from .._steps import collapse_from_ready, transfer_slots
from ..hooks import HookRunner
from .batcher import DIRECTION, covering_task
from .tasks import AUTH, STALLED

MIRRORED = (STALLED, AUTH)


_INDEX_CACHE: dict[tuple[str, str | None], dict[tuple[str, str], int]] = {}


def item_index(task: TransferTask, job: Job, slot: str) -> int:
    """Where this job's slot is in ``task.spec.items`` (items never change once a task is made,
    so the lookup table is built once per task)."""
    key = (task.name, task.metadata.uid)
    table = _INDEX_CACHE.get(key)
    if table is None:
        if len(_INDEX_CACHE) > 4096:
            _INDEX_CACHE.clear()
        table = _INDEX_CACHE[key] = {(i.job, i.slot): n for n, i in enumerate(task.spec.items)}
    return table.get((job.name, slot), -1)


class TransferJobReconciler:
    name = "transfer"

    def __init__(self, hooks: HookRunner) -> None:
        self.hooks = hooks

    def register(self, informers: dict[str, Informer], enqueue: Callable[[Request], None]) -> None:
        ns = informers["Job"].namespace

        def on_job(typ: str, old: Job | None, new: Job | None) -> None:
            if new is not None and new.spec.transfers and new.status.state in DIRECTION:
                enqueue(Request(new.name, ns))

        def on_task(typ: str, old: TransferTask | None, new: TransferTask | None) -> None:
            # Jobs care when a task ends or its conditions change; not when it is made,
            # submitted, retried, makes progress or is deleted.
            if new is None:
                return
            ended = new.status.state in ("Succeeded", "Failed") and (old is None or old.status.state != new.status.state)
            if ended or (old is not None and old.status.conditions != new.status.conditions):
                for name in {i.job for i in new.spec.items}:
                    enqueue(Request(name, ns))

        informers["Job"].add_handler(on_job)  # type: ignore[arg-type]
        informers["TransferTask"].add_handler(on_task)  # type: ignore[arg-type]

    def reconcile(self, req: Request, ctx: Context) -> Result | None:
        jobs: Informer[Job] = ctx.caches["Job"]
        job = jobs.get(req.name)
        if job is None or job.status.state not in DIRECTION:
            return None
        direction = DIRECTION[job.status.state]
        app: App | None = ctx.caches["App"].get(job.spec.app)
        tasks: Informer[TransferTask] = ctx.caches["TransferTask"]
        refs: list[tuple[str, TransferTask, int]] = []
        for slot in transfer_slots(job, app, direction):
            task = covering_task(tasks, direction, job, slot)
            if task is None:
                return None  # not batched yet: the task's end brings us back
            refs.append((slot, task, item_index(task, job, slot)))
        new = job.status_copy()
        now = utcnow()
        failed = [(slot, t, f) for slot, t, idx in refs if t.status.state == "Failed"
                  for f in t.status.failed_items if f.index == idx]
        if failed:
            slot, task, f = failed[0]
            what = "stage-in" if direction == "in" else "stage-out"
            transition(new, JobState.FAILED, f"{what} of slot {slot} ({job.spec.transfers[slot]}) failed "
                       f"after {task.status.attempts} attempt(s) (TransferTask {task.name}): {f.message}", now=now)
        elif all(t.status.state in ("Succeeded", "Failed") for _, t, _ in refs):
            for c in MIRRORED:
                remove_condition(new.status.conditions, c)
            n = len(refs)
            if direction == "in":
                advance(new, [JobState.STAGED_IN], f"{n} stage-in transfer(s) done", now)
                collapse_from_ready(new, app, self.hooks, now)
            else:
                advance(new, [JobState.STAGED_OUT, JobState.JOB_FINISHED], f"{n} stage-out transfer(s) done", now)
        else:
            for c in MIRRORED:
                holder = next((t for _, t, _ in refs for tc in t.status.conditions
                               if tc.type == c and tc.status == "True"), None)
                if holder is None:
                    remove_condition(new.status.conditions, c)
                    continue
                tc = next(x for x in holder.status.conditions if x.type == c)
                set_condition(new.status.conditions, c, "True", tc.reason,
                              f"TransferTask {holder.name}: {tc.message}", now)
        if new != job:
            ctx.update(job, new)
        return None
