"""Re-make the README's pictures: a recorded campaign (bench/_campaign.py) in a fresh site,
its ``balsamctl report -o png``, and the dashboard in headless chromium.

    .venv/bin/python docs/img/make_screenshots.py [N_JOBS]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import store as st
from apis import Registry
from bench._campaign import fill_campaign
from kubectl_like.dashboard_testing import headless_chrome, running_dashboard

HERE = Path(__file__).resolve().parent
BALSAMCTL = str(Path(sys.executable).parent / "balsamctl")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1500
    root = Path(tempfile.mkdtemp(prefix="balsam-shots-"))
    try:
        site = root / "site"
        subprocess.run([BALSAMCTL, "init", str(site)], check=True, capture_output=True)
        store = st.open_store(f"sqlite:///{site}/store.db")
        fill_campaign(Registry(store), n)
        store.close()
        subprocess.run([BALSAMCTL, "--site", str(site), "report", "-o", "png", "--out", str(HERE / "report.png")],
                       check=True)
        with running_dashboard(site) as dash, headless_chrome(1400, 1900) as driver:
            driver.get(dash.base)
            time.sleep(2)  # the EventSource connects; the badge turns "live"
            driver.save_screenshot(str(HERE / "dashboard.png"))
            driver.get(dash.base + "jobs/simulate-000000")
            driver.save_screenshot(str(HERE / "dashboard-job.png"))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
