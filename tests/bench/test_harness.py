"""Every benchmark scenario runs once at ``--size tiny`` so the harness cannot rot.

No timing assertions (a benchmark is not a test): only that each scenario runs, writes
``<name>.json`` with the expected keys and saves ``<name>.png``. Scenarios that use a store
run on SQLite, and on the session's etcd where they support it. A scenario added as
``bench/<module>.py`` is picked up here without editing this file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import bench
from bench._harness import discover, import_errors, main
from tests._support import skip_or_fail

SCENARIOS = discover()

TOP_KEYS = {
    "scenario",
    "status",
    "started",
    "elapsed_s",
    "inputs",
    "machine",
    "figures",
    "baseline",
    "ratios",
    "targets",
    "notes",
    "series",
    "plot",
}
MACHINE_KEYS = {"cpu_count", "platform", "python", "date", "git_commit"}
FIGURE_KEYS = {"key", "name", "label", "backend", "value", "unit", "baseline"}
# Figures a scenario must record at --size tiny ("{b}." is the backend of the run).
EXPECTED_FIGURES = {
    "e2e": {"spawn", "ideal_makespan", "{b}.jobs_per_s", "{b}.spawn_ratio", "{b}.utilization", "{b}.makespan",
            "{b}.cpu_ms_controllers", "{b}.cpu_ms_agent_0", "{b}.revisions_per_job"},
    "dag": {"stamp_launch_ms", "fanout_direct_ms", "{b}.chain_p50_ms", "{b}.chain_p99_ms", "{b}.fanout_first_ms",
            "{b}.fanout_last_ms", "{b}.fanin_ms"},
    "parsl": {"spawn", "pool_bash", "pool_python", "{b}.balsamctl"},
    "scale": {"{b}.raw_puts", "{b}.create_5e2", "{b}.count_ms_2e3", "{b}.selector_cli_ms_2e3",
              "{b}.cli_startup_ms_2e3", "{b}.informer_rss_mib_2e3", "{b}.cm_rss_mib_2e3"},
    "dashboard": {"raw_read", "report_s", "healthz_paint_ms", "first_paint_ms", "rendered_ms", "watch_ms",
                  "change_ms"},
    "cli-verbs": {"{b}.list_all", "{b}.state_index", "{b}.name_index", "{b}.workdir_scan", "{b}.workdir_narrowed",
                  "{b}.retry", "{b}.label"},
    "durability": {"{b}.normal_single_puts", "{b}.full_single_puts", "{b}.normal_bulk_create",
                   "{b}.full_bulk_create", "{b}.normal_e2e_jobs_per_s", "{b}.full_e2e_jobs_per_s"},
    "sites": {"baseline_jobs_per_s", "secure_jobs_per_s", "baseline_hop_p50_ms", "secure_hop_p99_ms",
              "pause_in_use_s", "pause_leader_s", "errors_in_use", "lost_leader", "twice_leader"},
    "chaos": {"{b}.lease_ttl", "{b}.lost", "{b}.overlapping_runs", "{b}.tracebacks", "{b}.faults",
              "{b}.recovery_worst", "{b}.recovery_median", "{b}.no_recovery", "{b}.extra_runs_without_timeout",
              "{b}.index_problems", "{b}.leftover_processes"},
    "etcd-cost": {"{b}.plain1_put_ms", "{b}.secure3_put_ms", "{b}.plain3_puts_per_s_8", "{b}.tls1_get_ms",
                  "{b}.auth1_txn_ms", "{b}.unary_calls_per_job", "{b}.watch_events_per_job",
                  "{b}.pipeline_unary_calls_per_job", "{b}.pwjwt1_puts_per_s_8", "{b}.pwsimple1_puts_per_s_8"},
    "placement": {"engine", "placements", "engine_cpu", "placements_cpu", "placements_with_events",
                  "lower_bound_rounds", "rounds", "efficiency",
                  "unschedulable", "trickle_small", "trickle_big"},
}


def _cases() -> list[object]:
    cases: list[object] = []
    for name, sc in sorted(SCENARIOS.items()):
        if not sc.backends:
            cases.append(pytest.param(name, None, id=name))
            continue
        if "sqlite" in sc.backends:
            cases.append(pytest.param(name, "sqlite", id=f"{name}-sqlite"))
        if "etcd" in sc.backends:
            cases.append(pytest.param(name, "etcd", id=f"{name}-etcd", marks=pytest.mark.etcd))
    return cases


def test_every_bench_module_imports() -> None:
    assert import_errors() == {}


def test_core_scenarios_registered() -> None:
    assert {"spawn", "store"} <= set(SCENARIOS)


@pytest.mark.parametrize(("name", "backend"), _cases())
def test_scenario_tiny(
    name: str, backend: str | None, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    etcd_url = request.getfixturevalue("etcd_url") if backend == "etcd" else None
    results = bench.run(
        [name], size="tiny", backend=backend, out=tmp_path, etcd_url=etcd_url, keep_going=False
    )
    res = results[name]
    if res.status == "skipped":  # a real service the scenario needs (Slurm, etcd) is missing
        skip_or_fail(f"{name}: {'; '.join(res.notes)}")
    assert res.status == "ok"
    doc = json.loads((tmp_path / f"{name}.json").read_text())
    assert TOP_KEYS <= set(doc), TOP_KEYS - set(doc)
    assert doc["scenario"] == name and doc["status"] == "ok"
    assert MACHINE_KEYS <= set(doc["machine"])
    assert doc["inputs"]["size"] == "tiny"
    assert doc["figures"], "a scenario must record at least one figure"
    for f in doc["figures"]:
        assert FIGURE_KEYS <= set(f), f
        if "ratio_to" in f:
            assert f["ratio_to"] in {g["key"] for g in doc["figures"] if g["baseline"]}
    assert doc["baseline"], "a scenario must record the baseline it is measured against"
    keys = {f["key"] for f in doc["figures"]}
    expected = {k.replace("{b}", backend or "") for k in EXPECTED_FIGURES.get(name, set())}
    assert expected <= keys, expected - keys
    by_key = {f["key"]: f for f in doc["figures"]}
    if name == "placement":  # what the reconciler decided, not how fast
        assert by_key["unschedulable"]["value"] == doc["inputs"]["never_fits"]["count"]
        assert 0 < by_key["efficiency"]["value"] <= 1
    if name == "chaos":  # what held, not how fast
        assert by_key[f"{backend}.faults"]["value"] >= 1
        assert by_key[f"{backend}.lost"]["value"] == 0 and by_key[f"{backend}.overlapping_runs"]["value"] == 0
    if name == "e2e":
        assert 0 < by_key[f"{backend}.utilization"]["value"] <= 1
    if backend is not None:
        assert {f["backend"] for f in doc["figures"] if f["backend"]} == {backend}
    assert doc["plot"] == f"{name}.png"
    png = tmp_path / f"{name}.png"
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_store_json_names_issue3_figures(tmp_path: Path) -> None:
    bench.run(["store"], size="tiny", backend="sqlite", out=tmp_path, plot=False, keep_going=False)
    doc = json.loads((tmp_path / "store.json").read_text())
    keys = {f["key"] for f in doc["figures"]}
    assert {"sqlite.raw_puts", "sqlite.bulk_create", "sqlite.count_ms", "sqlite.selector_ms"} <= keys
    assert set(doc["targets"]) == {"sqlite.bulk_create", "sqlite.count_ms", "sqlite.selector_ms"}
    assert doc["ratios"]["sqlite.bulk_create"]["to"] == "sqlite.raw_puts"
    by_key = {f["key"]: f for f in doc["figures"]}
    assert by_key["sqlite.count_ms"]["extra"]["result"] == doc["inputs"]["jobs"]
    assert by_key["sqlite.selector_ms"]["extra"]["result"] == doc["inputs"]["selector_expected"]
    assert not (tmp_path / "store.png").exists()


def test_result_ratio_and_target() -> None:
    res = bench.Result("x")
    res.add("base", 200.0, "ops/s", baseline=True, backend="b")
    f = res.add("thing", 50.0, "ops/s", backend="b", ratio_to="base", target=">= 40")
    assert f.ratio == 0.25 and f.met is True
    assert res.add("lat", 300.0, "ms", target="<= 200").met is False
    with pytest.raises(ValueError):
        res.add("lat", 1.0, "ms")
    with pytest.raises(KeyError):
        res.add("other", 1.0, "ms", ratio_to="missing")


def test_cli_list_and_unknown_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    assert "store" in capsys.readouterr().out
    assert main(["no-such-scenario", "--size", "tiny"]) == 2
    assert "unknown scenario" in capsys.readouterr().err


@pytest.mark.etcd
def test_etcd_launcher_starts_fresh_and_cleans_up() -> None:
    from bench._etcd import EtcdServer, etcd_binary

    if not etcd_binary():
        skip_or_fail("etcd is not installed")
    from store import open_store

    with EtcdServer.start() as server:
        s = open_store(server.url)
        try:
            s.put("/k", b"v")
            assert s.get("/k") is not None
        finally:
            s.close()
        root = server.root
    assert server.proc.poll() is not None and not root.exists()
