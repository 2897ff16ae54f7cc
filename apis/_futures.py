"""Jobs as futures: ``job.result()``, ``done()``, ``Job.objects.wait()`` / ``as_completed()``.

Everything that waits, waits on ONE set of store watches per (store, namespace) in the process
— the :class:`JobWatcher` — on index entries, not on the jobs: the terminal states' entries
(``/index/jobs/state/<ns>/JOB_FINISHED/<name>``, ``FAILED``; a job's entry appears when it
ends) and the App index (a job's entry vanishes when the job is deleted). A job is written
4-6 times on its way (created, bound, running, finished, the manager's steps); its entries
there change twice (created, finished), and carry no value: the watch reads no job's bytes
until one it names is waited for and terminal, then reads and decodes that job once. A
thousand outstanding futures cost one set of watches and one dictionary lookup per entry
event. Nothing polls the store: a waiter subscribes its names (the watches are opened first
if needed), then reads their current state once (``get_many``), then takes what the watches
deliver. They are closed again after ``IDLE_CLOSE`` seconds without waiters.

Completion order: jobs already finished when a wait starts come first, in the order of their
last write (resourceVersion); then each job as its terminal write arrives.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import store as st

from ._context import bound_client
from ._context import current as current_client
from ._errors import Forbidden, StoreUnavailable
from ._kinds import Job
from ._outcome import JobDeleted, JobFailed, NoResult, outcome
from ._registry import Registry, index_prefix, object_key
from ._states import TERMINAL, JobState

__all__ = ["JobDeleted", "JobFailed", "NoResult", "WaitResult", "as_completed", "outcome", "wait", "wait_one"]

log = logging.getLogger(__name__)

IDLE_CLOSE = 5.0
_GET_CHUNK = 5000
_DELETED: Any = None


# --- the shared watch -----------------------------------------------------------------------

#: How a terminal job's stored value spells its state (the codec writes compact JSON; history
#: entries say ``"to"``, so these appear for ``status.state`` only, or inside user data).
_TERMINAL_MARKS = tuple(f'"state":"{s.value}"'.encode() for s in TERMINAL)


def maybe_terminal(value: bytes) -> bool:
    """Whether a job's stored value may be terminal: False only when it certainly is not.
    A waiter's first read of a thousand jobs just created decodes none of them. A job with no
    state written is CREATED; one whose state is not in the codec's compact form
    (``"state": "X"``, written by hand) is decoded to be sure."""
    if any(m in value for m in _TERMINAL_MARKS):
        return True
    return b'"state"' in value and b'"state":"' not in value


@dataclass(eq=False)
class _Sink:
    q: queue.SimpleQueue[tuple[str, Any]] = field(default_factory=queue.SimpleQueue)


def watched_prefixes(namespace: str) -> list[tuple[str, bool]]:
    """What the futures watch, as ``(prefix, deletions)``: the index entries of the terminal
    states (a job's entry appears there when it ends: a PUT), and the App index (a job's
    entry vanishes when the job is deleted: a DELETE). Index entries carry no value; a job
    is read only when one of its entries there names a waited-for job."""
    return [*((index_prefix(Job, "state", namespace, s.value), False) for s in sorted(TERMINAL)),
            (index_prefix(Job, "app", namespace), True)]


class JobWatcher:
    """The store watches (:func:`watched_prefixes`) shared by every waiter of the process in
    one namespace: one thread each, one generation for the set (reopened together)."""

    def __init__(self, registry: Registry, namespace: str) -> None:
        self.registry = registry
        self.namespace = namespace
        self.prefixes = watched_prefixes(namespace)
        self._lock = threading.RLock()
        self._sinks: dict[str, set[_Sink]] = {}
        self._watches: list[st.Watch] = []
        self._gen = 0  # bumped whenever the set of watches is closed or opened
        self._idle_since: float | None = None
        self.watches_opened = 0  # for tests: how many sets of store watches this watcher opened

    # waiters' side

    def subscribe(self, names: Sequence[str], sink: _Sink) -> None:
        """Deliver ``(name, job)`` to ``sink`` when each job is terminal (``job`` None: deleted).
        Jobs terminal already are delivered now, in the order of their last write."""
        with self._lock:
            for n in names:
                self._sinks.setdefault(n, set()).add(sink)
            if not self._watches:
                self._open()
            # Under the lock, so the watch threads cannot deliver a later completion first.
            self._check(names, {sink})

    def unsubscribe(self, names: Sequence[str], sink: _Sink) -> None:
        with self._lock:
            for n in names:
                s = self._sinks.get(n)
                if s is not None:
                    s.discard(sink)
                    if not s:
                        del self._sinks[n]

    # the watches

    def _open(self) -> None:
        """Open every watch from one revision and start a thread on each (under the lock)."""
        store = self.registry.store
        rev = store.current_revision()
        opened: list[st.Watch] = []
        try:
            for prefix, _ in self.prefixes:
                opened.append(store.watch(prefix, rev + 1, prev_values=False))
        except Exception:
            for w in opened:
                with contextlib.suppress(Exception):
                    w.close()
            raise
        self._gen += 1
        self._watches = opened
        self._idle_since = None
        self.watches_opened += 1
        for w, (_, deletions) in zip(opened, self.prefixes, strict=True):
            threading.Thread(target=self._run, args=(self._gen, w, deletions), daemon=True,
                             name=f"job-futures-{self.namespace}").start()

    def _close(self) -> None:
        """Close the watches (under the lock); their threads see the new generation and end."""
        self._gen += 1
        for w in self._watches:
            with contextlib.suppress(Exception):
                w.close()
        self._watches = []

    def _check(self, names: Sequence[str], sinks: set[_Sink] | None) -> None:
        found: list[tuple[int, str, Any]] = []
        for i in range(0, len(names), _GET_CHUNK):
            chunk = list(names[i : i + _GET_CHUNK])
            for n, kv in zip(chunk, self._get_raw(chunk), strict=True):
                if kv is None:
                    found.append((0, n, _DELETED))
                elif maybe_terminal(kv.value):  # a thousand jobs just created are not decoded
                    job = Registry.decode(Job, kv)
                    if job.status.state in TERMINAL:
                        found.append((kv.mod_revision, n, job))
        found.sort(key=lambda t: t[0])
        for _, n, job in found:
            self._deliver(n, job, sinks)

    def _get_raw(self, names: list[str]) -> list[st.KeyValue | None]:
        try:
            return self.registry.store.get_many([object_key(Job, self.namespace, n) for n in names])
        except st.Unavailable as e:
            raise StoreUnavailable(str(e)) from None
        except st.Forbidden as e:
            raise Forbidden(str(e)) from None

    def _deliver(self, name: str, job: Any, only: set[_Sink] | None = None) -> None:
        for s in list(self._sinks.get(name, ())):
            if only is None or s in only:
                s.q.put((name, job))

    def _run(self, gen: int, w: st.Watch, deletions: bool) -> None:
        while True:
            try:
                events = w.poll(1.0)
                if events:
                    self._handle(gen, events, deletions)
            except Exception as e:  # noqa: BLE001 - Compacted, a closed or failed watch: reopen
                self._reopen(gen, e)
                return
            with self._lock:
                if gen != self._gen:  # closed or reopened meanwhile
                    with contextlib.suppress(Exception):
                        w.close()
                    return
                if self._sinks:
                    self._idle_since = None
                    continue
                now = time.monotonic()
                self._idle_since = self._idle_since or now
                if now - self._idle_since >= IDLE_CLOSE:
                    self._close()
                    return

    def _handle(self, gen: int, events: list[st.Event], deletions: bool) -> None:
        """A waited-for job entered a terminal state (or lost its App entry): read it and
        deliver it if it is terminal (or gone). Its entry's event says which job, not that
        it still is so: the read decides."""
        want = "DELETE" if deletions else "PUT"
        with self._lock:
            if gen != self._gen:
                return
            names = [n for n in dict.fromkeys(e.kv.key.rpartition("/")[2] for e in events if e.type == want)
                     if n in self._sinks]
            if names:
                self._check(names, None)

    def _reopen(self, gen: int, err: Exception) -> None:
        """One of the watches failed: close them all, open them again and re-read every
        waited-for job (what ended meanwhile is found by the read)."""
        while True:
            with self._lock:
                if gen != self._gen:  # closed, or another thread reopened them
                    return
                self._close()
                gen = self._gen
                if not self._sinks:
                    return
                log.info("job futures: watch failed (%s); reopening and re-reading %d job(s)", err, len(self._sinks))
                try:
                    self._open()
                    self._check(list(self._sinks), None)
                    return
                except Exception as e2:  # noqa: BLE001 - the store is down: try again shortly
                    log.warning("job futures: cannot watch: %s", e2)
                    err = e2
                    gen = self._gen
            time.sleep(0.5)


_watchers: dict[tuple[int, str], JobWatcher] = {}
_watchers_lock = threading.Lock()


def watcher_for(registry: Registry, namespace: str) -> JobWatcher:
    key = (id(registry.store), namespace)
    with _watchers_lock:
        w = _watchers.get(key)
        if w is None or w.registry.store is not registry.store:
            w = _watchers[key] = JobWatcher(registry, namespace)
        return w


# --- waiting ---------------------------------------------------------------------------------


def _registry_of(jobs: Sequence[Job]) -> Registry:
    """The registry the jobs were loaded or saved through (ValueError for jobs of several
    stores); the current client's for jobs that remember none."""
    regs: dict[int, Registry] = {}
    for j in jobs:
        c = bound_client(j)
        if c is not None:
            reg = c.registry
            regs[id(reg.store)] = reg
    if len(regs) > 1:
        raise ValueError("cannot wait in one call for jobs of several stores")
    if regs:
        return next(iter(regs.values()))
    reg_: Registry = current_client().registry
    return reg_


