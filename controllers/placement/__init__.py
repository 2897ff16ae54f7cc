"""Placement: binds PREPROCESSED / RESTART_READY jobs to nodes (ARCHITECTURE.md §4).

``packing`` is the pure engine (no store); the reconciler that feeds it lives beside it.
"""

from .packing import (
    EPSILON,
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

__all__ = [
    "EPSILON",
    "Decision",
    "JobShape",
    "NodeOccupancy",
    "Outcome",
    "Packer",
    "PlacementConflict",
    "PlacementRequest",
    "UnknownNode",
    "whole_gpus",
]
