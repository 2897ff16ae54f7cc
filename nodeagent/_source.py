"""The job source: what is bound to this node, as store events say, read only when named.

* **Events in.** One list-watch (``store.reflector.Reflector``, shared with the controllers'
  informer) on this node's ``boundnode`` index prefix (``/index/jobs/boundnode/<ns>/<node>/``):
  an ADDED/MODIFIED key is a job bound here, a DELETED one a job that stopped holding this
  node (finished, failed or re-queued by a user, unbound, deleted). The source reads
  (``get_many``) only the jobs those events name. A second one on the App prefix invalidates
  the supervisor's App cache; an allocation's agent also follows its BatchJob's key. Each
  runs on a thread that posts typed messages to the loop; after a compaction or a broken
  stream the reflector relists and reports the difference (deletes included).
* **Observe.** :meth:`JobSource.observe` brings what the agent does for a job in line with the
  job as just read: queue it for launch (this node first in its placement), account it (a
  multi-node job whose other node we are), cancel our run of it (moved away by a user or a
  reconciler), or write off a RUNNING job nobody here runs any more (an earlier agent's).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import store as st
from apis import RUNNABLE, App, BatchJob, Job, JobState, Placement, Registry, StoreUnavailable
from apis._registry import index_prefix, kind_prefix
from apis._windows import Window, window_key
from store.reflector import Reflector

from ._messages import AllocationChanged, AppsChanged, JobsChanged, Post, WindowChanged
from ._run import still_ours

if TYPE_CHECKING:
    from ._supervisor import Supervisor


def _nothing(value: bytes) -> None:
    """Index keys carry no value the agent needs: their names are the news."""

S = JobState

#: Largest number of jobs read in one ``get_many`` / written in one transaction.
CHUNK = 2000
#: BatchJob states in which its allocation is over: its agents stop.
ALLOCATION_OVER = ("finished", "submit_failed")


class JobSource:
    def __init__(self, registry: Registry, namespace: str, node: str, post: Post, log: logging.Logger, *,
                 batch_job: str | None = None) -> None:
        self.registry = registry
        self.store: st.Store = registry.store
        self.namespace = namespace
        self.node = node
        self.post = post
        self.log = log
        self.batch_job = batch_job
        self.supervisor: Supervisor  # set by the agent once both exist
        self.bound_prefix = index_prefix(Job, "boundnode", namespace, node)
        self.app_prefix = kind_prefix(App, namespace)
        self.batch_job_key = f"{kind_prefix(BatchJob, namespace)}{batch_job}" if batch_job else ""
        self.recheck: set[str] = set()  # jobs to read and observe
        self.launch_queue: deque[Job] = deque()  # bound here first, runnable, not launched yet
        self.queued: set[str] = set()  # names in launch_queue
        self.secondary: dict[str, Placement] = {}  # multi-node jobs whose other node we are
        self.mark_usage: Callable[[], None] = lambda: None  # the node's usage changed
        self.reads = 0
        self._reflectors: list[Reflector[None]] = []
        #: With claims on (``_claims.py``): this node's claim window key and the ``claimable``
        #: index are followed too; ``claimable_arrived`` is told of new keys (watch thread).
        self.claims = False
        self.claimable_arrived: Callable[[], None] = lambda: None
        #: Jobs we claimed (and queued as written): the boundnode PUT of our own claim needs
        #: no read.
        self.claimed: set[str] = set()

    # --- watches (threads) ---------------------------------------------------------------

    def open_watches(self, spawn_thread: Callable[..., None], closed: threading.Event) -> None:
        """One shared list-watch (``store.reflector``) per prefix, each on a thread of its
        own. A reflector lists before it watches and, after a compaction or a broken stream,
        relists and reports the difference itself, so nothing is missed or seen twice."""
        watched: list[tuple[str, str, Callable[[str], bool] | None]] = [
            (self.bound_prefix, "jobs", None), (self.app_prefix, "apps", None)]
        if self.batch_job_key:
            key = self.batch_job_key  # the prefix is the key: skip longer names under it
            watched.append((key, "batchjob", lambda k: k == key))
        if self.claims:
            wkey = window_key(self.namespace, self.node)
            watched.append((wkey, "window", lambda k: k == wkey))
            watched.append((index_prefix(Job, "claimable", self.namespace), "claimable", None))
        for prefix, what, keep in watched:
            r: Reflector[None] = Reflector(self.store, prefix, _nothing, key_filter=keep, deleted_values=False,
                                           on_unavailable=self._unavailable(prefix))
            self._reflectors.append(r)
            spawn_thread(self._reflect, f"watch-{what}", r, what, closed)

    def _unavailable(self, prefix: str) -> Callable[[Exception], None]:
        def say(e: Exception) -> None:
            self.log.warning("watch of %s failed: %s; relisting after a backoff", prefix, e)

        return say

    def _reflect(self, r: Reflector[None], what: str, closed: threading.Event) -> None:
        cut = len(r.prefix)
        for d in r.events(stop=closed):
            if d.type == "SYNC":
                continue
            name = d.key[cut:]
            if what == "jobs":
                self.post(JobsChanged((("DELETE" if d.type == "DELETED" else "PUT", name),)))
            elif what == "apps":
                self.post(AppsChanged((name,)))
                if self.claims:
                    self.claimable_arrived()  # a job that waited for its App here may be claimable now
            elif what == "claimable":
                if d.type != "DELETED":
                    self.claimable_arrived()
            elif what == "window":
                kv = d.kv
                if d.type == "DELETED" or kv is None:
                    self.post(WindowChanged(Window(), d.revision))
                else:
                    self.post(WindowChanged(Window.decode(kv.value), kv.mod_revision))
            else:
                self.post(AllocationChanged())

    def close(self) -> None:
        for r in self._reflectors:
            r.close()

    # --- the loop's side ----------------------------------------------------------------

    def on_events(self, msg: JobsChanged) -> None:
        runs = self.supervisor.runs
        claimed = self.claimed
        for typ, name in msg.events:
            if claimed and name in claimed:
                claimed.discard(name)
                if typ == "PUT":
                    continue  # our own claim, queued as written
            # A PUT is a (re)binding; a DELETE matters only for a job we hold.
            if typ == "PUT" or name in runs or name in self.secondary or name in self.queued:
                self.recheck.add(name)

    def resync(self) -> None:
        names = self.registry.index_names(Job, "boundnode", self.node, self.namespace)
        self.recheck.update(names)
        self.recheck.update(self.supervisor.runs)
        self.recheck.update(self.secondary)
        self.recheck.update(self.queued)

    def allocation_over(self) -> str:
        """Why our allocation is over ("" if it is not, or we have none): the BatchJob is
        finished (or submit_failed) or gone."""
        if not self.batch_job:
            return ""
        bj = self.registry.try_get(BatchJob, self.batch_job, self.namespace)
        if bj is None:
            return f"stopped: its BatchJob {self.batch_job} is gone"
        if bj.status.state in ALLOCATION_OVER:
            return f"stopped: its BatchJob {self.batch_job} is {bj.status.state}"
        return ""

    def read(self, names: list[str]) -> list[tuple[str, Job | None]]:
        out: list[tuple[str, Job | None]] = []
        for i in range(0, len(names), CHUNK):
            chunk = names[i : i + CHUNK]
            self.reads += 1
            out.extend(zip(chunk, self.registry.get_many(Job, chunk, self.namespace), strict=True))
        return out

    def do_recheck(self, *, stopping: bool) -> bool:
        """Read and observe every job named since the last turn; False if the store did not
        answer (the names stay for the next try)."""
        names, self.recheck = list(self.recheck), set()
        try:
            jobs = self.read(names)
        except StoreUnavailable as e:
            self.log.warning("reading jobs failed: %s; retrying", e)
            self.recheck.update(names)
            return False
        for name, job in jobs:
            self.observe(name, job, stopping=stopping)
        return True

    def observe(self, name: str, job: Job | None, *, stopping: bool) -> None:
        """Bring what we do for ``name`` in line with the job as just read."""
        sup = self.supervisor
        run = sup.runs.get(name)
        if run is not None:
            why = still_ours(run, job, self.node)
            if not why:
                assert job is not None
                if int(job.metadata.resource_version or 0) > int(run.snapshot.metadata.resource_version or 0):
                    run.snapshot = job
                return
            sup.cancel(run, why)
        placement = job.status.placement if job is not None else None
        if job is None or placement is None or self.node not in placement.nodes:
            self.drop_secondary(name)
            self.unqueue(name)
            return
        state = job.status.state
        first = placement.nodes[0] == self.node
        if state in RUNNABLE:
            if first:
                if name not in self.queued and not stopping:
                    self.enqueue(job)
                elif name in self.queued:
                    self._replace_queued(job)
            elif name not in self.secondary:
                self.secondary[name] = placement
                self.mark_usage()
        elif state is S.RUNNING:
            if first:
                # RUNNING here, but not by this agent: an earlier agent of this node died
                # with it. Nobody watches that process any more.
                sup.orphan(job)
            elif name not in self.secondary:
                self.secondary[name] = placement
                self.mark_usage()
        else:
            self.drop_secondary(name)
            self.unqueue(name)

    def enqueue(self, job: Job) -> None:
        self.queued.add(job.name)
        self.launch_queue.append(job)

    def pop(self) -> Job:
        job = self.launch_queue.popleft()
        self.queued.discard(job.name)
        return job

    def drop_secondary(self, name: str) -> None:
        if self.secondary.pop(name, None) is not None:
            self.mark_usage()

    def _replace_queued(self, job: Job) -> None:
        for i, j in enumerate(self.launch_queue):
            if j.name == job.name:
                self.launch_queue[i] = job
                return

    def unqueue(self, name: str) -> None:
        if name in self.queued:
            self.queued.discard(name)
            self.launch_queue = deque(j for j in self.launch_queue if j.name != name)

    def clear_queue(self) -> None:
        self.launch_queue.clear()
        self.queued.clear()
