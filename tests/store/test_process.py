"""Process-wide GC settings: set by an entry point, per role; nothing else touches them."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from store.process import GC_THRESHOLDS, tune_gc


@pytest.mark.parametrize("role", sorted(GC_THRESHOLDS))
def test_tune_gc_sets_the_roles_thresholds_and_leaves_the_collector_on(role: str) -> None:
    before = gc.get_threshold()
    try:
        tune_gc(role)  # type: ignore[arg-type]
        assert gc.get_threshold() == GC_THRESHOLDS[role]  # type: ignore[index]
        assert gc.isenabled()
    finally:
        gc.set_threshold(*before)


def test_the_cli_entry_point_tunes_its_process() -> None:
    code = ("import gc, sys\nfrom kubectl_like.cli import main\nsys.argv=['balsamctl','--version']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\nprint(gc.get_threshold(), gc.isenabled())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == f"{GC_THRESHOLDS['cli']} True"


def test_importing_the_api_leaves_the_collector_alone() -> None:
    code = "import gc\nt = gc.get_threshold()\nimport apis, controllers, kubectl_like.cli\nprint(gc.get_threshold() == t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "True"
