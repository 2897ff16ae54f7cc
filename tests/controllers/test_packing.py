"""The packing engine: the seed's placement rules, ids, reasons, selectors, and its index.

The index (cursors, revisit heaps, release log) must give exactly what a naive first fit over
every node gives; a hypothesis test checks that against a reference written here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controllers.placement import (
    Decision,
    JobShape,
    NodeOccupancy,
    Outcome,
    Packer,
    PlacementConflict,
    PlacementRequest,
    UnknownNode,
    whole_gpus,
)


def nodes(n: int, cpus: int = 64, gpus: int = 8, batch_job: str | None = None, prefix: str = "n") -> Packer:
    return Packer(NodeOccupancy(f"{prefix}{i}", cpus, gpus, batch_job) for i in range(n))


def reqs(count: int, shape: JobShape, prefix: str = "j", **kw) -> list[PlacementRequest]:
    return [PlacementRequest(f"{prefix}{i}", shape, **kw) for i in range(count)]


def bound(ds: Sequence[Decision]) -> list[Decision]:
    return [d for d in ds if d.bound]


def check_node(node: NodeOccupancy) -> None:
    """No node exceeds its CPUs, GPUs or occupancy 1.0; its jobs' id sets are disjoint."""
    cpus = [i for a in node.jobs.values() for i in a[0]]
    gpus = [i for a in node.jobs.values() for i in a[1]]
    assert len(cpus) == len(set(cpus)), f"{node.name}: CPU ids shared: {node.jobs}"
    assert len(gpus) == len(set(gpus)), f"{node.name}: GPU ids shared: {node.jobs}"
    assert sorted(cpus + node.free_cpus) == list(range(node.cpus))
    assert sorted(gpus + node.free_gpus) == list(range(node.gpus))
    assert node.free_cpus == sorted(node.free_cpus) and node.free_gpus == sorted(node.free_gpus)
    assert node.occupancy <= 1.0 + 1e-9
    assert math.isclose(node.occupancy, math.fsum(a[2] for a in node.jobs.values()), abs_tol=1e-12)


