"""TransferTaskReconciler: drives one TransferTask through its provider.

``Pending`` → submit (in the call pool; the reconciler never waits) → ``Active`` with the
provider's task id → poll (batched per provider) → ``Succeeded``, or after a failed attempt
back to ``Pending`` for the items that failed (exponential backoff, up to ``max_attempts``),
then ``Failed`` with the failed items and the provider's message. A sign-in problem sets
``TransferAuthRequired`` (its message is the command to run) and is retried every
``auth_retry`` seconds; an active task without progress for ``stall_after`` seconds gets
``TransferStalled``. Finished tasks are deleted ``ttl_after_finished`` seconds later, once no
job waits on them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from apis import (
    Job,
    JobState,
    Site,
    TransferItemFailure,
    TransferTask,
    remove_condition,
    set_condition,
    utcnow,
)

from .._controller import Context, Request, Result
from .._informer import Informer
from ._calls import LOST, ProviderCalls
from .providers import AuthRequired, Providers, ProviderStatus, TransferProvider, TransferProviderError

STALLED = "TransferStalled"
AUTH = "TransferAuthRequired"
WAITING = {"in": JobState.READY, "out": JobState.POSTPROCESSED}


def submitted_indices(task: TransferTask) -> list[int]:
    """The items an attempt moves: the retryable failures of the last attempt, else every
    item that has not failed for good."""
    failed = task.status.failed_items
    retry = [f.index for f in failed if not f.permanent]
    if retry:
        return retry
    permanent = {f.index for f in failed}
    return [i for i in range(len(task.spec.items)) if i not in permanent]


def status_copy(task: TransferTask) -> TransferTask:
    """A copy whose status may be edited; spec (hundreds of items) and metadata stay shared."""
    st = task.status
    status = st.model_copy(update={"conditions": list(st.conditions), "failed_items": list(st.failed_items)})
    return task.model_copy(update={"status": status})


def _age(since: datetime | None, now: datetime) -> float:
    return 0.0 if since is None else (now - since).total_seconds()


class TransferTaskReconciler:
    name = "transfer-task"

    def __init__(self, providers: Providers, calls: ProviderCalls, max_attempts: int = 3, backoff: float = 2.0,
                 stall_after: float = 600.0, auth_retry: float = 30.0, ttl_after_finished: float = 3600.0) -> None:
        self.providers = providers
        self.calls = calls
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.stall_after = stall_after
        self.auth_retry = auth_retry
        self.ttl_after_finished = ttl_after_finished

    def register(self, informers: dict[str, Informer], enqueue: Callable[[Request], None]) -> None:
        tasks: Informer[TransferTask] = informers["TransferTask"]
        ns = tasks.namespace

        def on_task(typ: str, old: TransferTask | None, new: TransferTask | None) -> None:
            if new is not None:
                enqueue(Request(new.name, ns))
            elif old is not None:
                self.calls.forget(old.name)
                if old.status.state == "Active" and old.status.provider_task_id:
                    self._cancel(old, informers["Site"])

        tasks.add_handler(on_task)  # type: ignore[arg-type]
        self.calls.set_waker(lambda name: enqueue(Request(name, ns)))

    def _cancel(self, task: TransferTask, sites: Informer[Site]) -> None:
        try:
            provider = self.providers.get(task.spec.provider, self._site_path(task, sites))
        except TransferProviderError:
            return
        ptid = task.status.provider_task_id or ""
        self.calls.fire(lambda: provider.cancel(ptid))

    @staticmethod
    def _site_path(task: TransferTask, sites: Informer[Site]) -> str:
        site = sites.get(task.spec.site) if task.spec.site else None
        return site.spec.path if site is not None else ""

    def close(self) -> None:
        self.calls.close()
        self.providers.close()

    # --- reconcile ---------------------------------------------------------------------

    def reconcile(self, req: Request, ctx: Context) -> Result | None:
        task: TransferTask | None = ctx.caches["TransferTask"].get(req.name)
        if task is None:
            return None
        if task.status.state in ("Succeeded", "Failed"):
            return self._collect(task, ctx)
        try:
            provider = self.providers.get(task.spec.provider, self._site_path(task, ctx.caches["Site"]))
        except TransferProviderError as e:
            new = status_copy(task)
            self._fail(new, [TransferItemFailure(index=i, message=str(e), permanent=True)
                             for i in range(len(task.spec.items))], str(e), utcnow())
            ctx.update(task, new)
            return None
        if task.status.state == "Pending":
            return self._submit(task, provider, ctx)
        return self._poll(task, provider, ctx)

    def _submit(self, task: TransferTask, provider: TransferProvider, ctx: Context) -> Result | None:
        st, now = task.status, utcnow()
        self.calls.forget(task.name, keep=lambda k: k == st.attempts)
        if st.attempts and st.last_progress_time is not None:
            wait = self.backoff * 2 ** (st.attempts - 1) - _age(st.last_progress_time, now)
            if wait > 0:
                return Result(requeue_after=wait)
        indices = submitted_indices(task)
        out = self.calls.call(task.name, st.attempts, lambda: provider.submit(task, indices))
        if out is None:
            return Result(requeue_after=60.0)  # the pool wakes us when the call ends
        new = status_copy(task)
        ns = new.status
        if out.error is None:
            ns.state, ns.provider_task_id, ns.attempts = "Active", str(out.value), st.attempts + 1
            ns.submit_time = ns.last_progress_time = now
            ns.message = f"submitted {len(indices)} item(s) (attempt {ns.attempts} of {self.max_attempts})"
            remove_condition(ns.conditions, AUTH)
            remove_condition(ns.conditions, STALLED)
        elif isinstance(out.error, AuthRequired):
            left = self.auth_retry - (time.monotonic() - out.at)
            if left <= 0:
                self.calls.forget(task.name)  # ask again: the user may have signed in
                return Result(requeue_after=0.01)
            set_condition(ns.conditions, AUTH, "True", out.error.reason, str(out.error), now)
            ns.message = str(out.error)
            if new != task:
                ctx.update(task, new)
            return Result(requeue_after=left)
        else:
            ns.attempts = st.attempts + 1
            ns.last_progress_time = now
            msg = f"submit failed: {out.error}"
            if ns.attempts >= self.max_attempts:
                self._fail(new, [TransferItemFailure(index=i, message=msg) for i in indices], msg, now)
            else:
                ns.message = f"attempt {ns.attempts} of {self.max_attempts}: {msg}; retrying"
        ctx.update(task, new)
        return None

    def _poll(self, task: TransferTask, provider: TransferProvider, ctx: Context) -> Result | None:
        st, now = task.status, utcnow()
        answer = self.calls.poll(provider, st.provider_task_id or "", task.name, provider.poll_interval)
        new = status_copy(task)
        ns = new.status
        again = Result(requeue_after=max(provider.poll_interval, 0.01))
        if answer is None or isinstance(answer, Exception) and not isinstance(answer, AuthRequired):
            if isinstance(answer, Exception):
                ns.message = f"cannot poll the provider: {answer}"
            self._check_stall(new, now)
        elif isinstance(answer, AuthRequired):
            set_condition(ns.conditions, AUTH, "True", answer.reason, str(answer), now)
            ns.message = str(answer)
            again = Result(requeue_after=self.auth_retry)
        elif answer is LOST:
            self._attempt_failed(new, [TransferItemFailure(index=i, message="the provider lost the task")
                                       for i in submitted_indices(task)],
                                 "the provider lost the task (was the controller restarted?)", now)
        else:
            assert isinstance(answer, ProviderStatus)
            remove_condition(ns.conditions, AUTH)
            progressed = (answer.bytes_transferred, answer.files_transferred) != \
                (st.bytes_transferred, st.files_transferred)
            ns.bytes_transferred, ns.files_transferred = answer.bytes_transferred, answer.files_transferred
            if answer.state == "Active":
                ns.message = answer.message or ns.message
                if progressed:
                    ns.last_progress_time = now
                    remove_condition(ns.conditions, STALLED)
                else:
                    self._check_stall(new, now)
            elif answer.state == "Succeeded":
                permanent = [f for f in st.failed_items if f.permanent]
                ns.last_progress_time = now
                remove_condition(ns.conditions, STALLED)
                if permanent:
                    self._fail(new, permanent, f"{len(permanent)} item(s) failed: {permanent[0].message}", now)
                else:
                    ns.state, ns.failed_items, ns.message = "Succeeded", [], answer.message or "done"
            else:
                failed = answer.failed
                if failed is None:  # the provider cannot tell which: all of this attempt's
                    failed_items = [TransferItemFailure(index=i, message=answer.message)
                                    for i in submitted_indices(task)]
                else:
                    failed_items = [TransferItemFailure(index=f.index, message=f.message, permanent=f.permanent)
                                    for f in failed]
                self._attempt_failed(new, failed_items, answer.message, now)
        if new != task:
            ctx.update(task, new)
        return again if new.status.state == "Active" else None

    def _attempt_failed(self, task: TransferTask, failed: list[TransferItemFailure], message: str,
                        now: datetime) -> None:
        ns = task.status
        carried = [f for f in ns.failed_items if f.permanent]
        merged = sorted(carried + failed, key=lambda f: f.index)
        ns.last_progress_time = now
        remove_condition(ns.conditions, STALLED)
        if any(not f.permanent for f in failed) and ns.attempts < self.max_attempts:
            ns.state, ns.provider_task_id, ns.failed_items = "Pending", None, merged
            ns.message = (f"attempt {ns.attempts} of {self.max_attempts}: {len(failed)} item(s) failed "
                          f"({message}); retrying")
        else:
            self._fail(task, merged, message, now)

    def _fail(self, task: TransferTask, failed: list[TransferItemFailure], message: str, now: datetime) -> None:
        ns = task.status
        ns.state, ns.failed_items, ns.last_progress_time = "Failed", failed, now
        ns.message = f"failed after {ns.attempts} attempt(s): {message}"
        remove_condition(ns.conditions, STALLED)

    def _check_stall(self, task: TransferTask, now: datetime) -> None:
        ns = task.status
        age = _age(ns.last_progress_time or ns.submit_time, now)
        if age >= self.stall_after:
            set_condition(ns.conditions, STALLED, "True", "NoProgress",
                          f"no progress for {int(age)}s ({ns.bytes_transferred} bytes, {ns.files_transferred} "
                          f"file(s) so far; provider says: {ns.message or 'nothing'})", now)

    # --- garbage collection ------------------------------------------------------------

    def _collect(self, task: TransferTask, ctx: Context) -> Result | None:
        """Delete a finished task ``ttl_after_finished`` after it ended, unless a job still
        waits on it (the job reconciler reads its outcome)."""
        age = _age(task.status.last_progress_time, utcnow())
        if age < self.ttl_after_finished:
            return Result(requeue_after=self.ttl_after_finished - age)
        jobs: Informer[Job] = ctx.caches["Job"]
        waiting = WAITING[task.spec.direction]
        for item in task.spec.items:
            job = jobs.get(item.job)
            if job is not None and job.status.state is waiting and item.job_uid in (None, job.metadata.uid):
                return Result(requeue_after=self.ttl_after_finished)
        ctx.delete(task)
        return None
