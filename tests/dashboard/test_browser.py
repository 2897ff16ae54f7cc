"""The dashboard in a real headless chromium: it loads, its counts are ``get``'s, a job
finishing (run by ``balsamctl up``) shows in the open page, a failing job's reason and output
appear, a job's page shows its history and conditions, and a wrong token is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By

from apis import App, Job, Registry
from kubectl_like.dashboard_testing import running_dashboard

from .conftest import balsamctl, css_text, dom_text, wait_dom

pytestmark = pytest.mark.browser

TOKEN = "test-token-0123456789"
T0 = datetime.now(UTC) - timedelta(minutes=5)


def recorded_job(name: str, state: str, hist: list[tuple[str, str]], **status: Any) -> Job:
    return Job.model_validate({
        "metadata": {"name": name, "labels": {"experiment": "dash"}},
        "spec": {"app": "hello", "workdir": f"w/{name}"},
        "status": {"state": state, **status, "history": [
            {"from": f, "to": t, "time": (T0 + timedelta(seconds=10 * i)).isoformat()}
            for i, (f, t) in enumerate(hist)]},
    })


def fill(registry: Registry) -> None:
    registry.create(App(metadata={"name": "hello"}, spec={"command": "echo hello"}))
    done = [("CREATED", "READY"), ("READY", "STAGED_IN"), ("STAGED_IN", "PREPROCESSED"), ("PREPROCESSED", "RUNNING"),
            ("RUNNING", "RUN_DONE"), ("RUN_DONE", "POSTPROCESSED"), ("POSTPROCESSED", "STAGED_OUT"),
            ("STAGED_OUT", "JOB_FINISHED")]
    registry.create_many(
        [recorded_job(f"done-{i}", "JOB_FINISHED", done) for i in range(7)]
        + [recorded_job(f"run-{i}", "RUNNING", done[:4]) for i in range(3)]
        + [Job(metadata={"name": f"wait-{i}"}, spec={"app": "hello", "workdir": f"w/wait-{i}"}) for i in range(4)]
        + [recorded_job("broken", "FAILED", done[:4] + [("RUNNING", "RUN_ERROR"), ("RUN_ERROR", "FAILED")],
                        returnCode=7, message="exited with code 7; no retry policy allows another attempt",
                        outputTail="line 1\nsegfault in solver\n",
                        conditions=[{"type": "Failed", "status": "True", "reason": "ExitCode",
                                     "message": "exit code 7"}])]
    )


def get_count(site: Path, state: str) -> int:
    r = balsamctl(site, "get", "jobs", "--state", state, "-o", "name")
    assert r.returncode == 0, r.stderr
    return len(r.stdout.split())


def test_page_loads_and_its_counts_are_gets(site: Path, registry: Registry, browser: Any) -> None:
    fill(registry)
    with running_dashboard(site, TOKEN) as dash:
        browser.get(dash.url())
        wait_dom(browser, lambda: dom_text(browser, "count-total") == "15", "the total on the page")
        for state in ("JOB_FINISHED", "RUNNING", "CREATED", "FAILED"):
            card = dom_text(browser, f"count-{state}").split()
            assert card == [str(get_count(site, state)), state]
        assert dom_text(browser, "namespace") == "default"
        assert browser.execute_script("return document.querySelectorAll('#chart-throughput rect').length") >= 1


def test_failing_jobs_reason_and_output_and_its_job_page(site: Path, registry: Registry, browser: Any) -> None:
    fill(registry)
    with running_dashboard(site, TOKEN) as dash:
        browser.get(dash.url())
        row = wait_dom(browser, lambda: dom_text(browser, "failing"), "the failing jobs table")
        assert "broken" in row and "exited with code 7" in row
        assert "segfault in solver" in css_text(browser, "#failing pre")
        href = browser.execute_script("return document.querySelector('#failing a').href")
        assert href == dash.base + "jobs/broken"
        browser.get(href)  # the link, without the token in it: the cookie set by ?token= carries it
        wait_dom(browser, lambda: dom_text(browser, "job-name") == "broken", "the job page")
        assert dom_text(browser, "job-state") == "FAILED"
        assert "namespace default" in dom_text(browser, "job-meta")
        history = dom_text(browser, "history")
        assert "RUN_ERROR" in history and "PREPROCESSED" in history
        conditions = dom_text(browser, "conditions")  # shown as stored, whatever its keys
        assert "ExitCode" in conditions and "exit code 7" in conditions
        assert "segfault in solver" in dom_text(browser, "output-tail")


def test_jobs_run_by_up_show_in_the_open_page(site: Path, registry: Registry, browser: Any) -> None:
    registry.create_many([App(metadata={"name": "hello"}, spec={"command": "echo hello"}),
                          App(metadata={"name": "bad"}, spec={"command": "sh -c 'echo disk quota exceeded; exit 3'"})])
    registry.create_many([Job(metadata={"name": "good"}, spec={"app": "hello", "workdir": "w/good"}),
                          Job(metadata={"name": "oops"}, spec={"app": "bad", "workdir": "w/oops"})])
    with running_dashboard(site, TOKEN) as dash:
        browser.get(dash.url())
        wait_dom(browser, lambda: dom_text(browser, "count-CREATED").split() == ["2", "CREATED"], "2 CREATED")
        before = browser.execute_script("return window.__rendered.version")
        r = balsamctl(site, "up", "--until-done")
        assert r.returncode == 1, r.stderr  # one job failed, as meant
        wait_dom(browser, lambda: dom_text(browser, "count-JOB_FINISHED").split() == ["1", "JOB_FINISHED"],
                 "the finished job on the page")
        wait_dom(browser, lambda: "oops" in dom_text(browser, "failing"), "the failed job on the page")
        assert "exited with code 3" in dom_text(browser, "failing")
        assert "disk quota exceeded" in css_text(browser, "#failing pre")
        assert browser.execute_script("return window.__rendered.version") > before  # pushed, not reloaded
        assert dom_text(browser, "count-total") == "2"


def test_a_wrong_token_is_refused(site: Path, registry: Registry, browser: Any) -> None:
    fill(registry)
    with running_dashboard(site, TOKEN) as dash:
        browser.get(dash.url(token="wrong-token"))
        body = browser.find_element(By.TAG_NAME, "body").text
        assert "401 Unauthorized" in body and "broken" not in body
        for path in ("", "events", "api/summary", "jobs/broken", "api/jobs/broken"):
            assert httpx.get(dash.url(path, token="nope"), timeout=30).status_code == 401
            assert httpx.get(dash.base + path, timeout=30).status_code == 401  # no token at all
        ok = httpx.get(dash.url("api/summary"), timeout=30)
        assert ok.status_code == 200 and ok.json()["total"] == 15
        bearer = httpx.get(dash.base + "api/jobs/broken", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert bearer.status_code == 200 and bearer.json()["status"]["returnCode"] == 7
