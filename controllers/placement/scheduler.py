"""Placement in kube-scheduler's shape: a scheduling queue, an assume cache, a batched binder.

* :class:`SchedulingQueue` — the jobs that wait for room, in priority order (higher
  ``spec.priority`` first, then oldest). It is fed by the informer's event handlers, as
  kube-scheduler's is: an event that makes a job wait brings its entry, built on the
  informer's thread (``note``); one that ends it says ``GONE`` (its room back by name), one
  that shows the assumed binding ``CONFIRMED``; anything else *marks* the job (``mark``) and
  the pass reads it from the cache (``track``). One lane per priority, appended in creation
  order (never re-sorted); a head index and a compaction of what a walk went over skip the
  entries that left, so a pass over a full allocation costs what it binds.
* :class:`AssumeCache` — bindings decided and written but not yet seen in the Job cache. The
  packing engine counts an assumed binding as taken at once (so one pass never gives a slot
  twice); a binding whose write fails is *forgotten*: its room goes back to the engine and its
  job back to the queue, so a conflict can never leave a slot bound twice.
* :func:`bind` — every binding of a pass in ONE transaction, each a status patch of the cached
  job (``Registry.write_status_patches``: no Job built in the pass); when that conflicts, job
  by job, forgetting exactly the ones that did not land.
"""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Iterator
from typing import Any

from apis import Conflict, Job, NotFound, Registry
from apis._errors import ApiError, StoreUnavailable

from .packing import Decision, Outcome, Packer, PlacementRequest

SortKey = tuple[Any, ...]
_WAITING = Outcome.WAITING
PLACE_CHUNK = 256
FIRST_CHUNK = 16


def chunk_sizes() -> Iterator[int]:
    """How many queued jobs a pass offers the engine at a time while some node has room:
    16, doubling to PLACE_CHUNK. A trickle pass (one slot freed, thousands waiting) then
    decides ~16 jobs, not 256; a pass that fills 1,000 nodes reaches full chunks at once."""
    size = FIRST_CHUNK
    while True:
        yield size
        if size < PLACE_CHUNK:
            size = min(2 * size, PLACE_CHUNK)


class QueueWalk:
    """What :meth:`SchedulingQueue.place` decided: the engine's ``decisions`` in priority
    order, and the jobs it did not offer because their packing group had found no room:
    ``waits[(the engine's reason, held)]`` -> their names (``held``: a job of higher priority
    waits too). ``top_waiting``: the highest priority of a waiting job (None: none waits)."""

    __slots__ = ("decisions", "waits", "top_waiting")

    def __init__(self) -> None:
        self.decisions: list[Decision] = []
        self.waits: dict[tuple[str, bool], list[str]] = {}
        self.top_waiting: int | None = None


class _Lane:
    """The queued jobs of one priority, oldest first: ``(key, name, ticket)`` items. A job
    queued after every item of its lane (the usual case: jobs arrive in creation order) is
    appended; one that is older waits in ``added`` for the next ``ordered()`` (binary
    insertion when few, one sort of the lane when many). ``head``: every item before it has
    left the queue."""

    __slots__ = ("items", "added", "head", "walked")

    def __init__(self) -> None:
        self.items: list[tuple[SortKey, str, int]] = []
        self.added: list[tuple[SortKey, str, int]] = []
        self.head = 0
        self.walked = 0  # how far the last walk went: ``compact`` drops the items that left before it


#: What a job's last informer event told the scheduler, handed to its next pass
#: (``SchedulingQueue.note``): the job ended or was deleted (its room back, out of the queue) ...
GONE = "gone"
#: ... or the event shows the binding the scheduler assumed (stop assuming). Anything else
#: noted is a queue entry ``(key, request, Unschedulable message or None)`` built at event time.
CONFIRMED = "confirmed"


