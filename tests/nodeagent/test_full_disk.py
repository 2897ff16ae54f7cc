"""A full disk under data/ keeps a job from starting, not from succeeding: the agent says so
once, starts it again when space returns, and the job runs once, with no RUN_ERROR."""

from __future__ import annotations

import logging

import pytest

from apis import JobState, Registry
from apis._config import SiteConfig
from tests._deadline import DEADLINE
from tests._fulldisk import fill, release, small_tmpfs

from .conftest import AgentFactory, bind, make_app, make_job, wait_state, wait_until

S = JobState


def test_a_job_bound_while_data_is_full_runs_once_space_returns(registry: Registry, site: SiteConfig,
                                                                agent: AgentFactory,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="nodeagent")
    with small_tmpfs(site.data_path, size="1m") as data:
        filler = fill(data)
        make_app(registry, "hello", "echo hello")
        job = make_job(registry, "hello", "j1")
        agent("n1")
        bind(registry, [job], ["n1"])
        wait_until(lambda: "cannot start jobs now" in caplog.text, DEADLINE, "the agent to meet the full disk")
        assert registry.get(type(job), "j1").status.state is S.PREPROCESSED
        release(filler)
        done = wait_state(registry, "j1", (S.JOB_FINISHED, S.RUN_ERROR, S.FAILED), timeout=DEADLINE)
        assert done.status.state is S.JOB_FINISHED, done.status.message
        assert done.status.attempts == 1
        assert (data / "work" / "j1" / "job.out").read_text() == "hello\n"
    assert caplog.text.count("cannot start jobs now") == 1
    assert "Traceback" not in caplog.text
