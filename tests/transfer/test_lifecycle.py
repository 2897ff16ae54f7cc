"""Transfers inside a job's whole life: stage-out after a real run (controller manager, placement
and a real node agent), and a stalled transfer that ``describe job`` explains."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from click.testing import CliRunner

from apis import Job, JobState, TransferItem, TransferTask, get_condition
from controllers.dependency import DependencyReconciler
from controllers.hook import HookReconciler
from controllers.hooks import NoHooks
from controllers.placement.reconciler import PlacementReconciler
from controllers.transfer import transfer_reconcilers
from controllers.transfer.providers import LocalProvider
from kubectl_like.cli import cli
from nodeagent import NodeAgent
from tests._deadline import DEADLINE

from .conftest import make_app, make_jobs, make_site, tasks, wait_states, wait_until


@pytest.mark.parametrize("acquire", [False, True], ids=["placement-binds", "agents-claim"])
def test_stage_out_after_a_real_run_writes_the_result_to_its_destination(registry, site, remote, manager, acquire):
    # agents-claim: the agent reads the jobs while they still stage in (it must leave them to
    # the transfer reconciler) and claims them once PREPROCESSED (their claimable key changes)
    site.extra["agents_acquire"] = acquire
    make_site(registry, site)
    make_app(registry, command="tr a-z A-Z < in.dat > result.json",
             inp={"direction": "in", "localPath": "in.dat"},
             result={"direction": "out", "localPath": "result.json"})
    (remote / "in.dat").write_text('{"answer": "forty-two"}\n')
    hooks = NoHooks()
    manager(reconcilers=[DependencyReconciler(hooks), HookReconciler(hooks), PlacementReconciler(),
                         *transfer_reconcilers(hooks, window=0.05)])
    agent = NodeAgent(registry, name="n1", cpus=2, gpus=0, site_config=site, lease_ttl=5, kill_grace=1.0).start()
    try:
        make_jobs(registry, 2, lambda i: {"inp": f"local:{remote}/in.dat", "result": f"local:{remote}/out/r{i}.json"})
        done = wait_states(registry, ["j0", "j1"], {JobState.JOB_FINISHED, JobState.FAILED}, timeout=DEADLINE)
    finally:
        agent.stop(timeout=DEADLINE)
        agent.wait(DEADLINE)
    for j in done:
        assert j.status.state is JobState.JOB_FINISHED, j.status.message
        states = [h.to_state.value for h in j.status.history]
        assert states[states.index("RUN_DONE"):] == ["RUN_DONE", "POSTPROCESSED", "STAGED_OUT", "JOB_FINISHED"]
    assert (remote / "out" / "r0.json").read_text() == '{"ANSWER": "FORTY-TWO"}\n'
    assert (remote / "out" / "r1.json").read_text() == '{"ANSWER": "FORTY-TWO"}\n'
    # How items are batched into TransferTasks depends on timing (a window); what is promised
    # is that each job's stage-in and stage-out was done once, by a task that succeeded.
    done_tasks = tasks(registry)
    assert all(t.status.state == "Succeeded" for t in done_tasks), [t.status for t in done_tasks]
    moved = sorted((t.spec.direction, item.job, item.slot) for t in done_tasks for item in t.spec.items)
    assert moved == [("in", "j0", "inp"), ("in", "j1", "inp"), ("out", "j0", "result"), ("out", "j1", "result")]


class BlockingProvider(LocalProvider):
    """A file:// stand-in whose copies wait until ``release`` is set: no progress meanwhile."""

    name = "file"

    def __init__(self) -> None:
        super().__init__(workers=2)
        self.release = threading.Event()

    def transfer_item(self, task: TransferTask, item: TransferItem, progress: Callable[[int], None]) -> int:
        self.release.wait(DEADLINE)
        progress(1)
        return 1


def test_a_stalled_transfer_is_a_condition_on_the_job_that_describe_shows(registry, site, remote, manager):
    make_site(registry, site)
    make_app(registry)
    provider = BlockingProvider()
    manager(providers={"file": lambda path: provider}, stall_after=0.3)
    make_jobs(registry, 1, lambda i: {"inp": f"local:{remote}/in{i}.dat"})

    def stalled():
        return get_condition(registry.get(Job, "j0").status.conditions, "TransferStalled")

    cond = wait_until(stalled, what="TransferStalled on j0")
    assert cond.reason == "NoProgress" and "no progress for" in cond.message
    assert registry.get(Job, "j0").status.state is JobState.READY
    out = CliRunner().invoke(cli, ["--store", site.store_url, "describe", "job", "j0"])
    assert out.exit_code == 0, out.output
    assert "TransferStalled" in out.output and "no progress for" in out.output
    provider.release.set()
    (job,) = wait_states(registry, ["j0"], {JobState.PREPROCESSED})
    assert get_condition(job.status.conditions, "TransferStalled") is None


def test_a_job_waiting_for_its_transfer_names_the_task_its_state_and_age(registry, site, remote, manager):
    make_site(registry, site)
    make_app(registry)
    provider = BlockingProvider()
    manager(providers={"file": lambda path: provider})
    make_jobs(registry, 1, lambda i: {"inp": f"local:{remote}/in{i}.dat"})
    task = wait_until(lambda: next((t for t in tasks(registry) if t.status.state == "Active"), None),
                      what="an Active TransferTask")
    out = CliRunner().invoke(cli, ["--store", site.store_url, "describe", "job", "j0"])
    assert out.exit_code == 0, out.output
    conds = out.output.split("Conditions:", 1)[1].split("Events:", 1)[0]
    assert "WaitingForTransfer" in conds
    assert f"waiting for its stage-in transfer: TransferTask {task.name} is Active, " in conds
    assert " old" in conds  # its age
    provider.release.set()
    wait_states(registry, ["j0"], {JobState.PREPROCESSED})
