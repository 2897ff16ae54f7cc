"""The placement scheduler: binds PREPROCESSED / RESTART_READY jobs to nodes.

It has kube-scheduler's shape (controllers/placement/scheduler.py): informer events feed its
own :class:`SchedulingQueue` (an entry built at event time, a job's end, its binding seen; the
rest marked for the pass to read); a pass places the queue with the packing engine; bindings
are *assumed* in the engine at once and written in one batch by :func:`bind`, which forgets
(room back, job re-queued) every binding that did not land. The other steps of a pass (the
Waiting/Unschedulable conditions, moving the jobs of lost nodes on) are level-based and go
through the controller like any reconciler's; a step whose write did not land is seen as such
at the next pass (the cached job still has the revision it was decided on) and looked at again.

One request per namespace ("the allocation"): every relevant change (a job becomes runnable
or leaves a node, a node comes or goes, a batch job's selector changes) enqueues the same key,
so bursts of events collapse into one pass. A pass

1. syncs the :class:`Packer` with the informer caches — nodes added/removed, what the events
   since the last pass said (an ended job's room back by name, new entries queued) and the
   jobs marked (so a pass does not re-read 100k bound jobs);
2. moves the jobs of vanished nodes on (every node the Job cache's node index names that is
   not registered: level-based) (RUNNING → RUN_TIMEOUT "node X lost", bound but not
   started → unbound) so nothing strands when an agent dies;
3. places the queue in priority order (higher ``spec.priority`` first, then oldest) and
   writes every binding in one transaction (job by job on a conflict);
4. marks jobs that no node of the allocation could ever hold ``Unschedulable`` with the reason
   in words, and clears that condition when it no longer holds;
5. gives a job that could fit but waits a ``Waiting`` condition: ``WaitingForCapacity`` ("needs
   4 idle CPUs on one node; every node that could hold it is busy"), ``HeldByPriority`` (jobs of
   higher priority wait for the same room and go first) or ``NoNodes``. Its words stay the same
   while the situation does, and it is written only when it changes (a job bound clears it in
   its binding write), so a long backlog costs one write per job, not one per pass.

Given the manager's hook runner (``hooks``), it also releases the jobs whose every step up to
PREPROCESSED is a no-op (``controllers/_steps.steps_to_preprocessed``: parents all finished or
none, no stage-in, an App without a ``preprocess`` hook, not suspended) straight from CREATED,
AWAITING_PARENTS or READY: they are queued like PREPROCESSED jobs, and the one write the pass
makes for such a job — its binding, or its Waiting/Unschedulable condition — carries the
collapsed steps (… → READY → STAGED_IN → PREPROCESSED, each in the history with its time and
message). The dependency reconciler, built with ``placement_binds_ready``, leaves those jobs
alone; every other job still comes here as PREPROCESSED (issue 19).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from apis import (
    App,
    BatchJob,
    Condition,
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
from apis._codec import shallow_copy
from apis._errors import ApiError, Conflict, NotFound, StoreUnavailable
from apis._reasons import NO_NODE_AGENT
from apis._states import PRE_READY, TERMINAL

from .._controller import Context, Request, Result
from .._informer import Informer
from .._jobcache import crossed_an_end, jobs_of_app
from .._steps import PARENT_CONDITIONS, cached_release_steps, collapsed_fields, take_release_steps
from ..hooks import HookRunner
from .packing import (
    JobShape,
    NodeOccupancy,
    Outcome,
    Packer,
    PlacementConflict,
    PlacementRequest,
    UnknownNode,
)
from .scheduler import (
    CONFIRMED,
    GONE,
    AssumeCache,
    QueueWalk,
    SchedulingQueue,
    StatusPatch,
    bind,
)
from .windows import ClaimWindows, never_fits_reason

KEY = "placement"
RUNNABLE = (JobState.PREPROCESSED, JobState.RESTART_READY)
HOLDING = (JobState.PREPROCESSED, JobState.RESTART_READY, JobState.RUNNING)


def holds_resources(job: Job) -> bool:
    """A job holds room on its nodes while bound (not yet started) or running."""
    return job.status.placement is not None and bool(job.status.placement.nodes) and job.status.state in HOLDING


_NOT_KEPT_WHEN_BOUND = ("Unschedulable", "Waiting")
#: ... and when it is released by placement (the dependency reconciler's conditions too).
_NOT_KEPT_WHEN_RELEASED = ("Unschedulable", *PARENT_CONDITIONS)
#: The GPU ids of a placement without GPUs: one empty list, shared (nothing edits a placement's
#: lists in place: a status edit assigns a new one).
_NO_IDS: list[int] = []


#: The conditions of a job bound that had none but the ones a binding drops: one empty list,
#: shared (nothing edits a cached object's list in place; ``status_copy`` copies it).
_NO_CONDITIONS: list[Condition] = []
_PLACEMENT_FIELDS_SET = set(Placement.model_fields)  # every field set: shared (adding one changes nothing)
_new_object, _set_attr = object.__new__, object.__setattr__


def _says(fields: dict[str, Any], words: tuple[str, str]) -> bool:
    """Whether a Waiting patch's ``fields`` say ``words`` (its Waiting condition is its last)."""
    c = fields["conditions"][-1]
    return c.reason == words[0] and c.message == words[1]


