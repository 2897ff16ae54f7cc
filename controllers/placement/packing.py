"""The packing engine: which node(s), CPU ids and GPU ids a job gets (ARCHITECTURE.md §4).

Pure bookkeeping — no store, no clock, no I/O. The placement reconciler feeds it the nodes of the
allocation(s) and the jobs already bound or running (:meth:`Packer.bind_existing`), asks it to
:meth:`Packer.place` the pending jobs in priority order, writes the bindings it returns, and tells
it when jobs end (:meth:`Packer.release`) or nodes vanish (:meth:`Packer.remove_node`).

Rules (seed, "Defining Compute Resources"):

- A node's occupancy is the sum of ``1/nodePackingCount`` over its jobs. A single-node job fits a
  node that has ``ranksPerNode*gpusPerRank`` idle GPUs, ``ranksPerNode*threadsPerRank//threadsPerCore``
  idle CPUs (at least one) and occupancy headroom: ``occupancy + 1/npc <= 1.0 + 1e-9``.
- GPUs are whole devices: a fractional request rounds **up** (``ranksPerNode=1, gpusPerRank=0.5``
  takes one GPU). So ``nodePackingCount=10`` with one GPU per rank on an 8-GPU node runs 8 jobs,
  not 10 (Balsam #132 crashed there): the GPU constraint binds before occupancy does.
- A multi-node job (``numNodes > 1``) takes whole idle nodes only (nothing running, occupancy 0),
  all from one batch job (one MPI launch cannot span two scheduler allocations), and counts
  occupancy 1.0 on each. It gets the same CPU/GPU ids on every node.
- First fit in node order (the order nodes were added). A job no node could ever hold gets
  :attr:`Outcome.NEVER_FITS` with a reason (``needs 8 GPUs per node; largest node has 4``) and does
  not block the jobs behind it; a job that would fit once something ends gets
  :attr:`Outcome.WAITING`. There is no reservation: a big job waiting does not stop smaller jobs
  behind it from taking free room (Balsam's behaviour; a large multi-node job can starve under a
  steady stream of small ones).

Speed: requests are grouped by (shape, selector). Each group keeps a cursor over the node list
and a small heap of nodes to look at again. Between two releases capacity only shrinks, so a node
the cursor passed cannot fit that group again until something on it is released; releases are
logged and pushed onto each group's heap the next time the group is used. A group that found no
room is skipped in O(1) for the rest of the pass. A pass therefore costs
O(requests + placements + nodes scanned once per group + releases), not O(requests × nodes), and
the cursors persist across passes so a reconciler that calls ``place`` after every few releases
does not rescan full nodes.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

from apis._reasons import needs_text

__all__ = [
    "EPSILON",
    "Decision",
    "JobShape",
    "NodeOccupancy",
    "Outcome",
    "Packer",
    "PlacementConflict",
    "PlacementRequest",
    "ResourcesLike",
    "UnknownNode",
    "whole_gpus",
]

EPSILON = 1e-9
_LIMIT = 1.0 + EPSILON


def whole_gpus(ranks_per_node: int, gpus_per_rank: float) -> int:
    """GPUs a node must give: ``ranks_per_node * gpus_per_rank`` rounded up to whole devices.

    A tolerance keeps float noise from adding a device (``10 * 0.7`` is ``7.000000000000001``).
    """
    g = ranks_per_node * gpus_per_rank
    if g <= 0:
        return 0
    return max(0, math.ceil(g - EPSILON))


# --- shapes and requests -------------------------------------------------------------------


class ResourcesLike(Protocol):
    """What :meth:`JobShape.from_resources` reads: ``apis.JobResources`` or anything like it."""

    @property
    def num_nodes(self) -> int: ...
    @property
    def ranks_per_node(self) -> int: ...
    @property
    def threads_per_rank(self) -> int: ...
    @property
    def threads_per_core(self) -> int: ...
    @property
    def gpus_per_rank(self) -> float: ...
    @property
    def node_packing_count(self) -> int: ...


@dataclass(frozen=True, slots=True)
class JobShape:
    """What a job needs on each of its nodes. Hashable; equal shapes are packed as one group."""

    num_nodes: int = 1
    cpus_per_node: int = 1
    gpus_per_node: int = 0
    node_packing_count: int = 1
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.num_nodes < 1:
            raise ValueError(f"num_nodes must be >= 1, got {self.num_nodes}")
        if self.cpus_per_node < 1:
            raise ValueError(f"cpus_per_node must be >= 1, got {self.cpus_per_node}")
        if self.gpus_per_node < 0:
            raise ValueError(f"gpus_per_node must be >= 0, got {self.gpus_per_node}")
        if self.node_packing_count < 1:
            raise ValueError(f"node_packing_count must be >= 1, got {self.node_packing_count}")
        object.__setattr__(
            self,
            "_hash",
            hash((self.num_nodes, self.cpus_per_node, self.gpus_per_node, self.node_packing_count)),
        )

    def __hash__(self) -> int:
        return self._hash

    @property
    def multi_node(self) -> bool:
        return self.num_nodes > 1

    @property
    def occupancy(self) -> float:
        """Occupancy this job adds to each of its nodes: 1/npc, or 1.0 for a multi-node job."""
        return 1.0 if self.num_nodes > 1 else 1.0 / self.node_packing_count

    @classmethod
    def of(
        cls,
        *,
        num_nodes: int = 1,
        ranks_per_node: int = 1,
        threads_per_rank: int = 1,
        threads_per_core: int = 1,
        gpus_per_rank: float = 0,
        node_packing_count: int = 1,
    ) -> JobShape:
        """The shape of a job from Balsam's resource arguments."""
        return cls(
            num_nodes=num_nodes,
            cpus_per_node=max(1, ranks_per_node * threads_per_rank // threads_per_core),
            gpus_per_node=whole_gpus(ranks_per_node, gpus_per_rank),
            node_packing_count=node_packing_count,
        )

    @classmethod
    def from_resources(cls, resources: ResourcesLike) -> JobShape:
        """The shape of ``job.spec.resources`` (any object with Balsam's resource attributes)."""
        return cls.of(
            num_nodes=resources.num_nodes,
            ranks_per_node=resources.ranks_per_node,
            threads_per_rank=resources.threads_per_rank,
            threads_per_core=resources.threads_per_core,
            gpus_per_rank=resources.gpus_per_rank,
            node_packing_count=resources.node_packing_count,
        )

    def describe(self) -> str:
        gp = f", {self.gpus_per_node} GPUs" if self.gpus_per_node else ""
        if self.num_nodes > 1:
            return f"{self.num_nodes} whole nodes ({self.cpus_per_node} CPUs{gp} each)"
        return f"{self.cpus_per_node} CPUs{gp}, occupancy 1/{self.node_packing_count}"


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    """One pending job. ``batch_jobs`` / ``nodes`` restrict where it may go (``None``: anywhere).

    The caller decides which batch jobs a job's selector matches and passes their names;
    ``None`` inside ``batch_jobs`` stands for nodes that belong to no batch job.
    """

    job: str
    shape: JobShape
    batch_jobs: frozenset[str | None] | None = None
    nodes: frozenset[str] | None = None
    # (num_nodes, cpus, gpus, npc, batch_jobs, nodes): the packing group, hashed in C
    group_key: tuple[Any, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        s = self.shape
        key = (
            s.num_nodes,
            s.cpus_per_node,
            s.gpus_per_node,
            s.node_packing_count,
            self.batch_jobs,
            self.nodes,
        )
        object.__setattr__(self, "group_key", key)


# --- decisions -----------------------------------------------------------------------------


class Outcome(StrEnum):
    BOUND = "Bound"  # placed now: nodes, cpus, gpus, occupancy are set
    WAITING = "Waiting"  # fits once something ends (or once nodes arrive); just wait
    NEVER_FITS = "NeverFits"  # no node of the allocation could ever hold it; reason says why


class Decision(NamedTuple):
    """What :meth:`Packer.place` decided for one request (a tuple: cheap to make 100k of)."""

    job: str
    outcome: Outcome
    nodes: tuple[str, ...] = ()
    cpus: tuple[int, ...] = ()  # CPU ids, the same on every node
    gpus: tuple[int, ...] = ()  # GPU ids, the same on every node
    occupancy: float = 0.0  # added to each node: 1/npc, or 1.0 for multi-node jobs
    batch_job: str | None = None
    reason: str = ""

    @property
    def bound(self) -> bool:
        return self.outcome is Outcome.BOUND

    @property
    def waiting(self) -> bool:
        return self.outcome is Outcome.WAITING

    @property
    def never_fits(self) -> bool:
        return self.outcome is Outcome.NEVER_FITS

    def placement_fields(self) -> dict[str, Any]:
        """Keyword arguments for ``apis.Placement`` (``status.placement``) of a bound decision."""
        if self.outcome is not Outcome.BOUND:
            raise ValueError(f"job {self.job} is not bound ({self.outcome.value})")
        return {
            "batch_job": self.batch_job,
            "nodes": list(self.nodes),
            "cpus": list(self.cpus),
            "gpus": list(self.gpus),
            "occupancy": self.occupancy,
        }


class PlacementConflict(ValueError):
    """An existing binding cannot be recorded: ids already taken, out of range, or occupancy > 1."""


class UnknownNode(KeyError):
    """A node name the packer does not hold."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown node"


# --- one node ------------------------------------------------------------------------------


class NodeOccupancy:
    """Usage of one node: free CPU/GPU ids (sorted lists), occupancy, and the jobs on it.

    Its ids are ``0..cpus-1`` and ``0..gpus-1``; allocation hands out the lowest free ids. When the
    node belongs to a :class:`Packer`, change it through the packer (``place``, ``bind_existing``,
    ``release``) so the packer's index stays true.
    """

    __slots__ = ("name", "batch_job", "cpus", "gpus", "free_cpus", "free_gpus", "occupancy", "jobs", "_pos")

    def __init__(self, name: str, cpus: int, gpus: int = 0, batch_job: str | None = None) -> None:
        if cpus < 1:
            raise ValueError(f"node {name}: cpus must be >= 1, got {cpus}")
        if gpus < 0:
            raise ValueError(f"node {name}: gpus must be >= 0, got {gpus}")
        self.name = name
        self.batch_job = batch_job
        self.cpus = cpus
        self.gpus = gpus
        self.free_cpus: list[int] = list(range(cpus))
        self.free_gpus: list[int] = list(range(gpus))
        self.occupancy = 0.0
        # job -> (cpu ids, gpu ids, occupancy share)
        self.jobs: dict[str, tuple[tuple[int, ...], tuple[int, ...], float]] = {}
        self._pos = -1

    def __repr__(self) -> str:
        return (
            f"NodeOccupancy({self.name!r}, cpus={len(self.free_cpus)}/{self.cpus} free, "
            f"gpus={len(self.free_gpus)}/{self.gpus} free, occupancy={self.occupancy:.3f}, "
            f"jobs={len(self.jobs)})"
        )

    @property
    def idle(self) -> bool:
        """Nothing running and occupancy 0: what a multi-node job needs."""
        return not self.jobs

    @property
    def running_jobs(self) -> list[str]:
        return list(self.jobs)

    @property
    def busy_cpus(self) -> list[int]:
        free = set(self.free_cpus)
        return [i for i in range(self.cpus) if i not in free]

    @property
    def busy_gpus(self) -> list[int]:
        free = set(self.free_gpus)
        return [i for i in range(self.gpus) if i not in free]

    def could_ever_fit(self, shape: JobShape) -> bool:
        """Whether this node, idle, could hold the shape's per-node share."""
        return self.cpus >= shape.cpus_per_node and self.gpus >= shape.gpus_per_node

    def can_fit(self, shape: JobShape) -> bool:
        """The seed's three constraints; for a multi-node shape, this node must also be idle."""
        if shape.num_nodes > 1:
            return not self.jobs and self.could_ever_fit(shape)
        return (
            len(self.free_cpus) >= shape.cpus_per_node
            and len(self.free_gpus) >= shape.gpus_per_node
            and self.occupancy + 1.0 / shape.node_packing_count <= _LIMIT
        )

    def allocate(self, job: str, shape: JobShape) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Take the lowest free ids for ``job``; raises :class:`PlacementConflict` if it does not fit."""
        if job in self.jobs:
            raise PlacementConflict(f"job {job} is already on node {self.name}")
        if not self.can_fit(shape):
            raise PlacementConflict(f"job {job} ({shape.describe()}) does not fit node {self.name}: {self!r}")
        return self._take(job, shape.cpus_per_node, shape.gpus_per_node, shape.occupancy)

    def _take(self, job: str, c: int, g: int, share: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
        fc = self.free_cpus
        cpu_ids = tuple(fc[:c])
        del fc[:c]
        if g:
            fg = self.free_gpus
            gpu_ids = tuple(fg[:g])
            del fg[:g]
        else:
            gpu_ids = ()
        self.occupancy += share
        self.jobs[job] = (cpu_ids, gpu_ids, share)
        return cpu_ids, gpu_ids

    def _check_ids(self, job: str, cpu_ids: Sequence[int], gpu_ids: Sequence[int], share: float) -> None:
        """Raise :class:`PlacementConflict` unless ``_take_ids`` would succeed."""
        for kind, ids, total, free in (
            ("CPU", cpu_ids, self.cpus, self.free_cpus),
            ("GPU", gpu_ids, self.gpus, self.free_gpus),
        ):
            if len(set(ids)) != len(ids):
                raise PlacementConflict(f"job {job}: duplicate {kind} ids {sorted(ids)} on node {self.name}")
            bad = [i for i in ids if not 0 <= i < total]
            if bad:
                raise PlacementConflict(
                    f"job {job}: node {self.name} has no {kind} {bad[0]} (it has {total})"
                )
            fs = set(free)
            taken = [i for i in ids if i not in fs]
            if taken:
                owner = next(
                    (j for j, a in self.jobs.items() if taken[0] in (a[0] if kind == "CPU" else a[1])), "?"
                )
                raise PlacementConflict(
                    f"job {job}: {kind} {taken[0]} on node {self.name} is held by job {owner}"
                )
        if self.occupancy + share > _LIMIT:
            raise PlacementConflict(
                f"job {job}: node {self.name} occupancy {self.occupancy:.3f} + {share:.3f} exceeds 1.0"
            )

    def _take_ids(self, job: str, cpu_ids: Sequence[int], gpu_ids: Sequence[int], share: float) -> None:
        cs, gs = set(cpu_ids), set(gpu_ids)
        self.free_cpus = [i for i in self.free_cpus if i not in cs]
        if gs:
            self.free_gpus = [i for i in self.free_gpus if i not in gs]
        self.occupancy += share
        self.jobs[job] = (tuple(cpu_ids), tuple(gpu_ids), share)

    def release(self, job: str) -> bool:
        """Give back exactly what ``job`` holds here. False if it holds nothing here."""
        alloc = self.jobs.pop(job, None)
        if alloc is None:
            return False
        cpu_ids, gpu_ids, _ = alloc
        if cpu_ids:
            self.free_cpus.extend(cpu_ids)
            self.free_cpus.sort()
        if gpu_ids:
            self.free_gpus.extend(gpu_ids)
            self.free_gpus.sort()
        # Recompute rather than subtract, so float error never accumulates over a node's life.
        self.occupancy = math.fsum(a[2] for a in self.jobs.values()) if self.jobs else 0.0
        return True


# --- the packer ----------------------------------------------------------------------------


class _Group:
    """Index state of one (shape, selector): cursor, nodes to revisit, per-pass verdicts."""

    __slots__ = (
        "shape",
        "batch_jobs",
        "nodes",
        "restricted",
        "cursor",
        "revisit",
        "seen",
        "pass_id",
        "exhausted",
        "never",
        "never_version",
        "waiting_reason",
        "last_used",
    )

    def __init__(
        self, shape: JobShape, batch_jobs: frozenset[str | None] | None, nodes: frozenset[str] | None
    ) -> None:
        self.shape = shape
        self.batch_jobs = batch_jobs
        self.nodes = nodes
        self.restricted = self.batch_jobs is not None or self.nodes is not None
        self.cursor = 0  # every live node before it cannot take this group (unless it is in revisit)
        self.revisit: list[int] = []  # heap of positions < cursor that may have room again
        self.seen = 0  # absolute offset into the packer's release log
        self.pass_id = -1
        self.exhausted = False  # found no room in the current pass
        self.never: str | None = None  # never-fits reason ('' when it can fit)
        self.never_version = -1
        self.waiting_reason = ""
        self.last_used = 0

    def allows(self, node: NodeOccupancy) -> bool:
        return (self.batch_jobs is None or node.batch_job in self.batch_jobs) and (
            self.nodes is None or node.name in self.nodes
        )


class Packer:
    """All nodes of the allocation(s) and what runs on them; decides placements.

    Not thread-safe: one reconciler owns it.
    """

    _GROUP_TTL = 16  # passes a group survives unused before its index state is dropped

    def __init__(self, nodes: Iterable[NodeOccupancy] = ()) -> None:
        self._slots: list[NodeOccupancy | None] = []  # node order = first-fit order; None = removed
        self._by_name: dict[str, NodeOccupancy] = {}
        self._bindings: dict[str, Decision] = {}  # job -> its binding
        self._classes: dict[tuple[str | None, int, int], int] = {}  # (batch job, cpus, gpus) -> count
        self._version = 0  # bumps when the node set changes (never-fits verdicts depend on it)
        self._log: list[int] = []  # positions of nodes that got room back, since _log_base
        self._log_base = 0
        self._groups: dict[tuple[Any, ...], _Group] = {}
        self._pass = 0
        self._dead = 0
        for n in nodes:
            self.add_node(n)

    # -- nodes --

    def add_node(self, node: NodeOccupancy) -> NodeOccupancy:
        """Add an (idle) node at the end of the first-fit order."""
        if node.name in self._by_name:
            raise ValueError(f"node {node.name} already exists")
        if node.jobs:
            raise ValueError(f"node {node.name} must be added idle; record its jobs with bind_existing")
        node._pos = len(self._slots)
        self._slots.append(node)
        self._by_name[node.name] = node
        k = (node.batch_job, node.cpus, node.gpus)
        self._classes[k] = self._classes.get(k, 0) + 1
        self._version += 1
        return node

    def remove_node(self, name: str) -> list[str]:
        """Drop a node; returns the jobs that were on it, now released on all their nodes."""
        node = self._by_name.pop(name, None)
        if node is None:
            raise UnknownNode(f"node {name} not found")
        jobs = list(node.jobs)
        for j in jobs:
            self.release(j)
        self._slots[node._pos] = None
        node._pos = -1
        k = (node.batch_job, node.cpus, node.gpus)
        self._classes[k] -= 1
        if not self._classes[k]:
            del self._classes[k]
        self._version += 1
        self._dead += 1
        if self._dead > 64 and self._dead * 2 > len(self._slots):
            self._compact()
        return jobs

    def _compact(self) -> None:
        live = [n for n in self._slots if n is not None]
        for i, n in enumerate(live):
            n._pos = i
        self._slots = list(live)
        self._dead = 0
        self._groups.clear()  # positions changed: every cursor starts over
        self._log_base += len(self._log)
        self._log.clear()

    def node(self, name: str) -> NodeOccupancy:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownNode(f"node {name} not found") from None

    def nodes(self) -> Iterator[NodeOccupancy]:
        """Live nodes in first-fit order."""
        return (n for n in self._slots if n is not None)

    def has_room(self) -> bool:
        """Whether some node could still take some job: a free CPU and occupancy below 1.
        (Conservative: True does not promise that a given job fits.)"""
        return any(n is not None and n.free_cpus and n.occupancy < 1.0 - EPSILON for n in self._slots)

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    # -- jobs --

    def binding(self, job: str) -> Decision | None:
        """The binding the packer holds for ``job``, if any."""
        return self._bindings.get(job)

    def bound_jobs(self) -> Iterator[str]:
        return iter(self._bindings)

    def bind_existing(
        self,
        job: str,
        shape: JobShape,
        nodes: Sequence[str],
        cpus: Sequence[int],
        gpus: Sequence[int],
        occupancy: float | None = None,
    ) -> Decision:
        """Record a binding that already exists (a bound or running job) so its room is taken.

        ``occupancy`` is the share recorded in ``status.placement`` (when absent or 0: the shape's,
        1.0 for several nodes), so a later edit of ``nodePackingCount`` cannot skew it. The
        same ids are taken on every node. Re-recording the same binding is a no-op; a different one
        replaces the old. Raises :class:`UnknownNode` or :class:`PlacementConflict` and changes
        nothing when the binding cannot be recorded.
        """
        if not nodes:
            raise PlacementConflict(f"job {job}: a binding needs at least one node")
        if occupancy is None or occupancy <= 0:  # not recorded (Placement's default is 0.0)
            share = 1.0 if len(nodes) > 1 else shape.occupancy
        else:
            share = float(occupancy)
        targets = []
        for name in nodes:
            n = self._by_name.get(name)
            if n is None:
                raise UnknownNode(f"job {job}: node {name} not found")
            targets.append(n)
        if len(set(nodes)) != len(nodes):
            raise PlacementConflict(f"job {job}: node listed twice in {list(nodes)}")
        batch_jobs = {n.batch_job for n in targets}
        decision = Decision(
            job,
            Outcome.BOUND,
            tuple(nodes),
            tuple(cpus),
            tuple(gpus),
            share,
            targets[0].batch_job if len(batch_jobs) == 1 else None,
        )
        old = self._bindings.get(job)
        if old is not None:
            if old[:6] == decision[:6]:
                return old
            self.release(job)
        try:
            for n in targets:
                n._check_ids(job, cpus, gpus, share)
        except PlacementConflict:
            if old is not None:  # put the old binding back: nothing changed
                for name in old.nodes:
                    self._by_name[name]._take_ids(job, old.cpus, old.gpus, old.occupancy)
                self._bindings[job] = old
            raise
        for n in targets:
            n._take_ids(job, cpus, gpus, share)
        self._bindings[job] = decision
        return decision

    def release(self, job: str) -> bool:
        """Free everything ``job`` holds, on every node. False if the packer held nothing for it."""
        b = self._bindings.pop(job, None)
        if b is None:
            return False
        log = self._log
        for name in b.nodes:
            n = self._by_name.get(name)
            if n is not None and n.release(job):
                log.append(n._pos)
        return True

    # -- placing --

    def place(self, requests: Iterable[PlacementRequest]) -> list[Decision]:
        """Decide every request, in the order given (the caller sorts: priority, then age).

        Bindings are recorded at once (``release`` undoes one if its write fails). A job the
        packer already holds a binding for gets that binding back.
        """
        return self.place_pairs((r.job, r) for r in requests)

    def place_pairs(self, pairs: Iterable[tuple[str, PlacementRequest]]) -> list[Decision]:
        """:meth:`place` for ``(job, request)`` pairs: the request stands for its packing group
        (shape and selector; its own ``job`` is not read), so a caller holding many pending
        jobs keeps one request per group, shared, and no object per job (the scheduler's
        queue: ``(job, template)``, built when the job is queued)."""
        self._pass += 1
        pass_id = self._pass
        groups = self._groups
        bindings = self._bindings
        slots = self._slots
        out: list[Decision] = []
        append = out.append
        BOUND, WAITING, NEVER = Outcome.BOUND, Outcome.WAITING, Outcome.NEVER_FITS
        heappop, heappush = heapq.heappop, heapq.heappush
        new_tuple = tuple.__new__  # Decision without NamedTuple's Python-level __new__
        n_slots = len(slots)

        for job, req in pairs:
            prior = bindings.get(job)
            if prior is not None:
                append(prior)
                continue
            g = groups.get(req.group_key)
            if g is None:
                g = groups[req.group_key] = _Group(req.shape, req.batch_jobs, req.nodes)
            if g.pass_id != pass_id:
                self._start_pass(g, pass_id)
            if g.exhausted:
                append(new_tuple(Decision, (job, WAITING, (), (), (), 0.0, None, g.waiting_reason)))
                continue
            if g.never:
                append(new_tuple(Decision, (job, NEVER, (), (), (), 0.0, None, g.never)))
                continue
            shape = g.shape

            heap = g.revisit
            cur = g.cursor
            c = shape.cpus_per_node
            gp = shape.gpus_per_node
            restricted = g.restricted

            if shape.num_nodes == 1:
                share = 1.0 / shape.node_packing_count
                found: NodeOccupancy | None = None
                while True:
                    if heap and heap[0] < cur:
                        pos = heap[0]
                        node = slots[pos]
                        if (
                            node is not None
                            and node.occupancy + share <= _LIMIT
                            and len(node.free_cpus) >= c
                            and len(node.free_gpus) >= gp
                            and (not restricted or g.allows(node))
                        ):
                            found = node
                            break
                        heappop(heap)
                    elif cur < n_slots:
                        node = slots[cur]
                        if (
                            node is not None
                            and node.occupancy + share <= _LIMIT
                            and len(node.free_cpus) >= c
                            and len(node.free_gpus) >= gp
                            and (not restricted or g.allows(node))
                        ):
                            found = node
                            break
                        cur += 1
                    else:
                        break
                g.cursor = cur
                if found is None:
                    g.exhausted = True
                    g.waiting_reason = self._waiting_reason(g)
                    append(Decision(job, WAITING, reason=g.waiting_reason))
                    continue
                cpu_ids, gpu_ids = found._take(job, c, gp, share)
                d = new_tuple(Decision, (job, BOUND, (found.name,), cpu_ids, gpu_ids, share, found.batch_job, ""))
                bindings[job] = d
                append(d)
                continue

            # multi-node: the first batch job (in node order) to gather num_nodes whole idle nodes
            k = shape.num_nodes
            buckets: dict[str | None, list[int]] = {}
            chosen: list[int] | None = None
            last = -1
            while True:
                if heap and heap[0] < cur:
                    pos = heappop(heap)
                    if pos == last:  # the heap may hold a node twice; a node counts once
                        continue
                    last = pos
                elif cur < n_slots:
                    pos = cur
                    cur += 1
                else:
                    break
                node = slots[pos]
                if (
                    node is None
                    or node.jobs
                    or node.cpus < c
                    or node.gpus < gp
                    or (restricted and not g.allows(node))
                ):
                    continue
                b = buckets.get(node.batch_job)
                if b is None:
                    b = buckets[node.batch_job] = []
                b.append(pos)
                if len(b) == k:
                    chosen = b
                    break
            g.cursor = cur
            for b in buckets.values():  # idle candidates not taken stay candidates
                if b is not chosen:
                    for pos in b:
                        heappush(heap, pos)
            if chosen is None:
                g.exhausted = True
                g.waiting_reason = self._waiting_reason(g)
                append(Decision(job, WAITING, reason=g.waiting_reason))
                continue
            cpu_ids = tuple(range(c))
            gpu_ids = tuple(range(gp))
            names = []
            bj: str | None = None
            for pos in chosen:
                node = slots[pos]
                assert node is not None
                node._take(job, c, gp, 1.0)
                names.append(node.name)
                bj = node.batch_job
            d = new_tuple(Decision, (job, BOUND, tuple(names), cpu_ids, gpu_ids, 1.0, bj, ""))
            bindings[job] = d
            append(d)

        self._end_pass()
        return out

    def _start_pass(self, g: _Group, pass_id: int) -> None:
        g.pass_id = pass_id
        g.last_used = pass_id
        g.exhausted = False
        if g.seen < self._log_base:  # missed releases that were trimmed from the log: start over
            g.cursor = 0
            g.revisit.clear()
        else:
            cur = g.cursor
            heap = g.revisit
            for pos in set(self._log[g.seen - self._log_base :]):
                if pos < cur:
                    heapq.heappush(heap, pos)
        g.seen = self._log_base + len(self._log)
        if g.never_version != self._version:
            g.never = self._never_fits_reason(g)
            g.never_version = self._version

    def _end_pass(self) -> None:
        stale = [k for k, g in self._groups.items() if self._pass - g.last_used > self._GROUP_TTL]
        for k in stale:
            del self._groups[k]
        if not self._log:
            return
        # Drop log entries every remaining group has seen; if the log still grows past a few times
        # the node count (groups left unused for a while), trim it: those groups start over.
        low = min((g.seen for g in self._groups.values()), default=self._log_base + len(self._log))
        cap = 4 * len(self._slots) + 1024
        end = self._log_base + len(self._log)
        low = max(low, end - cap)
        if low > self._log_base:
            del self._log[: low - self._log_base]
            self._log_base = low

    # -- reasons --

    def _eligible_classes(self, g: _Group) -> dict[tuple[str | None, int, int], int]:
        if g.nodes is not None:
            classes: dict[tuple[str | None, int, int], int] = {}
            for name in g.nodes:
                n = self._by_name.get(name)
                if n is not None and (g.batch_jobs is None or n.batch_job in g.batch_jobs):
                    k = (n.batch_job, n.cpus, n.gpus)
                    classes[k] = classes.get(k, 0) + 1
            return classes
        if g.batch_jobs is not None:
            return {k: v for k, v in self._classes.items() if k[0] in g.batch_jobs}
        return self._classes

    def _never_fits_reason(self, g: _Group) -> str | None:
        """'' if some node (set) could hold the shape; a reason if none ever could; None if no nodes."""
        classes = self._eligible_classes(g)
        if not classes:
            return None
        s = g.shape
        c, gp, k = s.cpus_per_node, s.gpus_per_node, s.num_nodes
        per_bj: dict[str | None, int] = {}
        size: dict[str | None, int] = {}
        for (bj, cpus, gpus), count in classes.items():
            size[bj] = size.get(bj, 0) + count
            if cpus >= c and gpus >= gp:
                per_bj[bj] = per_bj.get(bj, 0) + count
        if per_bj and max(per_bj.values()) >= k:
            return ""
        where = " matching the selector" if g.restricted else ""
        max_c = max(cpus for _, cpus, _ in classes)
        max_g = max(gpus for _, _, gpus in classes)
        parts = []
        if c > max_c:
            parts.append(f"needs {c} CPUs per node; largest node{where} has {max_c}")
        if gp > max_g:
            parts.append(f"needs {gp} GPUs per node; largest node{where} has {max_g}")
        if parts:
            return "; ".join(parts)
        if not per_bj:
            return f"needs {c} CPUs and {gp} GPUs on one node; no node{where} has both"
        largest = max(size.values())
        if largest < k:
            what = "the allocation" if len(size) == 1 else "the largest allocation"
            return f"needs {k} nodes; {what}{where} has {largest}"
        return (
            f"needs {k} nodes with {c} CPUs and {gp} GPUs each in one allocation; "
            f"the allocation{where} has {max(per_bj.values())}"
        )

    def _waiting_reason(self, g: _Group) -> str:
        """Why a job that could fit waits, in words that stay the same while it waits (the
        placement reconciler writes it only when it changes)."""
        if g.never is None:
            return "no nodes match the selector" if g.restricted else "the allocation has no nodes"
        s = g.shape
        return needs_text(s.cpus_per_node, s.gpus_per_node, s.num_nodes, s.node_packing_count) + \
            "; every node that could hold it is busy"

    # -- reporting --

    def usage(self) -> dict[str, Any]:
        """Totals over live nodes (for diagnostics and benchmarks)."""
        nodes = list(self.nodes())
        return {
            "nodes": len(nodes),
            "busy_nodes": sum(1 for n in nodes if n.jobs),
            "cpus": sum(n.cpus for n in nodes),
            "busy_cpus": sum(n.cpus - len(n.free_cpus) for n in nodes),
            "gpus": sum(n.gpus for n in nodes),
            "busy_gpus": sum(n.gpus - len(n.free_gpus) for n in nodes),
            "occupancy": math.fsum(n.occupancy for n in nodes),
            "jobs": len(self._bindings),
        }