# --- the seed's examples -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("npc", "gpus_per_rank", "expected"),
    [
        (8, 1, 16),  # all 16 run concurrently
        (4, 1, 8),  # 4 per node, bounded by occupancy
        (8, 8, 2),  # 1 per node, bounded by idle GPUs
    ],
    ids=["npc8-1gpu-all-16", "npc4-1gpu-occupancy-bounds-8", "npc8-8gpu-gpus-bound-2"],
)
def test_seed_examples_two_64cpu_8gpu_nodes_sixteen_single_process_jobs(npc, gpus_per_rank, expected):
    p = nodes(2)
    shape = JobShape.of(gpus_per_rank=gpus_per_rank, node_packing_count=npc)
    ds = p.place(reqs(16, shape))
    assert len(bound(ds)) == expected
    per_node = {n.name: len(n.jobs) for n in p.nodes()}
    assert per_node == {"n0": expected // 2, "n1": expected // 2}
    assert all(d.waiting for d in ds if not d.bound)
    for n in p.nodes():
        check_node(n)


def test_32_cpu_node_packing_count_4_runs_4_of_5():
    p = nodes(1, cpus=32, gpus=0)
    ds = p.place(reqs(5, JobShape.of(node_packing_count=4)))
    assert [d.outcome for d in ds] == [Outcome.BOUND] * 4 + [Outcome.WAITING]


def test_4_gpu_node_packing_count_8_one_gpu_per_rank_runs_4():
    p = nodes(1, cpus=64, gpus=4)
    ds = p.place(reqs(8, JobShape.of(gpus_per_rank=1, node_packing_count=8)))
    assert len(bound(ds)) == 4
    assert sorted(g for d in bound(ds) for g in d.gpus) == [0, 1, 2, 3]


def test_packing_count_3_runs_3_and_occupancy_sums_to_exactly_one():
    p = nodes(1, cpus=64, gpus=4)
    ds = p.place(reqs(4, JobShape.of(gpus_per_rank=1, node_packing_count=3)))
    assert len(bound(ds)) == 3
    assert p.node("n0").occupancy == pytest.approx(1.0)


def test_threads_per_core_divides_cpus_and_at_least_one_cpu_is_taken():
    assert JobShape.of(ranks_per_node=4, threads_per_rank=4, threads_per_core=2).cpus_per_node == 8
    assert JobShape.of(ranks_per_node=1, threads_per_rank=1, threads_per_core=4).cpus_per_node == 1
    p = nodes(1, cpus=16, gpus=0)
    ds = p.place(
        reqs(3, JobShape.of(ranks_per_node=4, threads_per_rank=4, threads_per_core=2, node_packing_count=8))
    )
    assert [len(d.cpus) for d in ds] == [8, 8, 0]


def test_shape_from_job_resources():
    from apis import JobResources

    res = JobResources(
        num_nodes=2, ranks_per_node=8, threads_per_rank=2, gpus_per_rank=0.5, node_packing_count=4
    )
    assert JobShape.from_resources(res) == JobShape(
        num_nodes=2, cpus_per_node=16, gpus_per_node=4, node_packing_count=4
    )
    assert JobShape.from_resources(res).occupancy == 1.0  # multi-node: whole nodes
    assert JobShape.of(node_packing_count=4).occupancy == 0.25


def test_equal_shapes_are_equal_and_hash_alike():
    a = JobShape.of(ranks_per_node=2, gpus_per_rank=1, node_packing_count=4)
    b = JobShape(num_nodes=1, cpus_per_node=2, gpus_per_node=2, node_packing_count=4)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    with pytest.raises(ValueError):
        JobShape(cpus_per_node=0)


# --- multi-node ----------------------------------------------------------------------------


def test_two_node_job_never_lands_on_a_partly_busy_node():
    p = nodes(3)
    small = p.place([PlacementRequest("small", JobShape.of(node_packing_count=64))])
    assert small[0].nodes == ("n0",)
    [d] = p.place([PlacementRequest("mpi", JobShape.of(num_nodes=2, ranks_per_node=64))])
    assert d.bound and d.nodes == ("n1", "n2") and d.occupancy == 1.0
    assert p.node("n1").occupancy == 1.0 and p.node("n2").occupancy == 1.0
    # nothing else fits on the multi-node job's nodes, even a tiny task
    ds = p.place(reqs(64, JobShape.of(node_packing_count=64), prefix="t"))
    assert {d.nodes for d in bound(ds)} == {("n0",)}


def test_multi_node_job_waits_for_whole_idle_nodes_then_binds():
    p = nodes(2)
    p.place([PlacementRequest("small", JobShape.of(node_packing_count=8))])
    mpi = PlacementRequest("mpi", JobShape.of(num_nodes=2))
    [d] = p.place([mpi])
    assert d.waiting and "2 idle nodes" in d.reason
    p.release("small")
    [d] = p.place([mpi])
    assert d.bound and d.nodes == ("n0", "n1") and d.cpus == (0,) and d.gpus == ()


def test_multi_node_job_takes_all_its_nodes_from_one_batch_job():
    p = Packer(
        [
            NodeOccupancy("a0", 64, 8, "bjA"),
            NodeOccupancy("b0", 64, 8, "bjB"),
            NodeOccupancy("a1", 64, 8, "bjA"),
            NodeOccupancy("b1", 64, 8, "bjB"),
            NodeOccupancy("b2", 64, 8, "bjB"),
        ]
    )
    ds = p.place(
        [
            PlacementRequest("three", JobShape.of(num_nodes=3)),
            PlacementRequest("two", JobShape.of(num_nodes=2)),
        ]
    )
    assert ds[0].nodes == ("b0", "b1", "b2") and ds[0].batch_job == "bjB"
    assert ds[1].nodes == ("a0", "a1") and ds[1].batch_job == "bjA"


# --- ids -----------------------------------------------------------------------------------


def test_concurrent_jobs_on_one_node_get_disjoint_gpu_and_cpu_ids():
    p = nodes(1)
    ds = p.place(reqs(8, JobShape.of(ranks_per_node=8, gpus_per_rank=1, node_packing_count=8)))
    assert len(bound(ds)) == 1  # 8 GPUs each: one job
    p = nodes(1)
    ds = p.place(reqs(8, JobShape.of(ranks_per_node=4, gpus_per_rank=0.5, node_packing_count=8)))
    gpu_sets = [set(d.gpus) for d in bound(ds)]
    cpu_sets = [set(d.cpus) for d in bound(ds)]
    assert len(gpu_sets) == 4 and all(len(s) == 2 for s in gpu_sets)
    assert set().union(*gpu_sets) == set(range(8))
    assert sum(map(len, cpu_sets)) == len(set().union(*cpu_sets)) == 16
    check_node(p.node("n0"))


def test_release_frees_exactly_what_was_allocated():
    p = nodes(1)
    shape = JobShape.of(ranks_per_node=2, gpus_per_rank=1, node_packing_count=4)
    a, b, c = p.place(reqs(3, shape))
    assert (b.cpus, b.gpus) == ((2, 3), (2, 3))
    node = p.node("n0")
    assert p.release(b.job)
    assert b.job not in node.jobs
    assert node.free_cpus == [2, 3] + list(range(6, 64))
    assert node.free_gpus == [2, 3, 6, 7]
    assert node.occupancy == pytest.approx(0.5)
    assert node.jobs[a.job][:2] == (a.cpus, a.gpus) and node.jobs[c.job][:2] == (c.cpus, c.gpus)
    assert not p.release(b.job)  # twice: nothing more to free
    [again] = p.place([PlacementRequest("again", shape)])
    assert (again.cpus, again.gpus) == (b.cpus, b.gpus)  # the freed ids, lowest first
    for j in (a.job, c.job, "again"):
        p.release(j)
    assert node.idle and node.occupancy == 0.0
    assert node.free_cpus == list(range(64)) and node.free_gpus == list(range(8))


def test_occupancy_does_not_drift_over_many_place_release_cycles():
    p = nodes(1, cpus=64, gpus=0)
    shape = JobShape.of(node_packing_count=3)
    for cycle in range(500):
        ds = p.place(reqs(4, shape, prefix=f"c{cycle}-"))
        assert len(bound(ds)) == 3
        p.release(ds[cycle % 3].job)
        p.release(ds[(cycle + 1) % 3].job)
        p.release(ds[(cycle + 2) % 3].job)
    assert p.node("n0").occupancy == 0.0


# --- fractional GPUs (Balsam #132) ---------------------------------------------------------


def test_balsam_132_npc_10_one_gpu_per_rank_on_8_gpu_node_places_8_never_10():
    p = nodes(1, cpus=64, gpus=8)
    ds = p.place(reqs(10, JobShape.of(gpus_per_rank=1, node_packing_count=10)))
    assert len(bound(ds)) == 8
    assert [d.outcome for d in ds[8:]] == [Outcome.WAITING, Outcome.WAITING]
    assert sorted(g for d in bound(ds) for g in d.gpus) == list(range(8))
    check_node(p.node("n0"))


def test_fractional_gpus_per_rank_round_up_to_whole_devices():
    half = JobShape.of(ranks_per_node=1, gpus_per_rank=0.5, node_packing_count=16)
    assert half.gpus_per_node == 1  # half a GPU is a whole GPU: devices are not shared
    assert JobShape.of(ranks_per_node=3, gpus_per_rank=0.5).gpus_per_node == 2
    # 100 * 0.07 is 7.000000000000001 in floating point: still 7 devices, not 8
    assert JobShape.of(ranks_per_node=100, gpus_per_rank=0.07).gpus_per_node == 7
    assert whole_gpus(3, 1 / 3) == 1 and whole_gpus(4, 0) == 0
    p = nodes(1, cpus=64, gpus=8)
    assert len(bound(p.place(reqs(16, half)))) == 8


# --- never fits ----------------------------------------------------------------------------


def test_never_fits_reasons_say_what_is_missing():
    p = nodes(2, cpus=64, gpus=4)
    ds = p.place(
        [
            PlacementRequest("gpus", JobShape.of(ranks_per_node=8, gpus_per_rank=1)),
            PlacementRequest("nodes", JobShape.of(num_nodes=3)),
            PlacementRequest("cpus", JobShape.of(ranks_per_node=80)),
            PlacementRequest("both", JobShape.of(ranks_per_node=80, gpus_per_rank=1)),
            PlacementRequest("fine", JobShape.of()),
        ]
    )
    assert [d.outcome for d in ds] == [Outcome.NEVER_FITS] * 4 + [Outcome.BOUND]
    assert ds[0].reason == "needs 8 GPUs per node; largest node has 4"
    assert ds[1].reason == "needs 3 nodes; the allocation has 2"
    assert ds[2].reason == "needs 80 CPUs per node; largest node has 64"
    assert (
        ds[3].reason
        == "needs 80 CPUs per node; largest node has 64; needs 80 GPUs per node; largest node has 4"
    )


def test_never_fits_when_no_single_node_has_both_the_cpus_and_the_gpus():
    p = Packer([NodeOccupancy("cpu", 64, 0), NodeOccupancy("gpu", 8, 8)])
    [d] = p.place([PlacementRequest("j", JobShape.of(ranks_per_node=16, gpus_per_rank=0.25))])
    assert d.never_fits and d.reason == "needs 16 CPUs and 4 GPUs on one node; no node has both"


def test_no_nodes_yet_means_waiting_not_never_fits():
    p = Packer()
    [d] = p.place([PlacementRequest("j", JobShape.of())])
    assert d.waiting and d.reason == "the allocation has no nodes"
    p.add_node(NodeOccupancy("late", 4))
    [d] = p.place([PlacementRequest("j", JobShape.of())])
    assert d.bound and d.nodes == ("late",)


def test_never_fits_verdict_follows_the_node_set():
    p = nodes(1, cpus=64, gpus=4)
    big = PlacementRequest("big", JobShape.of(ranks_per_node=8, gpus_per_rank=1))
    assert p.place([big])[0].never_fits
    p.add_node(NodeOccupancy("fat", 64, 8))
    assert p.place([big])[0].nodes == ("fat",)


# --- order ---------------------------------------------------------------------------------


def test_requests_are_served_in_the_order_given_first_fit():
    p = nodes(2, cpus=8, gpus=0)
    ds = p.place(
        [
            PlacementRequest("high", JobShape.of(ranks_per_node=6, node_packing_count=2)),
            PlacementRequest("mid", JobShape.of(ranks_per_node=6, node_packing_count=2)),
            PlacementRequest("low", JobShape.of(ranks_per_node=6, node_packing_count=2)),
            PlacementRequest("tiny", JobShape.of(ranks_per_node=2, node_packing_count=2)),
        ]
    )
    assert [(d.job, d.nodes) for d in bound(ds)] == [("high", ("n0",)), ("mid", ("n1",)), ("tiny", ("n0",))]
    assert ds[2].waiting


def test_an_unplaceable_job_does_not_block_the_jobs_behind_it():
    p = nodes(1, cpus=64, gpus=4)
    ds = p.place(
        [PlacementRequest("huge", JobShape.of(ranks_per_node=8, gpus_per_rank=1))]
        + [PlacementRequest("mpi", JobShape.of(num_nodes=2))]
        + reqs(4, JobShape.of(gpus_per_rank=1, node_packing_count=4))
    )
    assert [d.outcome for d in ds] == [Outcome.NEVER_FITS, Outcome.NEVER_FITS] + [Outcome.BOUND] * 4


def test_a_waiting_big_job_does_not_block_smaller_jobs_behind_it():
    p = nodes(1, cpus=64, gpus=8)
    p.place([PlacementRequest("running", JobShape.of(gpus_per_rank=1, node_packing_count=2))])
    ds = p.place(
        [PlacementRequest("whole", JobShape.of(ranks_per_node=8, gpus_per_rank=1))]
        + reqs(2, JobShape.of(gpus_per_rank=1, node_packing_count=4))
    )
    assert [d.outcome for d in ds] == [Outcome.WAITING, Outcome.BOUND, Outcome.BOUND]


def test_an_already_bound_job_gets_its_binding_back():
    p = nodes(1)
    [d] = p.place([PlacementRequest("j", JobShape.of(node_packing_count=2))])
    [again] = p.place([PlacementRequest("j", JobShape.of(node_packing_count=2))])
    assert again == d and len(p.node("n0").jobs) == 1
    assert p.binding("j") == d
    assert d.placement_fields() == {
        "batch_job": None,
        "nodes": ["n0"],
        "cpus": [0],
        "gpus": [],
        "occupancy": 0.5,
    }


# --- selectors -----------------------------------------------------------------------------


def test_selector_restricts_jobs_to_allowed_batch_jobs_and_nodes():
    p = Packer(
        [
            NodeOccupancy("a0", 64, 8, "bjA"),
            NodeOccupancy("b0", 64, 8, "bjB"),
            NodeOccupancy("b1", 64, 8, "bjB"),
        ]
    )
    shape = JobShape.of(node_packing_count=1)
    ds = p.place(
        [
            PlacementRequest("onlyB", shape, batch_jobs=frozenset({"bjB"})),
            PlacementRequest("onlyB2", shape, batch_jobs=frozenset({"bjB"})),
            PlacementRequest("onlyB3", shape, batch_jobs=frozenset({"bjB"})),
            PlacementRequest("named", shape, nodes=frozenset({"a0", "b1"})),
            PlacementRequest("any", shape),
        ]
    )
    assert [d.nodes for d in ds] == [("b0",), ("b1",), (), ("a0",), ()]
    assert ds[0].batch_job == "bjB"
    assert ds[2].waiting and ds[4].waiting


def test_selector_never_fits_and_no_match_reasons():
    p = Packer([NodeOccupancy("a0", 64, 8, "bjA"), NodeOccupancy("b0", 64, 2, "bjB")])
    ds = p.place(
        [
            PlacementRequest("j", JobShape.of(gpus_per_rank=4), batch_jobs=frozenset({"bjB"})),
            PlacementRequest("k", JobShape.of(), batch_jobs=frozenset({"bjC"})),
        ]
    )
    assert (
        ds[0].never_fits and ds[0].reason == "needs 4 GPUs per node; largest node matching the selector has 2"
    )
    assert ds[1].waiting and ds[1].reason == "no nodes match the selector"


# --- rebuilding from existing bindings -----------------------------------------------------


def test_rebuild_from_existing_bindings_takes_their_room():
    p = nodes(2)
    one_gpu = JobShape.of(gpus_per_rank=1, node_packing_count=8)
    p.bind_existing(
        "old-mpi",
        JobShape.of(num_nodes=1, ranks_per_node=64, gpus_per_rank=0.125),
        ["n0"],
        list(range(64)),
        list(range(8)),
    )
    p.bind_existing("old-small", one_gpu, ["n1"], [5], [3], occupancy=0.0)  # 0.0: not recorded
    assert p.node("n1").occupancy == 0.125
    ds = p.place(reqs(10, one_gpu))
    assert all(d.nodes == ("n1",) for d in bound(ds)) and len(bound(ds)) == 7  # occupancy: 1 + 7 = 8
    assert all(3 not in d.gpus and 5 not in d.cpus for d in bound(ds))
    check_node(p.node("n1"))
    assert p.release("old-mpi")
    assert p.node("n0").idle


def test_rebuild_round_trips_a_placement_and_is_idempotent():
    p = nodes(2)
    d = p.place([PlacementRequest("mpi", JobShape.of(num_nodes=2, ranks_per_node=4, gpus_per_rank=1))])[0]
    fields = d.placement_fields()
    q = nodes(2)
    rebuilt = q.bind_existing(
        "mpi",
        JobShape.of(num_nodes=2, ranks_per_node=4, gpus_per_rank=1),
        fields["nodes"],
        fields["cpus"],
        fields["gpus"],
        fields["occupancy"],
    )
    assert rebuilt == d
    assert (
        q.bind_existing(
            "mpi",
            JobShape.of(num_nodes=2),
            fields["nodes"],
            fields["cpus"],
            fields["gpus"],
            fields["occupancy"],
        )
        == d
    )
    assert [n.jobs for n in q.nodes()] == [n.jobs for n in p.nodes()]


def test_conflicting_existing_binding_is_refused_and_changes_nothing():
    p = nodes(1, cpus=8, gpus=2)
    shape = JobShape.of(gpus_per_rank=1, node_packing_count=2)
    p.bind_existing("a", shape, ["n0"], [0], [0])
    before = (list(p.node("n0").free_cpus), list(p.node("n0").free_gpus), p.node("n0").occupancy)
    with pytest.raises(PlacementConflict, match="GPU 0 on node n0 is held by job a"):
        p.bind_existing("b", shape, ["n0"], [1], [0])
    with pytest.raises(PlacementConflict, match="no CPU 9"):
        p.bind_existing("b", shape, ["n0"], [9], [1])
    with pytest.raises(UnknownNode):
        p.bind_existing("b", shape, ["gone"], [1], [1])
    p.bind_existing("b", shape, ["n0"], [1], [1])
    with pytest.raises(PlacementConflict, match="exceeds 1.0"):
        p.bind_existing("c", shape, ["n0"], [2], [])
    # moving "b" onto "a"'s GPU fails and keeps b where it was
    with pytest.raises(PlacementConflict):
        p.bind_existing("b", shape, ["n0"], [1], [0])
    assert p.binding("b") is not None and p.node("n0").jobs["b"][:2] == ((1,), (1,))
    p.release("b")
    assert (p.node("n0").free_cpus, p.node("n0").free_gpus, p.node("n0").occupancy) == before


def test_removing_a_node_returns_its_jobs_and_frees_their_other_nodes():
    p = nodes(3)
    [mpi] = p.place([PlacementRequest("mpi", JobShape.of(num_nodes=2))])
    [small] = p.place([PlacementRequest("small", JobShape.of(node_packing_count=2))])
    assert mpi.nodes == ("n0", "n1") and small.nodes == ("n2",)
    assert p.remove_node("n1") == ["mpi"]
    assert p.node("n0").idle and p.binding("mpi") is None and "n1" not in p
    with pytest.raises(UnknownNode):
        p.node("n1")
    [d] = p.place([PlacementRequest("mpi2", JobShape.of(num_nodes=2))])
    assert d.waiting  # n0 idle, n2 busy
    p.add_node(NodeOccupancy("n1", 64, 8))  # comes back at the end of the order
    [d] = p.place([PlacementRequest("mpi2", JobShape.of(num_nodes=2))])
    assert d.nodes == ("n0", "n1")


def test_first_fit_survives_many_node_removals_and_compaction():
    p = nodes(200, cpus=4, gpus=0)
    shape = JobShape.of(ranks_per_node=4)
    assert p.place(reqs(1, shape, prefix="before"))[0].nodes == ("n0",)  # cursors exist
    for i in range(200):
        if i % 4 != 3:
            p.remove_node(f"n{i}")
    assert len(p) == 50 and [n.name for n in p.nodes()][:3] == ["n3", "n7", "n11"]
    ds = p.place(reqs(3, shape))
    assert [d.nodes for d in ds] == [("n3",), ("n7",), ("n11",)]


def test_freed_room_before_the_cursor_is_found_again_in_later_passes():
    p = nodes(4, cpus=4, gpus=0)
    shape = JobShape.of(ranks_per_node=4)
    ds = p.place(reqs(4, shape))
    assert [d.nodes[0] for d in ds] == ["n0", "n1", "n2", "n3"]
    p.release(ds[1].job)
    p.release(ds[0].job)
    [a, b, c] = p.place(reqs(3, shape, prefix="k"))
    assert (a.nodes, b.nodes, c.waiting) == (("n0",), ("n1",), True)


def test_a_shape_unused_while_many_releases_happen_still_sees_freed_room():
    p = nodes(4, cpus=128, gpus=0)
    whole = JobShape.of(ranks_per_node=128)
    tiny = JobShape.of(node_packing_count=128)
    for i in range(3):
        assert p.place([PlacementRequest(f"w{i}", whole)])[0].nodes == (f"n{i}",)
    p.release("w0")  # room on n0, behind `whole`'s cursor
    for cycle in range(10):  # 1,280 releases on n3: the release log is trimmed while `whole` waits
        ds = p.place(reqs(128, tiny, prefix=f"c{cycle}-", nodes=frozenset({"n3"})))
        assert all(d.nodes == ("n3",) for d in ds)
        for d in ds:
            p.release(d.job)
    assert p.place([PlacementRequest("again", whole)])[0].nodes == ("n0",)


# --- properties ----------------------------------------------------------------------------


class NaivePacker:
    """The rules written plainly: scan every node for every request, using NodeOccupancy only."""

    def __init__(self) -> None:
        self.nodes: list[NodeOccupancy] = []
        self.bound: dict[str, tuple[str, ...]] = {}

    def add(self, name: str, cpus: int, gpus: int, bj: str | None) -> None:
        self.nodes.append(NodeOccupancy(name, cpus, gpus, bj))

    def release(self, job: str) -> None:
        for name in self.bound.pop(job, ()):
            next(n for n in self.nodes if n.name == name).release(job)

    def remove(self, name: str) -> None:
        node = next(n for n in self.nodes if n.name == name)
        for j in list(node.jobs):
            self.release(j)
        self.nodes.remove(node)

    def place(self, requests: list[PlacementRequest]) -> list[tuple[Outcome, tuple[str, ...], tuple, tuple]]:
        out = []
        for r in requests:
            if r.job in self.bound:
                names = self.bound[r.job]
                node = next(n for n in self.nodes if n.name == names[0])
                out.append((Outcome.BOUND, names, node.jobs[r.job][0], node.jobs[r.job][1]))
                continue
            s = r.shape
            allowed = [
                n
                for n in self.nodes
                if (r.batch_jobs is None or n.batch_job in r.batch_jobs)
                and (r.nodes is None or n.name in r.nodes)
            ]
            per_bj: dict[str | None, int] = {}
            for n in allowed:
                if n.could_ever_fit(s):
                    per_bj[n.batch_job] = per_bj.get(n.batch_job, 0) + 1
            if not allowed:
                out.append((Outcome.WAITING, (), (), ()))
                continue
            if max(per_bj.values(), default=0) < s.num_nodes:
                out.append((Outcome.NEVER_FITS, (), (), ()))
                continue
            buckets: dict[str | None, list[NodeOccupancy]] = {}
            chosen = None
            for n in allowed:
                if n.can_fit(s):
                    buckets.setdefault(n.batch_job, []).append(n)
                    if len(buckets[n.batch_job]) == s.num_nodes:
                        chosen = buckets[n.batch_job]
                        break
            if chosen is None:
                out.append((Outcome.WAITING, (), (), ()))
                continue
            ids = [n.allocate(r.job, s) for n in chosen]
            self.bound[r.job] = tuple(n.name for n in chosen)
            out.append((Outcome.BOUND, self.bound[r.job], ids[0][0], ids[0][1]))
        return out


node_st = st.tuples(st.integers(1, 12), st.integers(0, 4), st.sampled_from([None, "a", "b"]))
shape_st = st.builds(
    JobShape.of,
    num_nodes=st.sampled_from([1, 1, 1, 1, 2, 3]),
    ranks_per_node=st.integers(1, 6),
    threads_per_rank=st.integers(1, 3),
    threads_per_core=st.integers(1, 2),
    gpus_per_rank=st.sampled_from([0, 0, 0.5, 1, 1.5, 2]),
    node_packing_count=st.integers(1, 12),
)
job_st = st.tuples(
    st.integers(0, 3),  # which of the example's few shapes: shapes recur, as in real backlogs
    st.sampled_from([None, None, None, frozenset({"a"}), frozenset({"b", None})]),
    st.sampled_from([None, None, None, frozenset({"n0", "n2", "x1"})]),
)
op_st = st.one_of(
    st.tuples(st.just("place"), st.lists(job_st, min_size=1, max_size=12)),
    st.tuples(st.just("release"), st.integers(0, 10_000)),
    st.tuples(st.just("release"), st.integers(0, 10_000)),
    st.tuples(st.just("add"), node_st),
    st.tuples(st.just("remove"), st.integers(0, 10_000)),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    initial=st.lists(node_st, min_size=0, max_size=6),
    shapes=st.lists(shape_st, min_size=4, max_size=4),
    ops=st.lists(op_st, max_size=30),
)
def test_property_never_overcommits_and_matches_naive_first_fit(initial, shapes, ops):
    packer, naive = Packer(), NaivePacker()
    counter = 0

    def add(spec):
        nonlocal counter
        cpus, gpus, bj = spec
        name = f"n{counter}" if counter % 5 else f"x{counter}"
        counter += 1
        packer.add_node(NodeOccupancy(name, cpus, gpus, bj))
        naive.add(name, cpus, gpus, bj)

    for spec in initial:
        add(spec)
    jobs = 0
    for op, arg in ops:
        if op == "place":
            batch = []
            for which, bjs, names in arg:
                batch.append(PlacementRequest(f"j{jobs}", shapes[which], batch_jobs=bjs, nodes=names))
                jobs += 1
            if naive.bound and jobs % 3 == 0:  # ask again for one that is already bound
                batch.insert(0, PlacementRequest(next(iter(naive.bound)), JobShape()))
            got = packer.place(batch)
            want = naive.place(batch)
            assert [(d.outcome, d.nodes, d.cpus, d.gpus) for d in got] == want
            for d in got:
                assert bool(d.reason) == (not d.bound)
        elif op == "release" and naive.bound:
            job = sorted(naive.bound)[arg % len(naive.bound)]
            assert packer.release(job)
            naive.release(job)
        elif op == "add":
            add(arg)
        elif op == "remove" and naive.nodes:
            name = naive.nodes[arg % len(naive.nodes)].name
            gone = packer.remove_node(name)
            assert sorted(gone) == sorted(j for j, ns in naive.bound.items() if name in ns)
            naive.remove(name)
        for n in packer.nodes():
            check_node(n)
        assert [(n.name, n.free_cpus, n.free_gpus, n.jobs) for n in packer.nodes()] == [
            (n.name, n.free_cpus, n.free_gpus, n.jobs) for n in naive.nodes
        ]
        assert set(packer.bound_jobs()) == set(naive.bound)