class _Waiting:
    """Jobs being waited for, across namespaces: subscribe, take completions, unsubscribe."""

    def __init__(self, jobs: Sequence[Job], registry: Registry | None = None) -> None:
        self.registry = registry if registry is not None else _registry_of(jobs)
        self.by_key: dict[tuple[str, str], list[Job]] = {}
        for j in jobs:
            if not j.metadata.resource_version and not j.name:
                raise ValueError("cannot wait for a job that was never saved")
            self.by_key.setdefault((j.namespace, j.name), []).append(j)
        self.sinks: dict[str, _Sink] = {}
        self.done: dict[tuple[str, str], Any] = {}

    def __enter__(self) -> _Waiting:
        by_ns: dict[str, list[str]] = {}
        for ns, name in self.by_key:
            by_ns.setdefault(ns, []).append(name)
        for ns, names in by_ns.items():
            sink = self.sinks[ns] = _Sink()
            watcher_for(self.registry, ns).subscribe(names, sink)
        return self

    def __exit__(self, *exc: object) -> None:
        by_ns: dict[str, list[str]] = {}
        for ns, name in self.by_key:
            by_ns.setdefault(ns, []).append(name)
        for ns, names in by_ns.items():
            watcher_for(self.registry, ns).unsubscribe(names, self.sinks[ns])

    def take(self, timeout: float | None) -> list[tuple[str, str]]:
        """Newly completed (namespace, name) keys; [] on timeout. Blocks on the sinks."""
        out: list[tuple[str, str]] = []
        sinks = list(self.sinks.items())
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for ns, sink in sinks:
                while True:
                    try:
                        name, job = sink.q.get_nowait()
                    except queue.Empty:
                        break
                    self._record((ns, name), job, out)
            if out:
                return out
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return out
            if len(sinks) == 1:
                ns, sink = sinks[0]
                try:
                    name, job = sink.q.get(timeout=left)
                except queue.Empty:
                    return out
                self._record((ns, name), job, out)
            else:  # several namespaces (rare): wait on each in short turns
                ns, sink = sinks[0]
                try:
                    name, job = sink.q.get(timeout=min(0.05, left) if left is not None else 0.05)
                    self._record((ns, name), job, out)
                except queue.Empty:
                    sinks = sinks[1:] + sinks[:1]

    def _record(self, key: tuple[str, str], job: Any, out: list[tuple[str, str]]) -> None:
        if key in self.done or key not in self.by_key:
            return
        self.done[key] = job
        for obj in self.by_key[key]:
            if job is not None:
                obj._adopt(job)
            else:
                obj.__pydantic_private__["_deleted"] = True  # type: ignore[index]
        out.append(key)