def released_fields(job: Job, fields: dict[str, Any], steps: list[tuple[JobState, str]], now: Any) -> dict[str, Any]:
    """A binding's ``fields`` for a job placement releases as well: the collapsed ``steps``
    (state, message, history) and the parents' conditions gone."""
    conds = [c for c in fields["conditions"] if c.type not in _NOT_KEPT_WHEN_RELEASED]
    return {**fields, **collapsed_fields(job, steps, now, KEY), "conditions": conds}


def patched(job: Job, fields: dict[str, Any]) -> Job:
    """``job`` with the status ``fields`` of a patch assigned (what the store holds once a
    patch of the binder lands; its watch event decodes the same)."""
    return shallow_copy(job, {"status": shallow_copy(job.status, fields)})


def _unschedulable_message(job: Job) -> str | None:
    """The message of ``job``'s Unschedulable condition (None without one): another writer
    that drops or rewrites it must bring the job back to the scheduler, which writes it."""
    conds = job.status.conditions
    if not conds:
        return None
    cond = get_condition(conds, "Unschedulable")
    return cond.message if cond is not None else None


def wants_placement(job: Job) -> bool:
    return job.status.state in RUNNABLE and not holds_resources(job) and not job.spec.suspend


class PlacementReconciler:
    name = "placement"

    def __init__(self, hooks: HookRunner | None = None, *, claim_windows: bool = True) -> None:
        #: Given, placement releases jobs whose steps up to PREPROCESSED are no-ops (the
        #: dependency reconciler must then be built with ``placement_binds_ready``).
        self.hooks = hooks
        #: Lend nodes whose agents acquire to them (``windows.py``); False: bind every job here.
        self.claim_windows = claim_windows
        self.bindings_written = 0
        self._new_term()

    def _new_term(self) -> None:
        """Everything placement knows comes from one term's informers: a controller manager
        that lost its lease and leads again registers the same reconciler on new informers,
        which list afresh, so nothing assumed, queued or remembered from the old term stays."""
        self._apps: Informer[App] | None = None
        self._jobs: Informer[Job] | None = None
        self.packer = Packer()
        self.queue = SchedulingQueue()
        self.assume = AssumeCache(self.packer, self.queue)
        self._lock = threading.Lock()
        self._full_sync = True
        #: Which batch jobs a job may use, as of the last pass (or registration): the event
        #: handler builds queue entries with it; a selector change rebuilds them all.
        self._allowed: Callable[[Job], frozenset[str | None] | None] | None = None
        self._requests_stale = False
        self._shapes: dict[tuple[Any, ...], JobShape] = {}
        self._templates: dict[tuple[JobShape, frozenset[str | None] | None], PlacementRequest] = {}
        self._unschedulable: dict[str, str] = {}  # jobs carrying the condition -> its message
        # Waiting conditions of this pass and words -> (the condition, the patch of a job that had
        # no condition: shared, as nothing edits a written list in place)
        self._conditions: dict[tuple[str, str, Any], tuple[Condition, dict[str, Any]]] = {}
        self._nodes_changed = False
        # Jobs this pass recorded a (non-binding) step for -> the revision it was decided on:
        # all of them are looked at again next pass (whether the step landed or not).
        self._stepped: dict[str, str | None] = {}
        # Waiting conditions this scheduler wrote itself (not written through): job -> its patch
        # (the cached version it was written over, the fields; its words are the last
        # condition's), so a pass before its watch event arrives does not write it again. The
        # pair is the one in ``_waits``: no tuple or second dict entry of its own per job (a
        # first pass gives 10^5 waiting jobs their words).
        self._waiting_sent: dict[str, StatusPatch] = {}
        self._waits: list[StatusPatch] = []
        self._wait_names: list[str] = []  # the names of ``_waits``' jobs, in step (no second read of each job)
        self._words: dict[tuple[str, bool], tuple[str, str]] = {}  # (engine's why, held) -> (reason, message)
        # Claim windows (windows.py): made at the first pass (it needs the store); the nodes
        # lent to their agents or not acknowledged back (read by the event handler: replaced
        # whole, never edited); queued multi-node jobs (they keep the windows closed).
        self.windows: ClaimWindows | None = None
        self._held: frozenset[str] = frozenset()
        self._engine_jobs: set[str] = set()

    def register(self, informers: dict[str, Informer[Any]], enqueue: Callable[[Request], None]) -> None:
        self._new_term()
        jobs: Informer[Job] = informers["Job"]
        ns = jobs.namespace
        releases = self.hooks is not None
        self._jobs, self._apps = jobs, informers.get("App")

        def on_job(typ: str, old: Job | None, new: Job | None) -> None:
            releasable = releases and self._mark_releasable(jobs, old, new)
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
                    and _unschedulable_message(old) == _unschedulable_message(new)
                )
                relevant = not same
            if relevant and self._note((new or old).name, new):  # type: ignore[union-attr]
                enqueue(Request(KEY, ns))
            elif releasable:
                enqueue(Request(KEY, ns))

        def on_other(typ: str, old: Any, new: Any) -> None:
            if typ != "MODIFIED" or old is None or new is None or old.spec != new.spec:
                enqueue(Request(KEY, ns))

        def on_batchjob(typ: str, old: Any, new: Any) -> None:
            if (old.spec.selector if old else None) != (new.spec.selector if new else None):
                with self._lock:
                    self._requests_stale = True  # which batch jobs a job may use has changed
            on_other(typ, old, new)

        replayed = False

        def on_app(typ: str, old: App | None, new: App | None) -> None:
            # A job whose App was not cached when a pass looked at it was left out; once the App
            # arrives (or changes), its pre-READY jobs are looked at again. (Not the Apps replayed
            # at registration: the first pass is a full one and looks at every job.)
            if not replayed or (old is not None and new is not None and old.spec == new.spec):
                return
            marked = [j.name for j in jobs_of_app(jobs, (new or old).name, PRE_READY)]  # type: ignore[union-attr]
            if marked:
                self.queue.mark(*marked)
                enqueue(Request(KEY, ns))

        self._allowed = self._allowed_fn(informers["BatchJob"])
        jobs.add_handler(on_job)  # type: ignore[arg-type]
        if releases and self._apps is not None:
            self._apps.add_handler(on_app)  # type: ignore[arg-type]
            replayed = True
        def on_node(typ: str, old: Node | None, new: Node | None) -> None:
            if old is not None and new is not None and typ == "MODIFIED" and old.spec == new.spec and (
                    old.status.window_ack != new.status.window_ack
                    or old.status.claims_through != new.status.claims_through):
                enqueue(Request(KEY, ns))  # an agent acknowledged a closed window
            else:
                on_other(typ, old, new)

        informers["Node"].add_handler(on_node)  # type: ignore[arg-type]
        informers["BatchJob"].add_handler(on_batchjob)
        enqueue(Request(KEY, ns))

    def _mark_releasable(self, jobs: Informer[Job], old: Job | None, new: Job | None) -> bool:
        """Mark a job that placement may release (a pre-READY job that changed, or left), and
        the pre-READY children of a job that reached, or left, an end; True when it marked
        some (the pass decides)."""
        marked = False
        if new is not None and new.status.state in PRE_READY:
            self.queue.mark(new.name)
            marked = True
        elif old is not None and old.status.state in PRE_READY:
            self.queue.mark(old.name)  # left (its entry goes unless it is RUNNABLE now)
            marked = True
        if old is not None and new is not None and old.status.state == new.status.state:
            return marked
        cur = new or old
        if cur is not None and crossed_an_end(old, new) and jobs.indexed("children", cur.name):
            kids = [c.name for c in jobs.by_index("children", cur.name) if c.status.state in PRE_READY]
            if kids:
                self.queue.mark(*kids)
                marked = True
        return marked

    def _note(self, name: str, new: Job | None) -> bool:
        """What an event of a job placement cares about means for the next pass, decided on
        the informer's thread (kube-scheduler's queue is fed by its event handlers), so a pass
        does what changed without reading the job again: it ended or left (``GONE``: its room
        back by name), it shows the binding the scheduler assumed (``CONFIRMED``), or it waits
        for room (its queue entry, built here). Anything else is marked: the pass reads the
        cache (level-based; so does a relist, whose differences arrive as events). False when
        the event needs no pass: a job that started on exactly the room the engine holds for it."""
        queue = self.queue
        if new is None:
            queue.note(name, GONE)
            return True
        st = new.status
        state = st.state
        if state in TERMINAL:
            queue.note(name, GONE)
            return True
        p = st.placement
        if p is not None and p.nodes:
            if p.nodes[0] in self._held and name not in self.assume.assumed:
                # Started by its node's agent in a claim window: out of every book here (the
                # engine does not account a lent node; it syncs the node when it is back).
                queue.note(name, GONE)
                return name in queue.entries or name in self._unschedulable or name in self._waiting_sent
            if state in HOLDING:
                held = self.packer.binding(name)
                if held is not None and held[2] == tuple(p.nodes) and held[3] == tuple(p.cpus) and \
                        held[4] == tuple(p.gpus) and held[5] == p.occupancy:  # the room the engine holds
                    if name in self.assume.assumed:
                        queue.note(name, CONFIRMED)  # our binding (bound, or started already)
                        return True
                    return False  # started where it was bound (and confirmed): nothing changed here
            queue.mark(name)
            return True
        allowed = self._allowed
        if state in RUNNABLE and allowed is not None and not new.spec.suspend:
            conds = st.conditions
            cond = get_condition(conds, "Unschedulable") if conds else None
            ts = new.metadata.creation_timestamp
            key = (-new.spec.priority, ts.timestamp() if ts else 0.0, name)
            queue.note(name, (key, self._template(new, allowed(new)), cond.message if cond is not None else None))
            return True
        queue.mark(name)
        return True

    def release_steps(self, job: Job) -> list[tuple[JobState, str]] | None:
        """The collapsed steps with which placement releases ``job`` (None: not its to release)."""
        if self.hooks is None or self._apps is None or self._jobs is None:
            return None
        return cached_release_steps(job, self._apps, self._jobs, self.hooks)

    # --- sync ----------------------------------------------------------------------------

    def _shape(self, job: Job) -> JobShape:
        r = job.spec.resources
        key = (r.num_nodes, r.ranks_per_node, r.threads_per_rank, r.threads_per_core, r.gpus_per_rank,
               r.node_packing_count)
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._shapes[key] = JobShape.from_resources(r)
        return shape

    def _template(self, job: Job, allowed: frozenset[str | None] | None) -> PlacementRequest:
        """The request of ``job``'s packing group (shape, selector), one per group: the queue
        holds ``(name, template)`` and no request object per job."""
        shape = self._shape(job)
        t = self._templates.get((shape, allowed))
        if t is None:
            if len(self._templates) > 4096:
                self._templates.clear()
            t = self._templates[(shape, allowed)] = PlacementRequest("", shape, allowed)
        return t

    def _sync_nodes(self, nodes: Informer[Node]) -> list[str]:
        """Add new nodes, remove vanished ones; returns the names of vanished nodes."""
        live = {n.name: n for n in nodes.items()}
        gone = [n.name for n in self.packer.nodes() if n.name not in live]
        for name in gone:
            self.packer.remove_node(name)
        added = 0
        held = self._held
        for name, node in live.items():
            if name not in self.packer and name not in held:
                self.packer.add_node(NodeOccupancy(name, node.spec.cpus, node.spec.gpus, node.spec.batch_job))
                added += 1
        self._nodes_changed = bool(gone or added)
        return gone

    def _place_while_room(self, dirty: set[str], full: bool) -> QueueWalk:
        """The queue in priority order (``SchedulingQueue.place``): all of it when ``full``, else
        in chunks (``chunk_sizes``) while some node has room; then the changed jobs not reached
        (their Unschedulable bookkeeping). A job not reached stays WAITING, which needs no
        write: with no room anywhere nothing behind it could be bound. So a pass over a 10k
        backlog on a full allocation costs what it binds, not 10k decisions (a full pass still
        runs when nodes or selectors change)."""
        queue = self.queue
        walk = queue.place(self.packer, full)
        if full or not dirty:
            return walk
        entries = queue.entries
        queued = [n for n in dirty if n in entries]  # usually none: the dirty jobs mostly ended
        if queued:
            seen = {d.job for d in walk.decisions}
            for names in walk.waits.values():
                seen.update(names)
            rest = sorted((entries[n][0], n) for n in queued if n not in seen)
            if rest:
                walk.decisions.extend(self.packer.place_pairs(queue.requests([n for _, n in rest])))
        return walk

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
        released = False  # some room changed hands since the last pass
        gone = set(self._sync_nodes(nodes))
        dirty = self.queue.take_marked()
        # Every job the last pass wrote a step for is looked at again. Its step may not have
        # landed: a conflict with a write whose event was still on its way (our own Waiting
        # condition, say) leaves the cache at a newer version than the one the step was
        # decided on, and that event changes nothing the handler marks for. The look is
        # cheap: the cache then shows the step (written through) or shows it missing, and
        # the Unschedulable memo is reset from what it shows.
        dirty.update(self._stepped)
        self._stepped = {}
        with self._lock:
            full, self._full_sync = self._full_sync, False
            stale, self._requests_stale = self._requests_stale, False
        allowed = self._allowed = self._allowed_fn(batchjobs)
        queue = self.queue
        track = self._track
        # What the events since the last pass said, applied without reading the jobs again.
        arrived: list[str] = []  # queued by their events since the last pass
        events = queue.take_events()
        if events:
            assumed = self.assume.assumed
            binding_of, release = self.packer.binding, self.packer.release
            unschedulable, entries = self._unschedulable, queue.entries
            entered: list[tuple[Any, ...]] = []  # the queue entries of ``arrived``, in step
            waiting_sent = self._waiting_sent
            for name, what in events.items():
                if what is GONE:  # ended or deleted: its room back, out of every book
                    if assumed:
                        assumed.pop(name, None)
                    if release(name):
                        # it held room: it left the queue and the condition books when it was
                        # bound (or synced as bound: ``_track`` dropped it), nothing to look up
                        released = True
                        continue
                    if name in entries:
                        del entries[name]
                    if unschedulable:
                        unschedulable.pop(name, None)
                    if waiting_sent:
                        waiting_sent.pop(name, None)
                elif what is CONFIRMED:  # our binding, seen as written: the engine holds it already
                    assumed.pop(name, None)
                elif stale or name in assumed or binding_of(name) is not None:
                    dirty.add(name)  # a binding to undo or to confirm first: the cache decides
                else:
                    arrived.append(name)
                    entered.append(what)
                    if what[1].shape.num_nodes > 1:
                        self._engine_jobs.add(name)
                    if what[2] is not None:
                        unschedulable[name] = what[2]
                    elif unschedulable:
                        unschedulable.pop(name, None)
            if arrived:
                queue.put_all(arrived, entered)
        if full:
            for name in list(self.packer.bound_jobs()):
                if name not in self.assume:
                    self._sync_job(jobs.get(name), name)
            # Bound jobs through the node index: a job that holds nothing has nothing to sync
            # (was every PREPROCESSED job: the whole backlog, 0.1 s at 10^5 waiting).
            for node_name in jobs.index_values("node"):
                for job in jobs.by_index("node", node_name):
                    if holds_resources(job):
                        self._sync_job(job, job.metadata.name or "")
        if dirty:
            # One look at each job marked since the last pass: the engine's room, then its
            # queue entry (unless the whole queue is rebuilt below).
            binding, release = self.packer.binding, self.packer.release
            assume = self.assume
            assumed = assume.assumed
            get = jobs.get
            for name in dirty:
                cached = get(name)
                if name in assumed and assume.confirm(cached, name):
                    continue  # our binding, seen as written: the engine holds it already
                st = cached.status if cached is not None else None
                if st is None or st.placement is None or not st.placement.nodes or st.state not in HOLDING:
                    if release(name):  # holds nothing (any more): its room, if any, is free
                        released = True
                else:
                    before = binding(name)
                    self._sync_job(cached, name)
                    if binding(name) is not before:
                        released = True
                if not stale:
                    track(cached, name, allowed)

        # Jobs of nodes that vanished (agent died, lease expired): move them on. Level-based:
        # every node a cached job is bound to that is not registered.
        live = set(nodes.names())
        lost_nodes = set(gone) | {v for v in jobs.index_values("node") if v not in live}
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
                self._step(ctx, job, new)

        # The queue, in priority order: built by the events (the registration's replay
        # included); rebuilt from the cache when the batch jobs' selectors changed.
        if stale:
            queue.clear()
            self._unschedulable.clear()
            for state in (*RUNNABLE, *PRE_READY) if self.hooks is not None else RUNNABLE:
                for job in jobs.by_index("state", state.value):
                    track(job, job.metadata.name or "", allowed)
        if self.claim_windows:
            was_open = self.windows is not None and self.windows.open
            windows = self._sync_windows(ctx, nodes, jobs, batchjobs)
            if windows.open:
                looked = list(queue.entries) if (full or stale or not was_open) else \
                    [*arrived, *(n for n in dirty if n in queue.entries)]
                self._open_pass(ctx, jobs, nodes, looked, now)
                return None
            if self._held:  # closing: the engine waits for every acknowledgement (it sees no lent node)
                return Result(requeue_after=0.02)
        if not len(queue):
            return None
        if not (full or stale or self._nodes_changed or lost_nodes or released or arrived) and \
                not any(name in queue for name in dirty):
            # Only jobs that left the queue changed (our own bindings written through, or
            # finished jobs that held nothing): no room was freed and nothing new waits.
            return None
        every = bool(full or stale or self._nodes_changed)  # a full walk decides every queued job
        walk = self._place_while_room(dirty.union(arrived) if arrived and not every else dirty, every)
        decisions = walk.decisions
        # the highest priority seen waiting so far in this pass (the walk's are in priority order)
        top_waiting: int | None = walk.top_waiting
        binds: list[StatusPatch] = []
        self._waits = []
        self._wait_names = []
        get, entries, unschedulable = jobs.get, queue.entries, self._unschedulable
        waiting_sent, assumed = self._waiting_sent, self.assume.assumed
        words_of = self._words
        shared: dict[tuple[str, str], dict[str, Any]] = {}  # words -> the patch of a job with no condition
        names: list[str] = []
        BOUND, WAITING = Outcome.BOUND, Outcome.WAITING
        cell: list[int] = [0]  # the revision this pass's bindings land at (AssumeCache: one per batch)
        for d in decisions:
            outcome, name = d[1], d[0]
            if outcome is BOUND:
                placed = get(name)
                if placed is None:
                    self.packer.release(name)
                    continue
                st = placed.status
                # The binding's status fields (placement, observedGeneration, the Waiting and
                # Unschedulable conditions gone), built here without validation or a copy of
                # the job: one per job bound; the decision's fields are the engine's own.
                conds = st.conditions
                if not conds or (len(conds) == 1 and conds[0].type in _NOT_KEPT_WHEN_BOUND):
                    conds = _NO_CONDITIONS  # the usual: none, or the Waiting one it had
                else:
                    conds = [c for c in conds if c.type not in _NOT_KEPT_WHEN_BOUND]
                # its Placement, made without validation (the engine's own values, of the right
                # types): pydantic's ``model_construct`` costs 4x
                # (its own fields dict filled in place: 15 % less than assigning a new one)
                placement = _new_object(Placement)
                gpus = d[4]
                pd = placement.__dict__
                pd["batch_job"] = d[6]
                pd["nodes"] = list(d[2])
                pd["cpus"] = list(d[3])
                pd["gpus"] = list(gpus) if gpus else _NO_IDS
                pd["occupancy"] = d[5]
                _set_attr(placement, "__pydantic_extra__", None)
                _set_attr(placement, "__pydantic_fields_set__", _PLACEMENT_FIELDS_SET)
                _set_attr(placement, "__pydantic_private__", None)
                fields = {"placement": placement, "observed_generation": placed.metadata.generation,
                          "conditions": conds}
                if st.state in PRE_READY:  # released in its binding: one write
                    steps = self.release_steps(placed)
                    if steps is None:  # no longer ours to release (its event marked it)
                        self.packer.release(name)
                        entries.pop(name, None)
                        continue
                    fields = released_fields(placed, fields, steps, now)
                binds.append((placed, fields))
                names.append(name)
                assumed[name] = (d[2], cell)  # AssumeCache.assume, inlined: one per binding
                entries.pop(name, None)
                if unschedulable:
                    unschedulable.pop(name, None)
                if waiting_sent:
                    waiting_sent.pop(name, None)
            elif outcome is WAITING:
                entry = entries.get(name)
                prio = -entry[0][0] if entry is not None else 0
                held = top_waiting is not None and prio < top_waiting
                if top_waiting is None or prio > top_waiting:
                    top_waiting = prio
                waiter = get(name)
                if waiter is not None:
                    st = waiter.status
                    words = words_of.get((d[7], held))
                    if words is not None and st.state not in PRE_READY:
                        patch = shared.get(words)
                        if patch is None:
                            patch = shared[words] = self._waiting_patch(words, now)[1]
                        if self._noted_waiting(name, waiter, words, patch):
                            continue
                self._set_waiting(ctx, waiter, d[7], held, top_waiting, now)
                if unschedulable:
                    unschedulable.pop(name, None)  # cleared by _set_waiting's write above
            else:  # never fits
                never = get(name)
                if unschedulable.get(name) != d[7] or (never is not None and never.status.state in PRE_READY):
                    self._set_unschedulable(ctx, never, d[7], now)
        if walk.waits:
            self._group_waits(ctx, walk, shared, now)
        queue.compact()
        landed = 0
        if binds:
            # No write-through: each binding's watch event confirms it (the assume cache holds
            # its room meanwhile), so a pass costs what the engine decides plus one patch per
            # binding, not a new Job, a cache update with its indexers and handlers. Written
            # before the Waiting conditions: an outage in between must not leave room assumed.
            written: list[Job] = []
            jobs.hold(names)  # their events wait for expect(): these objects, no decode (issue 19)
            try:
                landed = bind(ctx.registry, binds, self.assume, written, cell)
            except StoreUnavailable:
                for job, _ in self._waits:
                    self._forget_waiting(job.name)  # not written either: written again next pass
                self._waits = []
                self._wait_names = []
                raise
            finally:
                jobs.expect(written)
                jobs.release(names)
            self.bindings_written += landed
        if self._waits:
            self._write_waiting(ctx)
        if landed < len(binds):
            return Result(requeue_after=0.05)  # the forgotten ones wait in the queue again
        return None

    def _noted_waiting(self, name: str, waiter: Job, words: tuple[str, str], patch: dict[str, Any]) -> bool:
        """The usual Waiting of a job past PRE_READY, in the hot loops (the decision loop's WAITING
        branch and :meth:`_group_waits`): a job with no condition gets ``patch`` (the words'
        patch, shared by all such jobs of the pass) unless it is already queued with these
        words; one that says ``words`` already needs nothing. False: anything else, for
        :meth:`_set_waiting`."""
        conds = waiter.status.conditions
        if not conds:
            sent = self._waiting_sent.get(name)
            if sent is None or sent[0] is not waiter or (sent[1] is not patch and not _says(sent[1], words)):
                self._waiting_sent[name] = sent = (waiter, patch)
                self._waits.append(sent)
                self._wait_names.append(name)
        elif len(conds) > 1 or (c := conds[0]).type != "Waiting" or c.reason != words[0] or c.message != words[1]:
            return False
        if self._unschedulable:
            self._unschedulable.pop(name, None)
        return True

    def _group_waits(self, ctx: Context, walk: QueueWalk, shared: dict[tuple[str, str], dict[str, Any]],
                     now: Any) -> None:
        """The Waiting conditions of the jobs the walk did not offer (their group had no room):
        one words, one condition and one shared patch per (reason, held), and per job only the
        look at what it says now (the decision loop's WAITING branch, without a decision)."""
        get = ctx.caches["Job"].get
        unschedulable = self._unschedulable
        top = walk.top_waiting if walk.top_waiting is not None else 0
        for (why, held), names in walk.waits.items():
            words = self._words.get((why, held))
            if words is None:
                if len(self._words) > 256:
                    self._words.clear()
                words = self._words[(why, held)] = self._waiting_words(why, held)
            patch = shared.get(words)
            if patch is None:
                patch = shared[words] = self._waiting_patch(words, now)[1]
            noted = self._noted_waiting
            for name in names:
                waiter = get(name)
                if waiter is not None and waiter.status.state not in PRE_READY and noted(name, waiter, words, patch):
                    continue
                self._set_waiting(ctx, waiter, why, held, top, now)
                if unschedulable:
                    unschedulable.pop(name, None)

    # --- claim windows (windows.py) -----------------------------------------------------

    def _engine_pending(self) -> bool:
        """Whether a queued job needs the engine whatever the windows (a multi-node job)."""
        entries = self.queue.entries
        for name in list(self._engine_jobs):
            e = entries.get(name)
            if e is None or e[1].shape.num_nodes == 1:
                self._engine_jobs.discard(name)
        return bool(self._engine_jobs)

    def _sync_windows(self, ctx: Context, nodes: Informer[Node], jobs: Informer[Job],
                      batchjobs: Informer[BatchJob]) -> ClaimWindows:
        """Open or close the windows by their rules; a node lent (or not acknowledged back)
        leaves the engine, one acknowledged comes back with its jobs as the cache shows them."""
        windows = self.windows
        if windows is None:
            windows = self.windows = ClaimWindows(ctx.registry, jobs.namespace)
        node_list = nodes.items()
        want = ClaimWindows.want_open(node_list, batchjobs, self._engine_pending())
        before = self._held
        held = windows.sync(node_list, jobs, want)
        if held == before:
            return windows
        self._held = held
        packer = self.packer
        for name in held - before:
            if name in packer:
                packer.remove_node(name)
        for name in before - held:
            node = nodes.get(name)
            if node is None or name in packer:
                continue
            packer.add_node(NodeOccupancy(name, node.spec.cpus, node.spec.gpus, node.spec.batch_job))
            for job in jobs.by_index("node", name):
                if holds_resources(job):
                    self._sync_job(job, job.metadata.name or "")
        self._nodes_changed = True
        return windows

    def _open_pass(self, ctx: Context, jobs: Informer[Job], nodes: Informer[Node], names: Any, now: Any) -> None:
        """A pass while the windows are open: the agents take the jobs; placement writes only
        what no agent can: Unschedulable for a job no node could ever hold (the engine's words),
        and the release of a job whose parents just finished (CREATED or AWAITING_PARENTS: an
        agent claims it once it is PREPROCESSED). No Waiting condition is written for a job in
        a window: ``describe`` says why it waits at read time (kubectl_like/reasons.py)."""
        entries = self.queue.entries
        node_list: list[Node] | None = None
        never: dict[PlacementRequest, str | None] = {}  # per packing group (its shared template)
        self._waits = []
        self._wait_names = []
        for name in names:
            e = entries.get(name)
            job = jobs.get(name)
            if e is None or job is None:
                continue
            if e[1] in never:
                reason = never[e[1]]
            else:
                if node_list is None:
                    node_list = nodes.items()
                reason = never[e[1]] = never_fits_reason(node_list, name, e[1])
            state = job.status.state
            if reason is not None:
                if self._unschedulable.get(name) != reason or state in PRE_READY:
                    self._set_unschedulable(ctx, job, reason, now)
                continue
            if name in self._unschedulable:
                self._set_unschedulable(ctx, job, None, now)  # fits some node now
                continue
            if state is JobState.AWAITING_PARENTS or (state is JobState.CREATED and job.spec.parents):
                self._release_only(job, now)
        if self._waits:
            self._write_waiting(ctx)

    def _release_only(self, job: Job, now: Any) -> None:
        """Release ``job`` (collapsed steps to PREPROCESSED) with no binding and no condition:
        the agents claim it from there."""
        name = job.metadata.name or ""
        sent = self._waiting_sent.get(name)
        if sent is not None and sent[0] is job:
            return  # written over this very version already
        steps = self.release_steps(job)
        if steps is None:
            self._drop(name)
            return
        conds = [c for c in job.status.conditions if c.type not in _NOT_KEPT_WHEN_RELEASED]
        self._waiting_sent[name] = pair = (job, {"conditions": conds, **collapsed_fields(job, steps, now, KEY)})
        self._waits.append(pair)
        self._wait_names.append(name)

    def _write_waiting(self, ctx: Context) -> None:
        """The Waiting conditions of this pass as status patches in one transaction."""
        waits, self._waits = self._waits, []
        names, self._wait_names = self._wait_names, []
        written: list[Job] = []
        jobs = ctx.caches["Job"]
        jobs.hold(names)  # their events wait for expect(): these objects, no decode (issue 19)
        try:
            self._write_waits(ctx.registry, waits, written)
        finally:
            jobs.expect(written)
            jobs.release(names)

    def _write_waits(self, registry: Any, waits: list[StatusPatch], written: list[Job]) -> None:
        """Write ``waits`` in one transaction; on a conflict, each half on its own (a first
        pass writes ~10^5 of them: job by job would be 10^5 transactions for one moved job).
        One that does not land is forgotten and its job marked: the next pass looks again
        (level-based: the cache then shows why). An outage forgets them all and is raised."""
        try:
            registry.write_status_patches(waits, written=written)
            return
        except StoreUnavailable:
            for job, _ in waits:
                self._forget_waiting(job.name)
            raise
        except (Conflict, NotFound, ApiError):
            if len(waits) == 1:
                self._forget_waiting(waits[0][0].name)
                self.queue.mark(waits[0][0].name)
                return
        mid = len(waits) // 2
        try:
            self._write_waits(registry, waits[:mid], written)
        except StoreUnavailable:
            for job, _ in waits[mid:]:
                self._forget_waiting(job.name)
            raise
        self._write_waits(registry, waits[mid:], written)

    def _step(self, ctx: Context, job: Job, new: Job) -> None:
        """Record a level-based step (the controller writes it); looked at again next pass
        if it does not land."""
        self._stepped[job.name] = job.metadata.resource_version
        ctx.update(job, new)

    def _allowed_fn(self, batchjobs: Informer[BatchJob]) -> Callable[[Job], frozenset[str | None] | None]:
        """Which batch jobs' nodes a job may use (None: any), from the BatchJobs' selectors."""
        selectors = [(b.name, b.spec.selector) for b in batchjobs.items() if b.spec.selector]
        if not selectors:
            return lambda job: None
        unrestricted = {b.name for b in batchjobs.items() if not b.spec.selector}
        cache: dict[tuple[tuple[str, str], ...], frozenset[str | None]] = {}

        def allowed(job: Job) -> frozenset[str | None] | None:
            key = tuple(sorted(job.metadata.labels.items()))
            if key not in cache:
                ok = {name for name, sel in selectors if all(job.metadata.labels.get(k) == v for k, v in sel.items())}
                cache[key] = frozenset({None, *unrestricted, *ok})
            return cache[key]

        return allowed

    def _track(self, job: Job | None, name: str, allowed: Callable[[Job], frozenset[str | None] | None]) -> None:
        """Keep ``name``'s queue entry and Unschedulable bookkeeping in step with the cache."""
        st = job.status if job is not None else None
        if st is None or name in self.assume.assumed:
            ok = False
        elif st.state in PRE_READY:
            ok = self.release_steps(job) is not None  # type: ignore[arg-type]
        else:
            ok = st.state in RUNNABLE and not (st.placement is not None and st.placement.nodes) \
                and not job.spec.suspend  # type: ignore[union-attr]
        if not ok:
            # not (or no longer) waiting for placement: wants_placement() is False (and it is
            # not a job placement releases)
            self._drop(name)
            return
        assert job is not None and st is not None
        md = job.metadata
        ts = md.creation_timestamp
        key = (-job.spec.priority, ts.timestamp() if ts else 0.0, name)
        template = self._template(job, allowed(job))
        self.queue.put(name, key, template)
        if template.shape.num_nodes > 1:
            self._engine_jobs.add(name)
        conds = st.conditions
        cond = get_condition(conds, "Unschedulable") if conds else None
        if cond is not None:
            self._unschedulable[name] = cond.message
        elif self._unschedulable:
            self._unschedulable.pop(name, None)

    def _set_unschedulable(self, ctx: Context, job: Job | None, reason: str | None, now: Any) -> None:
        if job is None:
            return
        new = job.status_copy()
        if job.status.state in PRE_READY:  # released in the write that says why it waits
            steps = self.release_steps(job)
            if steps is None:
                self._drop(job.name)
                return
            take_release_steps(new, steps, now)
        if reason is None:
            remove_condition(new.status.conditions, "Unschedulable")
            self._unschedulable.pop(job.name, None)
        else:
            set_condition(new.status.conditions, "Unschedulable", "True", "NeverFits", reason, now)
            remove_condition(new.status.conditions, "Waiting")
            self._unschedulable[job.name] = reason
        self._step(ctx, job, new)

    def _set_waiting(self, ctx: Context, job: Job | None, why: str, held: bool, top: int, now: Any) -> None:
        """The job's ``Waiting`` condition, written only when its words change. The condition
        objects are made once per pass and words (a first pass over a long backlog gives
        thousands of jobs the same one; nothing edits a condition in place)."""
        if job is None:
            return
        words = self._words.get((why, held))
        if words is None:
            if len(self._words) > 256:
                self._words.clear()
            words = self._words[(why, held)] = self._waiting_words(why, held)
        reason, message = words
        name = job.metadata.name or ""
        sent = self._waiting_sent.get(name)
        if sent is not None and sent[0] is job and _says(sent[1], words):
            return  # written over this very version already; its event has not come back yet
        steps: list[tuple[JobState, str]] | None = None
        if job.status.state in PRE_READY:  # released in the write of its condition
            steps = self.release_steps(job)
            if steps is None:
                self._drop(name)
                return
        conds = job.status.conditions
        if conds and steps is None:
            cur = next((c for c in conds if c.type == "Waiting"), None)
            if cur is not None and cur.reason == reason and cur.message == message and \
                    not any(c.type == "Unschedulable" for c in conds):
                return
        entry = self._waiting_patch(words, now)
        # A patch of the conditions alone, written by the scheduler with its bindings' kind
        # of write (no Job copied here; nothing edits a shared list or condition in place).
        patch: StatusPatch
        if steps is not None:
            kept = [c for c in conds if c.type not in _NOT_KEPT_WHEN_RELEASED]
            kept.append(entry[0])
            patch = (job, {"conditions": kept, **collapsed_fields(job, steps, now, KEY)})
        elif conds:
            kept = [c for c in conds if c.type not in _NOT_KEPT_WHEN_BOUND]
            kept.append(entry[0])
            patch = (job, {"conditions": kept})
        else:
            patch = (job, entry[1])
        self._waiting_sent[name] = patch
        self._waits.append(patch)
        self._wait_names.append(name)

    def _waiting_patch(self, words: tuple[str, str], now: Any) -> tuple[Condition, dict[str, Any]]:
        """The Waiting condition saying ``words`` at ``now``, and the patch of a job that has no
        condition: made once per pass and words, shared (nothing edits a written list or
        condition in place)."""
        key = (*words, now)
        entry = self._conditions.get(key)
        if entry is None:
            if len(self._conditions) > 64:
                self._conditions.clear()
            cond = Condition(type="Waiting", status="True", reason=words[0], message=words[1],
                             last_transition_time=now)
            entry = self._conditions[key] = (cond, {"conditions": [cond]})
        return entry

    def _drop(self, name: str) -> None:
        """``name`` is no longer placement's (bound, gone, or not one it releases: its event
        marked it already; the dependency reconciler, enqueued by the same event, takes it):
        out of the queue and of the condition bookkeeping."""
        self.queue.entries.pop(name, None)
        self._unschedulable.pop(name, None)
        self._forget_waiting(name)

    def _forget_waiting(self, name: str) -> None:
        self._waiting_sent.pop(name, None)

    @staticmethod
    def _waiting_words(why: str, held: bool) -> tuple[str, str]:
        """(reason, message) of the Waiting condition for the engine's ``why``."""
        if why in ("the allocation has no nodes", "no nodes match the selector"):
            return "NoNodes", (NO_NODE_AGENT if why == "the allocation has no nodes"
                               else f"{why}: no node it may use is registered")
        if held:
            return "HeldByPriority", f"{why}; jobs of higher priority wait for the same room and go first"
        return "WaitingForCapacity", why


#: kube-scheduler's name for what this is.
PlacementScheduler = PlacementReconciler
