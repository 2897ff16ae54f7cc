"""The reconcile contract, and the controller that drives a reconciler from a work queue.

A reconciler is controller-runtime's ``Reconcile(ctx, Request) (Result, error)``:

* The request carries only a name — never the event. Reconcile is level-based: read the
  object from the informer cache, compare with the world, and record ONE step with
  ``ctx.update(old, new)`` / ``ctx.create(obj)`` / ``ctx.delete(obj)``.
* Returning normally means done. Raising an exception means "requeue with backoff".
  ``Result(requeue_after=s)`` means "look again in s seconds". ``TerminalError`` means
  "do not retry" (it is logged).
* A reconciler never sleeps, loops or retries on its own: the queue does that.

The controller takes up to ``batch_size`` keys at once and writes all their recorded steps
in ONE store transaction — the hot path of a million jobs is a few hundred jobs per write —
falling back to one transaction per key when the batch conflicts; a key whose write
conflicts is requeued with backoff. Successful writes go through to the informer cache.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from apis import ApiError, Conflict, Job, NotFound, Registry, Resource
from apis._meta import set_field

from ._backoff import MAX_BACKOFF, STORE_TROUBLE
from ._events import EventRecorder, PendingEvent, job_events
from ._informer import Informer
from ._queue import ShutDown, WorkQueue

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Request:
    name: str
    namespace: str = "default"


@dataclass(frozen=True, slots=True)
class Result:
    requeue_after: float | None = None


class TerminalError(Exception):
    """Reconciling this request cannot succeed by retrying; it is logged and dropped."""


@dataclass
class Writes:
    creates: list[Resource] = field(default_factory=list)
    updates: list[tuple[Resource, Resource]] = field(default_factory=list)
    deletes: list[Resource] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.creates or self.updates or self.deletes)

    def extend(self, other: Writes) -> None:
        self.creates += other.creates
        self.updates += other.updates
        self.deletes += other.deletes


class Context:
    """What a reconcile call may use: the shared caches and a buffer for its one step."""

    def __init__(self, registry: Registry, caches: dict[str, Any]) -> None:
        self.registry = registry
        self.caches = caches
        self.writes = Writes()

    def cache(self, kind: type[Resource]) -> Any:
        return self.caches[kind.KIND]

    def update(self, old: Resource, new: Resource) -> None:
        self.writes.updates.append((old, new))

    def create(self, obj: Resource) -> None:
        self.writes.creates.append(obj)

    def delete(self, obj: Resource) -> None:
        self.writes.deletes.append(obj)


class Reconciler(Protocol):
    """One step of the lifecycle for one object. See the module docstring."""

    name: str

    def reconcile(self, req: Request, ctx: Context) -> Result | None: ...


def write_batch(registry: Registry, writes: Writes) -> list[Resource]:
    """Write every recorded step in ONE transaction (all or nothing); returns the written
    objects with their new resourceVersion."""
    created, updated = registry.write(writes.creates, writes.updates, writes.deletes)
    return [*created, *updated]


class Controller:
    """Runs one reconciler: a work queue, a worker thread, batched writes."""

    def __init__(
        self,
        reconciler: Reconciler,
        registry: Registry,
        caches: dict[str, Any],
        batch_size: int = 256,
        on_written: Callable[[list[Resource], list[Resource]], None] | None = None,
    ) -> None:
        self.reconciler = reconciler
        self.registry = registry
        self.caches = caches
        self.queue: WorkQueue[Request] = WorkQueue()
        self.batch_size = batch_size
        self._on_written = on_written
        self._thread: threading.Thread | None = None
        self.reconciles = 0
        self.errors = 0
        self.writes = 0
        self._store_failing = False  # said once per outage (see _store_trouble)
        self._store_delay = 0.0
        self.events = EventRecorder(registry, reconciler.name)

    @property
    def name(self) -> str:
        return self.reconciler.name

    def enqueue(self, req: Request) -> None:
        self.queue.add(req)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"controller-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.queue.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            try:
                batch = self.queue.get_batch(self.batch_size)
            except ShutDown:
                return
            try:
                self.process(batch)
            except STORE_TROUBLE as e:  # the store went away mid-batch: retried with backoff
                self._store_trouble(e, batch)
            except Exception:  # never let the worker die
                log.exception("controller %s: batch failed", self.name)
                for req in batch:
                    self.queue.add_rate_limited(req)
            finally:
                for req in batch:
                    self.queue.done(req)

    def process(self, batch: list[Request]) -> None:
        """Reconcile a batch of requests and write their steps (public for tests)."""
        per_key: list[tuple[Request, Writes]] = []
        for req in batch:
            ctx = Context(self.registry, self.caches)
            self.reconciles += 1
            try:
                result = self.reconciler.reconcile(req, ctx)
            except TerminalError as e:
                log.error("controller %s: %s/%s: %s (not retried)", self.name, req.namespace, req.name, e)
                self.queue.forget(req)
                continue
            except STORE_TROUBLE as e:
                self.errors += 1
                self._store_trouble(e, [req])
                continue
            except Exception as e:
                self.errors += 1
                delay = self.queue.add_rate_limited(req)
                log.warning("controller %s: %s: %s: retry in %.3fs", self.name, req.name, e, delay)
                continue
            if result is not None and result.requeue_after is not None:
                self.queue.add_after(req, result.requeue_after)
            if ctx.writes:
                per_key.append((req, ctx.writes))
            else:
                self.queue.forget(req)
        if not per_key:
            return
        merged = Writes()
        for _, w in per_key:
            merged.extend(w)
        self._annotate(merged)
        held = self._hold(merged)
        try:
            self._write(per_key, merged)
        finally:
            for cache, names in held:
                cache.release(names)

    def _hold(self, writes: Writes) -> list[tuple[Informer[Any], list[str]]]:
        """Tell the caches of the objects about to be written to hold their watch events until
        the writes are over: those events are then our own objects (``apply_local``), not
        decoded again, even when the watch brings them before the write returns."""
        by_cache: dict[int, tuple[Informer[Any], list[str]]] = {}
        for obj in [*writes.creates, *(old for old, _ in writes.updates)]:
            cache = self.caches.get(obj.KIND)
            if isinstance(cache, Informer):
                by_cache.setdefault(id(cache), (cache, []))[1].append(obj.name)
        held = list(by_cache.values())
        for cache, names in held:
            cache.hold(names)
        return held

    def _write(self, per_key: list[tuple[Request, Writes]], merged: Writes) -> None:
        try:
            written = write_batch(self.registry, merged)
            self.writes += 1
            self._written(written, merged.deletes)
            self._record_events(merged)
            for req, _ in per_key:
                self.queue.forget(req)
            return
        except STORE_TROUBLE as e:  # nothing was written: every key is tried again later
            self._write_failed(merged)
            self._store_trouble(e, [req for req, _ in per_key])
            return
        except (Conflict, NotFound, ApiError) as e:
            if len(per_key) == 1:
                self._write_failed(per_key[0][1])
                self.queue.add_rate_limited(per_key[0][0])
                log.debug("controller %s: %s: %s", self.name, per_key[0][0].name, e)
                return
        for req, w in per_key:  # the batch conflicted: write key by key
            try:
                written = write_batch(self.registry, w)
                self.writes += 1
                self._written(written, w.deletes)
                self._record_events(w)
                self.queue.forget(req)
            except (Conflict, NotFound, ApiError) as e:
                log.debug("controller %s: %s: %s", self.name, req.name, e)
                self._write_failed(w)
                self.queue.add_rate_limited(req)

    def _store_trouble(self, error: BaseException, reqs: list[Request]) -> None:
        """Retry ``reqs`` after the controller's outage backoff (0.1 s doubling to 5 s, not the
        per-key backoff, which grows to minutes: the keys are not at fault), and say so once
        per outage."""
        if not self._store_failing:
            self._store_failing = True
            log.warning("controller %s: store unavailable (%s); its keys are retried with backoff", self.name, error)
        self._store_delay = min(MAX_BACKOFF, max(0.1, self._store_delay * 2))
        for req in reqs:
            self.queue.add_after(req, self._store_delay)
    def _annotate(self, writes: Writes) -> None:
        """What every step written by a reconciler carries: ``status.observedGeneration``, the
        generation of the spec the reconciler acted on (kinds whose status has the field: Job,
        BatchJob), and for jobs the component that made each new state move (``history[].by``,
        describe's FROM)."""
        for old, new in writes.updates:
            st_new, st_old = getattr(new, "status", None), getattr(old, "status", None)
            if st_new is None or st_new is st_old or not hasattr(st_new, "observed_generation"):
                continue  # no status of its own to stamp (not a status copy): leave it alone
            if st_new.observed_generation != old.metadata.generation:
                set_field(st_new, "observed_generation", old.metadata.generation)
            if not isinstance(new, Job) or not isinstance(old, Job):
                continue
            prior = {id(e) for e in old.status.history[-8:]}
            for ev in reversed(new.status.history):
                if id(ev) in prior:
                    break
                if ev.by is None:
                    set_field(ev, "by", self.name)

    def _record_events(self, writes: Writes) -> None:
        pending: list[PendingEvent] = []
        for old, new in writes.updates:
            if isinstance(new, Job) and isinstance(old, Job):
                pending.extend(job_events(old, new))
        if pending:
            self.events.record(pending)

    def _write_failed(self, writes: Writes) -> None:
        """Tell a reconciler that keeps its own bookkeeping (placement) which steps did not land."""
        hook = getattr(self.reconciler, "on_write_failed", None)
        if hook is not None:
            names = [o.name for o in writes.creates] + [o.name for o, _ in writes.updates]
            hook(names + [o.name for o in writes.deletes])

    def _written(self, written: list[Resource], deleted: list[Resource]) -> None:
        self._store_delay = 0.0
        if self._store_failing:
            self._store_failing = False
            log.warning("controller %s: store reachable again", self.name)
        for obj in written:
            cache = self.caches.get(obj.KIND)
            if cache is not None:
                cache.apply_local(obj)
        if self._on_written is not None:
            self._on_written(written, deleted)