def _failed(job: Any) -> bool:
    return job is None or job.status.state is JobState.FAILED


@dataclass
class WaitResult:
    done: list[Any]
    not_done: list[Any]


def wait(jobs: list[Job], return_when: str = "ALL_COMPLETED", timeout: float | None = None,
         registry: Registry | None = None) -> WaitResult:
    """``Job.objects.wait``: see ``apis.Manager.wait``. ``registry`` None: the jobs' own."""
    if return_when not in ("FIRST_COMPLETED", "FIRST_EXCEPTION", "ALL_COMPLETED"):
        raise ValueError(f"return_when must be FIRST_COMPLETED, FIRST_EXCEPTION or ALL_COMPLETED, not {return_when!r}")
    deadline = None if timeout is None else time.monotonic() + timeout
    with _Waiting(jobs, registry) as w:
        total = len(w.by_key)
        while len(w.done) < total:
            if return_when == "FIRST_COMPLETED" and w.done:
                break
            if return_when == "FIRST_EXCEPTION" and any(_failed(j) for j in w.done.values()):
                break
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            w.take(left)
        done_keys = set(w.done)
    return WaitResult(done=[j for j in jobs if (j.namespace, j.name) in done_keys],
                      not_done=[j for j in jobs if (j.namespace, j.name) not in done_keys])


def as_completed(jobs: list[Job], timeout: float | None = None, registry: Registry | None = None) -> Iterator[Job]:
    """``Job.objects.as_completed``: see ``apis.Manager.as_completed``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    waiting = _Waiting(jobs, registry)
    total = len(waiting.by_key)
    yielded = 0
    with waiting as w:
        while yielded < total:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise concurrent.futures.TimeoutError(f"{total - yielded} (of {total}) jobs did not finish in time")
            for key in w.take(left):
                for obj in w.by_key[key][:1]:
                    yielded += 1
                    yield obj


def wait_one(job: Job, timeout: float | None, registry: Registry | None = None) -> None:
    """Block until ``job`` is terminal (updating it in place); TimeoutError past ``timeout``."""
    if job.status.state in TERMINAL:
        return
    res = wait([job], timeout=timeout, registry=registry)
    if res.not_done:
        raise concurrent.futures.TimeoutError(f"job {job.name} did not finish within {timeout}s "
                                              f"(it is {job.status.state.value})")


