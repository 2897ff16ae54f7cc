"""The elastic queue's sizing rule (controllers/batch/sizing.py), one row per backlog."""

from __future__ import annotations

import pytest

from apis import ElasticQueue, JobResources
from controllers.batch.sizing import Allocation, Need, nodes_needed, per_node, size_request

EQ = ElasticQueue(min_nodes=1, max_nodes=4, min_wall_time_min=10, max_wall_time_min=60, wall_time_pad_min=5,
                  max_queued_jobs=2, max_queue_wait_min=30)


def eq(**kw: object) -> ElasticQueue:
    return EQ.model_copy(update=kw)


# (id, backlog, allocations, queue, expected nodes, expected wall time)
CASES = [
    ("empty backlog requests nothing", [], [], EQ, 0, 0),
    ("10 whole-node jobs, capped at maxNodes", [Need(10)], [], EQ, 4, 10),
    ("10 jobs 4 per node need 3 nodes", [Need(10, per_node=4)], [], EQ, 3, 10),
    ("one small job still gets minNodes", [Need(1, per_node=8)], [], eq(min_nodes=2), 2, 10),
    ("queued nodes count as coming", [Need(10, per_node=4)], [Allocation(2, "queued", True)], EQ, 1, 10),
    ("enough already coming", [Need(8, per_node=4)], [Allocation(2, "queued", True)], EQ, 0, 0),
    ("a non-elastic queued BatchJob counts as supply too", [Need(4)], [Allocation(3, "queued")], EQ, 1, 10),
    ("running and busy supplies nothing", [Need(3)], [Allocation(2, "running", True, free_nodes=0)], EQ, 2, 10),
    ("running with idle nodes supplies them", [Need(3)], [Allocation(2, "running", True, free_nodes=2)], EQ, 1, 10),
    ("maxNodes counts what the queue holds", [Need(10)], [Allocation(3, "running", True, free_nodes=0)], EQ, 1, 10),
    ("maxNodes reached", [Need(10)], [Allocation(4, "running", True, free_nodes=0)], EQ, 0, 0),
    ("maxQueuedJobs reached", [Need(10)], [Allocation(1, "queued", True), Allocation(1, "pending_submission", True)],
     EQ, 0, 0),
    ("an allocation reserved for other jobs supplies nothing", [Need(2)],
     [Allocation(4, "running", False, free_nodes=4, serves=False)], EQ, 2, 10),
    ("pending_deletion holds nodes but supplies none", [Need(10)], [Allocation(3, "pending_deletion", True)], EQ, 1,
     10),
    ("finished BatchJobs do not count", [Need(2)], [Allocation(4, "finished", True)], EQ, 2, 10),
    ("multi-node job needs its nodes in one BatchJob", [Need(1, num_nodes=3)], [], EQ, 3, 10),
    ("multi-node job too big for the room left", [Need(1, num_nodes=3)], [Allocation(2, "running", True, 0)], EQ,
     0, 0),
    ("multi-node job above maxNodes never fits: ignored", [Need(1, num_nodes=5)], [], EQ, 0, 0),
    ("a job that fits no node is ignored", [Need(5, per_node=0)], [], EQ, 0, 0),
    ("partial nodes of two shapes share", [Need(3, per_node=4), Need(1, per_node=2)], [], EQ, 2, 10),
    ("whole plus partial plus multi", [Need(9, per_node=4), Need(1, num_nodes=2)], [], eq(max_nodes=10), 5, 10),
    ("wall time is the longest job plus the pad", [Need(1, wall_time_min=20), Need(1, wall_time_min=3)], [], EQ, 2,
     25),
    ("wall time is capped at maxWallTimeMin", [Need(1, wall_time_min=120)], [], EQ, 1, 60),
    ("fractional wall time rounds up", [Need(1, wall_time_min=0.2)], [], eq(min_wall_time_min=0.5,
                                                                           wall_time_pad_min=0.1), 1, 1),
]


@pytest.mark.parametrize(("backlog", "allocs", "queue", "nodes", "wall"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_size_request(backlog: list[Need], allocs: list[Allocation], queue: ElasticQueue, nodes: int,
                      wall: int) -> None:
    d = size_request(backlog, allocs, queue)
    assert (d.nodes, d.wall_time_min) == (nodes, wall), d.why
    assert d.why


@pytest.mark.parametrize(("resources", "cpus", "gpus", "expected"), [
    ({}, 64, 8, 1),  # nodePackingCount 1: a whole node
    ({"nodePackingCount": 16}, 64, 8, 16),
    ({"nodePackingCount": 16, "ranksPerNode": 8}, 64, 8, 8),  # CPUs bound it
    ({"nodePackingCount": 16, "gpusPerRank": 1}, 64, 8, 8),  # GPUs bound it
    ({"nodePackingCount": 10, "gpusPerRank": 1}, 64, 8, 8),  # Balsam #132: 8, not 10
    ({"gpusPerRank": 1}, 64, 0, 0),  # no GPU on the site's nodes: never fits
    ({"ranksPerNode": 4, "threadsPerRank": 32}, 64, 0, 0),
])
def test_per_node(resources: dict[str, object], cpus: int, gpus: int, expected: int) -> None:
    assert per_node(JobResources.model_validate(resources), cpus, gpus) == expected


def test_nodes_needed_is_exact_for_one_shape() -> None:
    assert [nodes_needed([Need(n, per_node=4)]) for n in range(0, 10)] == [0, 1, 1, 1, 1, 2, 2, 2, 2, 3]
