"""balsamctl benchmarks: ``python -m bench [SCENARIO...] [--size tiny|small|default|large]
[--backend sqlite|etcd|both] [--out DIR]``.

Each scenario is a module ``bench/<module>.py`` that registers itself with ``@scenario(name)``;
the harness (``bench/_harness.py``) discovers it, runs it, prints a rich table and writes
``bench/results/<name>.json`` and ``<name>.png``. How to add one: bench/README.md.
"""

from __future__ import annotations

from ._harness import (
    BackendUnavailable,
    Context,
    Figure,
    Result,
    Skip,
    StoreTarget,
    Target,
    discover,
    main,
    median_ms,
    run,
    scenario,
    timed,
)

__all__ = [
    "BackendUnavailable",
    "Context",
    "Figure",
    "Result",
    "Skip",
    "StoreTarget",
    "Target",
    "discover",
    "main",
    "median_ms",
    "run",
    "scenario",
    "timed",
]
