"""The elastic queue's sizing rule, as pure functions (table-tested in tests/controllers).

**Backlog.** Jobs that want a node now (PREPROCESSED or RESTART_READY, not bound, not
suspended) of this site whose labels match ``elasticQueue.selector``. Jobs of one shape are
grouped; ``per_node`` is how many of them one node of the site holds (``nodeDefaults``):
``min(nodePackingCount, cpus // cpusPerNode, gpus // gpusPerNode)``. A job no node could
hold (too many CPUs or GPUs per node, more nodes than ``maxNodes``) is left out: asking for
allocations cannot help it (the placement reconciler says why it waits).

**Nodes the backlog needs.**

    need = Σ_shapes ⌊n_s / per_node_s⌋  +  ⌈Σ_shapes (n_s mod per_node_s) / per_node_s⌉  +  Σ_multi-node numNodes

whole nodes per shape, then the partial nodes of all shapes packed together, then the
multi-node jobs' whole nodes.

**Nodes already coming.** ``supply`` = all nodes of the site's BatchJobs that are
pending_submission or queued, plus, of running ones, the nodes whose agent has not
registered yet or that have nothing bound (the placement reconciler is about to fill them) —
counting only BatchJobs whose selector admits the backlog (each of its terms is also a term of
``elasticQueue.selector``): the nodes of an allocation reserved for other jobs supply nothing.

**Request.** ``want = need − supply``. Nothing when ``want ≤ 0`` (an empty backlog never
requests), when the elastic queue already has ``maxQueuedJobs`` BatchJobs waiting
(pending_submission or queued), or when its BatchJobs hold ``maxNodes`` nodes in total.
Otherwise ONE BatchJob of

    nodes = min(max(want, minNodes, largest multi-node job), maxNodes − nodes held by the elastic queue)

(no request if that is below ``max(minNodes, largest multi-node job)``), with wall time
``clamp(longest wallTimeMin in the backlog + wallTimePadMin, minWallTimeMin, maxWallTimeMin)``
rounded up to whole minutes. The reconciler writes one BatchJob per step, and the next step
counts it as supply — so the request settles at what the backlog needs and no more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from apis import ElasticQueue, JobResources

WAITING = ("pending_submission", "queued")
HOLDING = ("pending_submission", "queued", "running", "pending_deletion")


@dataclass(frozen=True)
class Need:
    """``count`` runnable jobs of one shape."""

    count: int
    num_nodes: int = 1
    per_node: int = 1  # single-node jobs of this shape that one node holds
    wall_time_min: float = 0.0


@dataclass(frozen=True)
class Allocation:
    """A BatchJob of the site as the elastic queue counts it."""

    nodes: int
    state: str
    elastic: bool = False  # created by this elastic queue (counts toward maxNodes/maxQueuedJobs)
    free_nodes: int | None = None  # running: nodes not registered or idle; None = all of them
    serves: bool = True  # its selector admits the backlog (every term of it is in the queue's selector)


@dataclass(frozen=True)
class Decision:
    nodes: int  # 0: no request
    wall_time_min: int = 0
    why: str = ""


def per_node(res: JobResources, node_cpus: int, node_gpus: int) -> int:
    """How many single-node jobs with these resources one node holds (0: none)."""
    k = res.node_packing_count
    k = min(k, node_cpus // res.cpus_per_node)
    if res.gpus_per_node:
        k = min(k, node_gpus // res.gpus_per_node)
    return max(0, k)


def nodes_needed(needs: Sequence[Need]) -> int:
    whole, partial, multi = 0, 0.0, 0
    for n in needs:
        if n.num_nodes > 1:
            multi += n.num_nodes * n.count
        elif n.per_node > 0:
            whole += n.count // n.per_node
            partial += (n.count % n.per_node) / n.per_node
    return whole + math.ceil(partial - 1e-9) + multi


def supply_of(a: Allocation) -> int:
    if not a.serves:
        return 0
    if a.state in WAITING:
        return a.nodes
    if a.state == "running":
        return a.nodes if a.free_nodes is None else max(0, min(a.nodes, a.free_nodes))
    return 0


def size_request(needs: Sequence[Need], allocations: Sequence[Allocation], eq: ElasticQueue) -> Decision:
    needs = [n for n in needs if n.count > 0 and (n.per_node > 0 or n.num_nodes > 1) and n.num_nodes <= eq.max_nodes]
    if not needs:
        return Decision(0, why="no runnable job in the backlog")
    need = nodes_needed(needs)
    supply = sum(supply_of(a) for a in allocations)
    want = need - supply
    if want <= 0:
        return Decision(0, why=f"backlog needs {need} node(s); {supply} already coming or idle")
    mine = [a for a in allocations if a.elastic and a.state in HOLDING]
    waiting = sum(1 for a in mine if a.state in WAITING)
    if waiting >= eq.max_queued_jobs:
        return Decision(0, why=f"{waiting} BatchJob(s) already waiting (maxQueuedJobs {eq.max_queued_jobs})")
    room = eq.max_nodes - sum(a.nodes for a in mine)
    lo = max(eq.min_nodes, 1, max((n.num_nodes for n in needs), default=1))
    nodes = min(max(want, lo), room)
    if nodes < lo:
        return Decision(0, why=f"maxNodes {eq.max_nodes} reached ({eq.max_nodes - room} held)")
    longest = max(n.wall_time_min for n in needs)
    wall = min(max(longest + eq.wall_time_pad_min, eq.min_wall_time_min), eq.max_wall_time_min)
    return Decision(nodes, max(1, math.ceil(wall - 1e-9)),
                    why=f"backlog needs {need} node(s); {supply} coming; requesting {nodes}")