class SchedulingQueue:
    """Pending jobs: name -> (sort key, request, ticket), and their priority order.

    The order is one :class:`_Lane` per priority (``key[0]``, highest first), each oldest
    first; an item counts while the job's entry still has that ticket (a job re-queued or
    re-keyed gets a new one, and its old item is skipped). Jobs arrive in creation order, so a
    lane is appended to and never sorted; an older arrival (a re-keyed job, a relist) is merged
    by binary insertion when few and one sort of the lane when many. A pass costs what
    changed, not a sort of thousands waiting.

    Fed by informer events (kube-scheduler's shape): a handler ``note``s what an event says
    about a job (an entry built at event time, ``GONE``, ``CONFIRMED``) or ``mark``s the job
    for the pass to read from the cache; the pass takes both (``take_events``,
    ``take_marked``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._marked: set[str] = set()
        self._events: dict[str, Any] = {}
        self.entries: dict[str, tuple[SortKey, PlacementRequest, int]] = {}
        self._lanes: dict[Any, _Lane] = {}
        self._tickets = itertools.count(1)

    # --- fed by informer events (any thread) ---------------------------------------------

    def mark(self, *names: str) -> None:
        with self._lock:
            self._marked.update(names)

    def note(self, name: str, what: Any) -> None:
        """What the last event of ``name`` says (the latest wins): ``GONE``, ``CONFIRMED`` or an
        entry ``(key, request, Unschedulable message or None)``."""
        with self._lock:
            self._events[name] = what

    def take_marked(self) -> set[str]:
        with self._lock:
            out, self._marked = self._marked, set()
        return out

    def take_events(self) -> dict[str, Any]:
        with self._lock:
            out, self._events = self._events, {}
        return out

    # --- the scheduler's own thread -------------------------------------------------------

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def put(self, name: str, key: SortKey, request: PlacementRequest) -> None:
        """Queue ``name`` with its sort key and the request of its packing group (a template
        shared by every job of that shape and selector: its ``job`` is not read)."""
        prev = self.entries.get(name)
        if prev is not None and prev[0] == key:
            if prev[1] is not request:
                self.entries[name] = (key, request, prev[2])
            return
        ticket = next(self._tickets)
        self.entries[name] = (key, request, ticket)
        lane = self._lanes.get(key[0])
        if lane is None:
            lane = self._lanes[key[0]] = _Lane()
        items = lane.items
        if not lane.added and (len(items) == lane.head or items[-1][0] < key):
            items.append((key, name, ticket))
        else:
            lane.added.append((key, name, ticket))

    def put_all(self, names: list[str], entries: list[tuple[Any, ...]]) -> None:
        """:meth:`put` of each ``names[i]`` with ``entries[i]``'s (sort key, request, ...): the
        events' arrivals of a pass (10^5 of them after a list), one call."""
        current = self.entries
        lanes = self._lanes
        tickets = self._tickets
        put = self.put
        for name, what in zip(names, entries, strict=True):
            key = what[0]
            lane = lanes.get(key[0])
            if lane is None or lane.added or name in current:
                put(name, key, what[1])
                continue
            items = lane.items
            if len(items) != lane.head and not items[-1][0] < key:
                put(name, key, what[1])
                continue
            ticket = next(tickets)
            current[name] = (key, what[1], ticket)
            items.append((key, name, ticket))

    def remove(self, name: str) -> None:
        self.entries.pop(name, None)

    def clear(self) -> None:
        self.entries.clear()
        self._lanes.clear()

    def priority(self, name: str) -> int:
        e = self.entries.get(name)
        return -e[0][0] if e is not None else 0

    def _ordered(self) -> list[_Lane]:
        """The lanes, highest priority first, each merged and its head moved past the items
        that left."""
        get = self.entries.get
        lanes = self._lanes
        out = []
        for k in sorted(lanes):
            lane = lanes[k]
            items, head, added = lane.items, lane.head, lane.added
            if added:
                lane.added = []
                if len(added) * 16 > len(items) - head:  # many: one sort of the live items
                    live = [it for it in itertools.islice(items, head, None)
                            if (e := get(it[1])) is not None and e[2] == it[2]]
                    live.extend(added)
                    live.sort()
                    lane.items = items = live
                    head = 0
                else:  # few (a trickle): binary insertion behind the head
                    insort = bisect.insort
                    for it in added:
                        insort(items, it, head)
            n = len(items)
            while head < n and ((e := get(items[head][1])) is None or e[2] != items[head][2]):
                head += 1  # bound since: no pass needs to walk past them again
            lane.head = head
            if head == n:
                lane.items, lane.head = [], 0
                if not lane.added:
                    del lanes[k]
                continue
            out.append(lane)
        return out

    def in_order(self) -> Iterator[str]:
        """Pending names, highest priority first, oldest first within one priority."""
        return (name for name, _ in self.pairs_in_order())

    def pairs_in_order(self) -> Iterator[tuple[str, PlacementRequest]]:
        """``(name, request)`` of the pending jobs in priority order: what ``Packer.place_pairs``
        takes, one dict lookup per job."""
        get = self.entries.get
        for lane in self._ordered():
            items = lane.items
            i, n = lane.head, len(items)
            while i < n:
                it = items[i]
                i += 1
                e = get(it[1])
                if e is not None and e[2] == it[2]:
                    lane.walked = i
                    yield it[1], e[1]
            lane.walked = n

    def place(self, packer: Packer, full: bool) -> QueueWalk:
        """Offer the queue to ``packer`` in priority order (see :class:`QueueWalk`): all of it
        when ``full`` (every waiting job gets its words), else in ``chunk_sizes`` while some
        node has room. A job whose packing group found no room earlier in this walk is not
        offered: the engine would answer WAITING with the group's reason (nothing is released
        during a walk), so the walk files it under its group and goes on."""
        walk = QueueWalk()
        if not full and not packer.has_room():
            return walk
        get = self.entries.get
        place_pairs = packer.place_pairs
        decisions = walk.decisions
        waits = walk.waits
        exhausted: dict[int, str] = {}  # id(request template) -> the engine's reason it waits
        first_wait: int | None = None
        sizes = chunk_sizes()  # small first: a group found without room is not offered again
        size = next(sizes)
        stop = False
        for lane in self._ordered():
            items = lane.items
            i, n = lane.head, len(items)
            prio = -items[i][0][0]
            held = first_wait is not None and prio < first_wait
            chunk: list[tuple[str, PlacementRequest]] = []
            offered = i  # past the last item offered to the engine: no job behind it was bound
            while i < n:
                it = items[i]
                i += 1
                e = get(it[1])
                if e is None or e[2] != it[2]:
                    continue
                req = e[1]
                why = exhausted.get(id(req))
                if why is not None:
                    names = waits.get((why, held))
                    if names is None:
                        names = waits[(why, held)] = []
                    names.append(it[1])
                    if first_wait is None:
                        first_wait = prio
                    continue
                chunk.append((it[1], req))
                offered = i
                if len(chunk) < size:
                    continue
                if self._flush(chunk, place_pairs, decisions, exhausted) and first_wait is None:
                    first_wait = prio
                chunk = []
                if not full and not packer.has_room():
                    stop = True
                    break
                size = next(sizes)
            lane.walked = offered  # what ``compact`` looks at again
            if chunk and self._flush(chunk, place_pairs, decisions, exhausted) and first_wait is None:
                first_wait = prio
            if stop or (not full and not packer.has_room()):
                break
        walk.top_waiting = first_wait
        return walk

    @staticmethod
    def _flush(chunk: list[tuple[str, PlacementRequest]], place_pairs: Any, decisions: list[Decision],
               exhausted: dict[int, str]) -> bool:
        """Decide ``chunk``; note the groups the engine found no room for. True when one waits."""
        out = place_pairs(chunk)
        decisions.extend(out)
        waited = False
        for k, d in enumerate(out):
            if d[1] is _WAITING:
                exhausted[id(chunk[k][1])] = d[7]
                waited = True
        return waited

    def requests(self, names: Iterator[str] | list[str]) -> Iterator[tuple[str, PlacementRequest]]:
        """``(name, request)`` of queued ``names``, for ``Packer.place_pairs``."""
        entries = self.entries
        return ((n, entries[n][1]) for n in names)

    def compact(self) -> None:
        """Drop the items that left the queue: those a walk went over (a pass binds jobs
        scattered behind ones that wait; without this every later pass walks past them
        again), and all of them once they outnumber the queue."""
        get = self.entries.get
        for lane in self._lanes.values():
            head, walked = lane.head, lane.walked
            if walked > head:
                items = lane.items
                items[head:walked] = [it for it in itertools.islice(items, head, walked)
                                      if (e := get(it[1])) is not None and e[2] == it[2]]
            lane.walked = 0
        # entries before a lane's head are skipped already: only the ones behind it count
        behind = sum(len(lane.items) - lane.head + len(lane.added) for lane in self._lanes.values())
        if behind > 2 * len(self.entries) + 64:
            for lane in self._lanes.values():
                lane.items = [it for it in itertools.islice(lane.items, lane.head, None)
                              if (e := get(it[1])) is not None and e[2] == it[2]]
                lane.added = [it for it in lane.added if (e := get(it[1])) is not None and e[2] == it[2]]
                lane.head = 0


