"""scripts/demo — the README's first command after the install — runs its campaign to the
end on the embedded SQLite store and says where to look."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)  # 26 jobs through `up` plus a few CLI start-ups, on 2 busy cores
def test_demo_runs_its_campaign_to_the_end(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALSAM_")}
    env["BALSAM_DEMO_DIR"] = str(tmp_path)
    p = subprocess.run([str(REPO / "scripts" / "demo")], capture_output=True, text=True, env=env, timeout=900,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stdout + p.stderr
    site = tmp_path / "site"
    assert "25 jobs JOB_FINISHED, 1 FAILED on purpose" in p.stdout
    assert "returned: 1 4 9 16" in p.stdout  # the Python apps' results
    for where in ("balsamctl get jobs", f"report PNG: {site}/report.png", "balsamctl dashboard"):
        assert where in p.stdout, where
    assert (site / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = subprocess.run([str(REPO / ".venv" / "bin" / "balsamctl"), "--site", str(site), "report", "-o", "json"],
                       capture_output=True, text=True, timeout=300)
    doc = json.loads(r.stdout)
    assert doc["stateCounts"] == {"JOB_FINISHED": 25, "FAILED": 1}
    assert doc["failuresByExitCode"]["3"]["examples"][0]["job"] == "demo-flaky"
    assert {"simulate", "dag-step", "square"} <= set(doc["runTimeSeconds"])
