"""Jobs as futures: ``job.result()``, ``done()``, ``Job.objects.wait()`` / ``as_completed()``.

Everything that waits, waits on ONE set of store watches per (store, namespace) in the process
— the :class:`JobWatcher` — on index entries, not on the jobs: the terminal states' entries
(``/index/jobs/state/<ns>/JOB_FINISHED/<name>``, ``FAILED``; a job's entry appears when it
ends) and the App index (a job's entry vanishes when the job is deleted). A job is written
4-6 times on its way (created, bound, running, finished, the manager's steps); its entries
there change twice (created, finished), and carry no value: the watch reads no job's bytes
until one it names is waited for, then reads the jobs a batch of entry events names in one
``get_many`` and decodes each once. A thousand outstanding futures cost one set of watches
and one dictionary lookup per entry event. Nothing polls the store: a waiter subscribes its
names (the watches are opened first if needed), then reads their current state once (one
``get_many`` of the jobs and their terminal entries: only a job with such an entry is
decoded), then takes what the watches deliver. They are closed again after ``IDLE_CLOSE``
seconds without waiters.

The watches are the store's one list-watch, :class:`store.reflector.Reflector` (issue 13),
one per prefix, resumed at the revision taken before the waiters' first read and listing
nothing: a compaction, a broken stream or a store that restarts makes each relist (after its
jittered backoff), and on its SYNC every waited-for job is read again, as a waiter's first
read does — what ended meanwhile is found by that read, what ends later by the watch.

Completion order: jobs already finished when a wait starts come first, in the order of their
last write (resourceVersion); then each job as its terminal write arrives.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import store as st
from store.reflector import Reflector

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


class _Running(threading.Event):
    """The ``stop`` of one generation's reflectors: set once the watcher closed or reopened
    them, or (decided here, under the watcher's lock) once it had no waiter for
    ``IDLE_CLOSE`` seconds. The reflectors ask at every poll and every 50 ms of a backoff."""

    def __init__(self, watcher: JobWatcher, gen: int) -> None:
        super().__init__()
        self.watcher = watcher
        self.gen = gen

    def is_set(self) -> bool:
        w = self.watcher
        with w._lock:
            if self.gen != w._gen:
                return True
            if w._sinks:
                w._idle_since = None
                return False
            now = time.monotonic()
            w._idle_since = w._idle_since or now
            if now - w._idle_since < IDLE_CLOSE:
                return False
            w._close()
            return True


class JobWatcher:
    """The store watches (:func:`watched_prefixes`) shared by every waiter of the process in
    one namespace: one :class:`store.reflector.Reflector` per prefix (key-only deltas, no
    list of the prefix: a relist is a re-read of the waited-for jobs), each on a thread, one
    generation for the set (opened, and closed when idle, together)."""

    def __init__(self, registry: Registry, namespace: str) -> None:
        self.registry = registry
        self.namespace = namespace
        self.prefixes = watched_prefixes(namespace)
        self._lock = threading.RLock()
        self._sinks: dict[str, set[_Sink]] = {}
        self._reflectors: list[Reflector[None]] = []
        self._gen = 0  # bumped whenever the set of reflectors is closed or opened
        self._idle_since: float | None = None
        self.watches_opened = 0  # for tests: how many sets of store watches this watcher opened
        self.resyncs = 0  # for tests: how many times a relist made it re-read every waited-for job

    # waiters' side

    def subscribe(self, names: Sequence[str], sink: _Sink, held: Mapping[str, int] | None = None) -> None:
        """Deliver ``(name, job)`` to ``sink`` when each job is terminal (``job`` None: deleted).
        Jobs terminal already are delivered now, in the order of their last write. ``held``:
        the revisions of the waiter's own copies that are not terminal — a job still stored
        at that revision is not terminal, and is not looked at further."""
        with self._lock:
            for n in names:
                self._sinks.setdefault(n, set()).add(sink)
            try:
                if not self._reflectors:
                    self._open()
                # Under the lock, so the watch threads cannot deliver a later completion first.
                self._check(names, {sink}, held=held)
            except BaseException:  # the store is away: no waiter is left behind to keep the watches open
                self.unsubscribe(names, sink)
                raise

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
        """Start one reflector per prefix, all resumed at the store's revision now (under the
        lock): the waiters' read that follows sees everything up to there; the watches replay
        everything after."""
        try:
            rev = self.registry.store.current_revision()
        except st.Unavailable as e:
            raise StoreUnavailable(str(e)) from None
        self._gen += 1
        self._idle_since = None
        self.watches_opened += 1
        running = _Running(self, self._gen)
        for prefix, deletions in self.prefixes:
            r: Reflector[None] = Reflector(self.registry.store, prefix, keys_only=True, lists=False,
                                           poll_interval=1.0, on_unavailable=self._unavailable)
            self._reflectors.append(r)
            threading.Thread(target=self._run, args=(r, running, rev, deletions), daemon=True,
                             name=f"job-futures-{self.namespace}").start()

    def _close(self) -> None:
        """Close the reflectors (under the lock); their threads see the new generation and end."""
        self._gen += 1
        for r in self._reflectors:
            r.close()
        self._reflectors = []

    def _unavailable(self, err: Exception) -> None:
        log.info("job futures: watch failed (%s); re-reading %d waited-for job(s) once it is back",
                 err, len(self._sinks))

    def _run(self, r: Reflector[None], running: _Running, rev: int, deletions: bool) -> None:
        """One prefix's deltas, a batch at a time: the waited-for names a batch's entries name
        are read in one ``get_many``; after a relist (SYNC: compaction, a broken stream, a
        store that restarted) every waited-for job is re-read. A failed read asks the
        reflector for a relist: its SYNC brings the re-read again after the backoff."""
        try:
            self._follow(r, running, rev, deletions)
        except st.StoreError as e:  # not a relist's matter (the store object was closed): end
            log.info("job futures: the watch of %s ended: %s", r.prefix, e)
            with self._lock:
                if running.gen == self._gen:
                    self._close()  # the next waiter opens them again

    def _follow(self, r: Reflector[None], running: _Running, rev: int, deletions: bool) -> None:
        cut = len(r.prefix)
        want = "DELETED" if deletions else "ADDED"
        for batch in r.batches(resource_version=rev, stop=running):
            resync = False
            names: list[str] = []
            for d in batch:
                if d.type == "SYNC":
                    resync = True
                elif d.type == want:
                    names.append(d.key[cut:].rpartition("/")[2])
            with self._lock:
                if running.gen != self._gen:
                    return
                try:
                    if resync:
                        self.resyncs += 1
                        self._check(list(self._sinks), None)
                    elif names:
                        wanted = [n for n in dict.fromkeys(names) if n in self._sinks]
                        if wanted:
                            self._check(wanted, None, entries=False)
                except (StoreUnavailable, Forbidden) as e:
                    log.warning("job futures: cannot read the waited-for jobs: %s", e)
                    r.relist()

    def _check(self, names: Sequence[str], sinks: set[_Sink] | None, *, entries: bool = True,
               held: Mapping[str, int] | None = None) -> None:
        """Deliver those of ``names`` that are terminal or deleted, in the order of their last
        write. Reads the jobs (``get_many``); a job stored at the revision ``held`` gives is
        not terminal. ``entries``: decode only the jobs that have a terminal index entry (read
        in a second ``get_many``: one of a thousand jobs just created need not be decoded).
        Without (a batch of entry events named jobs that just ended): decode each job read;
        its state decides."""
        found: list[tuple[int, str, Any]] = []
        held = held or {}
        terminal = [index_prefix(Job, "state", self.namespace, s.value) for s in sorted(TERMINAL)]
        for i in range(0, len(names), _GET_CHUNK):
            chunk = list(names[i : i + _GET_CHUNK])
            ask: list[tuple[str, st.KeyValue]] = []
            for n, kv in zip(chunk, self._get_raw([object_key(Job, self.namespace, n) for n in chunk]), strict=True):
                if kv is None:
                    found.append((0, n, _DELETED))
                elif held.get(n) != kv.mod_revision:
                    ask.append((n, kv))
            if entries and ask:
                # Entries read after the jobs: one found now for a job read before it ended is
                # on the watch too (the name was subscribed before the read), so none is lost.
                have = self._get_raw([p + n for n, _ in ask for p in terminal])
                k = len(terminal)
                ask = [a for j, a in enumerate(ask) if any(have[j * k : (j + 1) * k])]
            for n, kv in ask:
                job = Registry.decode(Job, kv)
                if job.status.state in TERMINAL:
                    found.append((kv.mod_revision, n, job))
        found.sort(key=lambda t: t[0])
        for _, n, job in found:
            self._deliver(n, job, sinks)

    def _get_raw(self, keys: list[str]) -> list[st.KeyValue | None]:
        try:
            return self.registry.store.get_many(keys)
        except st.Unavailable as e:
            raise StoreUnavailable(str(e)) from None
        except st.Forbidden as e:
            raise Forbidden(str(e)) from None

    def _deliver(self, name: str, job: Any, only: set[_Sink] | None = None) -> None:
        for s in list(self._sinks.get(name, ())):
            if only is None or s in only:
                s.q.put((name, job))


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
        held = {(j.namespace, j.name): int(rv) for j in (js[0] for js in self.by_key.values())
                if (rv := j.metadata.resource_version) and j.status.state not in TERMINAL}
        done: list[tuple[str, list[str]]] = []
        try:
            for ns, names in by_ns.items():
                sink = self.sinks[ns] = _Sink()
                watcher_for(self.registry, ns).subscribe(names, sink, {n: held[ns, n] for n in names if (ns, n) in held})
                done.append((ns, names))
        except BaseException:
            for ns, names in done:
                watcher_for(self.registry, ns).unsubscribe(names, self.sinks[ns])
            raise
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