#: The revision a binding landed at (0 until then), in a one-item list: every binding of one
#: pass shares one cell, so the batch's landing is told to the assume cache in one store, not
#: one per binding.
RevisionCell = list[int]


class AssumeCache:
    """Bindings written (or about to be) but not yet seen in the Job cache: job -> (node
    names, the cell holding the revision the binding was written at; 0 until it lands). The
    cache is not written through: the binding's own watch event confirms it (kube-scheduler's
    shape), and until then an older cached version of the job leaves the engine's room taken."""

    def __init__(self, packer: Packer, queue: SchedulingQueue) -> None:
        self.packer = packer
        self.queue = queue
        self.assumed: dict[str, tuple[tuple[str, ...], RevisionCell]] = {}

    def assume(self, job: str, nodes: tuple[str, ...], cell: RevisionCell | None = None) -> None:
        """Hold ``job``'s binding; ``cell``: the revision cell of its batch (shared)."""
        self.assumed[job] = (nodes, [0] if cell is None else cell)

    def landed(self, job: str, revision: int) -> None:
        """The binding's write landed at ``revision``: cached versions older than it predate it.
        (The job gets a cell of its own: the rest of its batch may not have landed.)"""
        entry = self.assumed.get(job)
        if entry is not None:
            self.assumed[job] = (entry[0], [revision])

    def forget(self, job: str) -> None:
        """The binding did not land: give its room back and queue the job again."""
        if self.assumed.pop(job, None) is not None:
            self.packer.release(job)
        self.queue.mark(job)

    def confirm(self, job: Job | None, name: str) -> bool:
        """The cache shows ``name``: True when the engine's binding stands as it is (nothing to
        sync): the cache still shows a version older than the binding (an unrelated event
        overtook it: keep assuming), or it shows exactly the assumed binding (stop assuming)."""
        entry = self.assumed.get(name)
        if entry is None:
            return False
        nodes, cell = entry
        revision = cell[0]
        if job is not None and revision and int(job.metadata.resource_version or 0) < revision:
            return True
        del self.assumed[name]
        if job is None:
            return False
        p = job.status.placement
        return p is not None and tuple(p.nodes) == nodes and job.status.state.value in (
            "PREPROCESSED", "RESTART_READY")

    def __contains__(self, name: str) -> bool:
        return name in self.assumed


