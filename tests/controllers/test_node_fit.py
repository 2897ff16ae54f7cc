"""The seed's three packing constraints on one node (``NodeOccupancy``), each at its edge:
free CPUs, free whole GPUs, occupancy summing to at most 1; a multi-node share needs an idle
node; a job is placed on a node once. ``Packer`` builds on these (test_packing.py)."""

from __future__ import annotations

import pytest

from controllers.placement.packing import JobShape, NodeOccupancy, PlacementConflict


def test_multi_node_is_more_than_one_node() -> None:
    assert not JobShape(num_nodes=1).multi_node and JobShape(num_nodes=2).multi_node
    assert JobShape.of().node_packing_count == 1 and JobShape.of().occupancy == 1.0


@pytest.mark.parametrize(("gpus", "fits"), [(3, False), (4, True), (5, True)])
def test_could_ever_fit_needs_the_shares_gpus_on_the_node(gpus: int, fits: bool) -> None:
    assert NodeOccupancy("n", cpus=8, gpus=gpus).could_ever_fit(JobShape(gpus_per_node=4)) is fits


@pytest.mark.parametrize(("free_gpus", "fits"), [(1, False), (2, True), (3, True)])
def test_can_fit_needs_the_free_gpus_at_least(free_gpus: int, fits: bool) -> None:
    node = NodeOccupancy("n", cpus=8, gpus=4)
    node.allocate("busy", JobShape(gpus_per_node=4 - free_gpus, node_packing_count=4))
    assert node.can_fit(JobShape(gpus_per_node=2, node_packing_count=4)) is fits


def test_occupancy_may_reach_one_but_not_pass_it() -> None:
    node = NodeOccupancy("n", cpus=8)
    quarter = JobShape(node_packing_count=4)
    for i in range(4):
        assert node.can_fit(quarter)
        node.allocate(f"j{i}", quarter)
    assert not node.can_fit(quarter)
    assert NodeOccupancy("m", cpus=8).can_fit(JobShape(node_packing_count=1))
    half_full = NodeOccupancy("h", cpus=8)
    half_full.allocate("a", JobShape(node_packing_count=2))
    assert not half_full.can_fit(JobShape(node_packing_count=1))
    assert half_full.can_fit(JobShape(node_packing_count=2))


def test_a_multi_node_share_needs_an_idle_node_that_could_hold_it() -> None:
    wide = JobShape(num_nodes=2, cpus_per_node=4)
    node = NodeOccupancy("n", cpus=8)
    assert node.can_fit(wide)
    node.allocate("small", JobShape(node_packing_count=8))
    assert not node.can_fit(wide)
    assert not NodeOccupancy("tiny", cpus=2).can_fit(wide)
    single = JobShape(num_nodes=1, cpus_per_node=4, node_packing_count=8)
    assert node.can_fit(single)


def test_a_job_is_placed_on_a_node_once() -> None:
    node = NodeOccupancy("n", cpus=8)
    node.allocate("j", JobShape(node_packing_count=8))
    with pytest.raises(PlacementConflict, match="already on node n"):
        node.allocate("j", JobShape(node_packing_count=8))
    with pytest.raises(PlacementConflict, match="does not fit"):
        NodeOccupancy("m", cpus=1).allocate("k", JobShape(cpus_per_node=2))


def test_a_node_with_exactly_the_cpus_a_share_needs_fits_it() -> None:
    exact = JobShape(cpus_per_node=4, node_packing_count=2)
    assert NodeOccupancy("n", cpus=4).could_ever_fit(exact)
    node = NodeOccupancy("m", cpus=8)
    node.allocate("busy", exact)
    assert node.can_fit(exact)  # 4 CPUs left, 4 needed
    node.allocate("second", exact)
    assert not node.can_fit(JobShape(cpus_per_node=1, node_packing_count=8))


def test_releasing_a_job_that_holds_nothing_here_is_false() -> None:
    node = NodeOccupancy("n", cpus=8)
    assert node.release("nobody") is False
    node.allocate("j", JobShape(node_packing_count=8))
    assert node.release("j") is True and node.release("j") is False


def test_a_multi_node_share_ignores_its_packing_count_and_still_needs_an_idle_node() -> None:
    node = NodeOccupancy("n", cpus=8)
    node.allocate("half", JobShape(node_packing_count=2))
    assert not node.can_fit(JobShape(num_nodes=2, cpus_per_node=1, node_packing_count=2))


@pytest.mark.parametrize("bad", [{"num_nodes": 0}, {"cpus_per_node": 0}, {"gpus_per_node": -1},
                                 {"node_packing_count": 0}])
def test_a_shape_below_its_bounds_is_refused(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be >="):
        JobShape(**bad)


def test_float_noise_below_a_whole_gpu_asks_for_none() -> None:
    assert JobShape.of(gpus_per_rank=1e-12).gpus_per_node == 0
    assert JobShape.of(ranks_per_node=10, gpus_per_rank=0.7).gpus_per_node == 7
