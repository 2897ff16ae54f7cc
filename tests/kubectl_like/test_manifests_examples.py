"""The runnable examples in manifests/: every document parses and validates, and each says
how to run it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from apis import KINDS, App, Job, Resource, parse_object

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
FILES = sorted(p for p in MANIFESTS.iterdir() if p.suffix in (".yaml", ".yml", ".json"))


def load(path: Path) -> list[Resource]:
    docs = [d for d in YAML(typ="safe").load_all(path.read_text()) if d is not None]
    return [parse_object(d, KINDS) for d in docs]


def test_the_examples_are_there() -> None:
    assert {p.name for p in FILES} >= {"hello.yaml", "ensemble.yaml", "dag.yaml", "gpu-packing.yaml"}


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_manifest_parses_validates_and_says_how_to_run_it(path: Path) -> None:
    objs = load(path)
    assert objs
    apps = {o.name for o in objs if isinstance(o, App)}
    for o in objs:
        if isinstance(o, Job):
            assert o.spec.app in apps, f"{o.name}: app {o.spec.app} is not in {path.name}"
            assert set(o.spec.parents) <= {j.name for j in objs if isinstance(j, Job)}
    assert "balsamctl up" in path.read_text().split("apiVersion")[0]  # a comment says how to run it


def test_ensemble_is_what_make_ensemble_writes(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_ensemble", MANIFESTS / "make_ensemble.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["-o", str(tmp_path / "e.yaml")]) == 0
    assert (tmp_path / "e.yaml").read_text() == (MANIFESTS / "ensemble.yaml").read_text()
    jobs = [o for o in load(MANIFESTS / "ensemble.yaml") if isinstance(o, Job)]
    assert len(jobs) == 100 and len({j.spec.workdir for j in jobs}) == 100


def test_dag_is_a_diamond() -> None:
    jobs = {o.name: o for o in load(MANIFESTS / "dag.yaml") if isinstance(o, Job)}
    parents = {n: sorted(j.spec.parents) for n, j in jobs.items()}
    assert parents == {"dag-prepare": [], "dag-left": ["dag-prepare"], "dag-right": ["dag-prepare"],
                       "dag-join": ["dag-left", "dag-right"]}


def test_gpu_packing_is_the_seeds_example() -> None:
    jobs = [o for o in load(MANIFESTS / "gpu-packing.yaml") if isinstance(o, Job)]
    assert len(jobs) == 16
    assert {(j.spec.resources.node_packing_count, j.spec.resources.gpus_per_rank,
             j.spec.resources.ranks_per_node) for j in jobs} == {(8, 1, 1)}
    assert "up --nodes 2 --cpus 64 --gpus 8" in (MANIFESTS / "gpu-packing.yaml").read_text()