#: A binding or a condition as the scheduler writes it: (the cached job, status fields to assign),
#: stored by ``Registry.write_status_patches`` without a new Job built in the pass.
StatusPatch = tuple[Job, dict[str, Any]]


def bind(registry: Registry, bindings: list[StatusPatch], assume: AssumeCache,
         written: list[Any] | None = None, cell: RevisionCell | None = None) -> int:
    """Write every binding in one transaction; on a conflict, job by job. Bindings that do
    not land are forgotten (room back to the engine, job back to the queue); those that land
    are told to the assume cache with their revision. Returns how many landed. A store outage
    forgets them all and is raised (the controller backs off). ``written`` receives the jobs
    as stored (see ``Registry.write_status_patches``). ``cell``: the revision cell every
    binding of the batch was assumed with (one store tells them all that they landed)."""
    if not bindings:
        return 0
    try:
        rev = registry.write_status_patches(bindings, written=written)
    except StoreUnavailable:
        for job, _ in bindings:
            assume.forget(job.name)
        raise
    except (Conflict, NotFound, ApiError):
        pass  # one of them moved meanwhile: find which
    else:
        if cell is not None:
            cell[0] = rev
        else:
            landed = assume.landed
            for job, _ in bindings:
                landed(job.name, rev)
        return len(bindings)
    n = 0
    for i, b in enumerate(bindings):
        try:
            rev = registry.write_status_patches([b], written=written)
        except StoreUnavailable:
            for job, _ in bindings[i:]:
                assume.forget(job.name)
            raise
        except (Conflict, NotFound, ApiError):
            assume.forget(b[0].name)
            continue
        assume.landed(b[0].name, rev)
        n += 1
    return n
