"""``balsamctl report`` and ``top`` on a recorded campaign (bench/_campaign.py), on SQLite and
etcd: the figures are those of apis.analytics (tested against hand-computed values in
tests/apis/test_analytics.py), the PNG is a PNG, a missing matplotlib is one error line, and
bad input is refused the kubectl way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from apis import Job
from apis.analytics import build_report, load_jobs
from bench._campaign import NODES, fill_campaign

from .conftest import Site

N = 300


def filled(site: Site) -> Site:
    fill_campaign(site.registry(), N, site.namespace, now=datetime.now(UTC))
    return site


def test_report_table_and_json_say_the_same(any_site: Site) -> None:
    site = filled(any_site)
    r = site.run("report", "-o", "json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    expected = build_report(load_jobs(site.registry(), site.namespace), site.namespace).to_json()
    assert doc["jobs"] == N and doc["stateCounts"] == expected["stateCounts"]
    assert doc["stateCounts"] == {"JOB_FINISHED": 276, "FAILED": 9, "RUNNING": 9, "CREATED": 6}
    assert sum(doc["throughput"]["finished"]) == 276
    assert doc["failuresByExitCode"]["137"]["jobs"] == 3
    assert set(doc["runTimeSeconds"]) == {"simulate", "analyze", "publish"}
    table = site.run("report")
    assert table.exit_code == 0, table.stderr
    for needle in ("THROUGHPUT", "NODE UTILIZATION", "JOBS BY STATE OVER TIME", "RUN TIME PER APP",
                   "FAILURES BY EXIT CODE", "JOB_FINISHED   276", "exited with code 137"):
        assert needle in table.stdout, needle


def test_report_selector_since_and_out_file(site: Site, tmp_path: Path) -> None:
    filled(site)
    r = site.run("report", "-l", "experiment=xpcs,batch=0", "-o", "json")
    doc = json.loads(r.stdout)
    assert doc["jobs"] == len([i for i in range(N) if i % 2 == 0 and i % 10 == 0]) == 30
    late = json.loads(site.run("report", "--since", "5m", "-o", "json").stdout)
    everything = json.loads(site.run("report", "-o", "json").stdout)
    assert sum(late["throughput"]["finished"]) < sum(everything["throughput"]["finished"])
    out = tmp_path / "r.json"
    assert site.run("report", "-o", "json", "--out", str(out)).exit_code == 0
    assert json.loads(out.read_text())["jobs"] == N
    assert out.stat().st_mode & 0o077 == 0  # private, as every file we write


def test_report_png(site: Site, tmp_path: Path) -> None:
    filled(site)
    out = tmp_path / "report.png"
    r = site.run("report", "-o", "png", "--out", str(out))
    assert r.exit_code == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_report_png_without_matplotlib_is_one_error_line(site: Site, tmp_path: Path) -> None:
    """Hide matplotlib from a real balsamctl process: a package of that name that cannot be
    imported comes first on its path."""
    filled(site)
    hide = tmp_path / "hide"
    (hide / "matplotlib").mkdir(parents=True)
    (hide / "matplotlib" / "__init__.py").write_text("raise ImportError('hidden for this test')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALSAM_")}
    env.update(BALSAM_SITE_PATH=str(site.path), PYTHONPATH=str(hide))
    exe = Path(sys.executable).parent / "balsamctl"
    p = subprocess.run([str(exe), "report", "-o", "png", "--out", str(tmp_path / "x.png")], capture_output=True,
                       text=True, env=env, timeout=120)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [
        "error: -o png needs matplotlib, which is not installed: pip install 'balsamctl[plots]'"]
    assert not (tmp_path / "x.png").exists()
    ok = subprocess.run([str(exe), "report", "-o", "json"], capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0 and json.loads(ok.stdout)["jobs"] == N  # only the PNG needs it


def test_report_bad_input(site: Site) -> None:
    filled(site)
    before = site.registry().store.current_revision()
    assert "--since" in site.run("report", "--since", "yesterday").one_error()
    assert "unable to parse requirement" in site.run("report", "-l", "a b").one_error()
    assert site.run("report", "-o", "xml").one_error().startswith("error: ")
    assert "is a directory" in site.run("report", "-o", "png", "--out", str(site.path)).one_error()
    assert site.registry().store.current_revision() == before


def test_top_nodes_and_jobs(any_site: Site) -> None:
    site = filled(any_site)
    r = site.run("top", "nodes", "--sort-by", "occupancy")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "BATCHJOB", "CPU(slots)"] and len(lines) == NODES + 1
    occ = [float(ln.split()[6]) for ln in lines[1:]]
    assert occ == sorted(occ, reverse=True) and occ[0] > 0
    j = site.run("top", "jobs", "--limit", "4")
    assert j.exit_code == 0, j.stderr
    rows = [ln.split() for ln in j.stdout.splitlines()[1:]]
    running = {o.name: o for o in Job.objects.using(site.registry()).filter(state="RUNNING").in_namespace(site.namespace)}
    assert len(rows) == 4 and all(r[0] in running for r in rows)
    starts = [running[r[0]].status.start_time for r in rows]
    assert starts == sorted(starts)  # longest-running first
    assert "more running" in j.stderr
    assert site.run("top", "jobs", "-l", "experiment=none").stderr.startswith("No running jobs")
    assert site.run("top", "pods").one_error().startswith("error: ")
