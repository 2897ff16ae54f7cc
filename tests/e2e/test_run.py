"""Issue 4 end to end: real controller manager and node agent processes on a real store."""

from __future__ import annotations

import signal
import time

import pytest

from apis import Job, JobState, get_condition
from tests._deadline import DEADLINE

from .conftest import TIMED, Cluster, max_concurrency, times

pytestmark = pytest.mark.slow

SECS = {"secs": {"required": False, "default": "1"}}
#: Starts, then waits (at most 60 s) until ``n`` jobs of its batch have started, then ends.
GATED = ("date +%s.%N > start; for _ in $(seq 600); do [ $(ls ../*/start | wc -l) -ge {{ n }} ] && break; "
         "sleep 0.1; done; sleep 0.2; date +%s.%N > end")


def jobs(prefix: str, n: int, **spec) -> list[Job]:
    return [Job(metadata={"name": f"{prefix}-{i}"}, spec={"app": "timed", "workdir": f"{prefix}/{i}", **spec})
            for i in range(n)]


@pytest.mark.parametrize(
    ("npc", "gpus_per_rank", "expected"),
    [(8, 1, 16), (4, 1, 8), (8, 8, 2)],
    ids=["npc8-all-16-at-once", "npc4-8-at-once", "8gpus-2-at-once"],
)
def test_seed_placement_examples_reach_the_documented_concurrency(cluster: Cluster, npc, gpus_per_rank, expected):
    # Each job holds its slot until `expected` jobs have started (or 60 s pass): on a loaded
    # machine 1-s jobs ended before the last of 16 started (13 of 16 seen at once at load 60).
    # More than `expected` at once is still seen; fewer leaves the gate shut and is seen too.
    cluster.app("timed", GATED, parameters={"n": {"required": True}})
    cluster.agent("n0", cpus=64, gpus=8)
    cluster.agent("n1", cpus=64, gpus=8)
    cluster.controller()
    batch = jobs("seed", 16, resources={"nodePackingCount": npc, "gpusPerRank": gpus_per_rank},
                 parameters={"n": str(expected)})
    cluster.registry.create_many(batch)
    done = cluster.wait_all([j.name for j in batch], timeout=DEADLINE)
    assert all(j.status.state is JobState.JOB_FINISHED for j in done)
    assert max_concurrency([times(cluster, j) for j in done]) == expected


def test_concurrent_jobs_on_one_node_get_disjoint_gpus(cluster: Cluster):
    cluster.app("gpus", "echo $CUDA_VISIBLE_DEVICES > gpus; sleep 1")
    cluster.agent("g0", cpus=8, gpus=4)
    cluster.controller()
    batch = [Job(metadata={"name": f"g-{i}"}, spec={"app": "gpus", "workdir": f"g/{i}",
             "resources": {"nodePackingCount": 4, "gpusPerRank": 1}}) for i in range(4)]
    cluster.registry.create_many(batch)
    done = cluster.wait_all([j.name for j in batch])
    sets = [(j.resolve_workdir(cluster.site.data_path) / "gpus").read_text().strip() for j in done]
    assert sorted(sets) == ["0", "1", "2", "3"]


def test_diamond_dag_runs_in_dependency_order(any_cluster: Cluster):
    c = any_cluster
    c.app("timed", TIMED, parameters=SECS)
    # The siblings wait (at most 60 s) until both have started (with top: 3 starts in dag/), so
    # "they ran at once" does not hang on the machine's pace: two 0.2 s runs missed each other
    # on a loaded box.
    c.app("gated", GATED, parameters={"n": {"required": True}})
    c.agent("d0", cpus=4)
    c.controller()
    spec = {"app": "timed", "parameters": {"secs": "0.2"}, "resources": {"nodePackingCount": 4}}
    sibling = {**spec, "app": "gated", "parameters": {"n": "3"}, "parents": ["top"]}
    c.registry.create_many([
        Job(metadata={"name": "top"}, spec={**spec, "workdir": "dag/top"}),
        Job(metadata={"name": "left"}, spec={**sibling, "workdir": "dag/left"}),
        Job(metadata={"name": "right"}, spec={**sibling, "workdir": "dag/right"}),
        Job(metadata={"name": "bottom"}, spec={**spec, "workdir": "dag/bottom", "parents": ["left", "right"]}),
    ])
    done = {j.name: j for j in c.wait_all(["top", "left", "right", "bottom"])}
    t = {n: times(c, j) for n, j in done.items()}
    assert t["top"][1] <= t["left"][0] and t["top"][1] <= t["right"][0]
    assert max(t["left"][1], t["right"][1]) <= t["bottom"][0]
    assert max_concurrency([t["left"], t["right"]]) == 2


def test_failing_job_with_retry_limit_2_runs_3_times_then_fails(cluster: Cluster):
    cluster.app("fail", "echo run >> ../runs; exit 1")
    cluster.agent("f0", cpus=2)
    cluster.controller()
    cluster.registry.create(Job(metadata={"name": "flaky"},
                                spec={"app": "fail", "workdir": "f/flaky", "retry": {"limit": 2}}))
    (job,) = cluster.wait_all(["flaky"])
    assert job.status.state is JobState.FAILED and job.status.attempts == 3
    assert (cluster.site.data_path / "f" / "runs").read_text().count("run") == 3


def test_job_past_its_wall_time_is_killed_and_retried(cluster: Cluster):
    cluster.app("hang", "echo start >> ../starts; sleep 60")
    cluster.agent("w0", cpus=2)
    cluster.controller()
    cluster.registry.create(Job(metadata={"name": "slow"}, spec={
        "app": "hang", "workdir": "w/slow", "retry": {"limit": 1}, "resources": {"wallTimeMin": 0.02}}))
    (job,) = cluster.wait_all(["slow"], timeout=DEADLINE)
    history = [h.to_state.value for h in job.status.history]
    assert history.count("RUN_TIMEOUT") == 2 and "RESTART_READY" in history
    assert job.status.state is JobState.FAILED
    assert (cluster.site.data_path / "w" / "starts").read_text().count("start") == 2


def test_killed_node_agent_loses_no_job(cluster: Cluster):
    cluster.app("timed", TIMED, parameters=SECS)
    cluster.agent("victim", cpus=2)
    cluster.controller()
    batch = jobs("k", 6, parameters={"secs": "8"})  # some still running when a late test thread kills
    cluster.registry.create_many(batch)
    deadline = time.monotonic() + DEADLINE
    while not any(cluster.registry.get(Job, j.name).status.state is JobState.RUNNING for j in batch):
        assert time.monotonic() < deadline, cluster.log("victim")
        time.sleep(0.02)
    cluster.kill("victim")  # kill -9 mid-job: its lease expires, its Node vanishes
    cluster.agent("survivor", cpus=2)
    done = cluster.wait_all([j.name for j in batch], timeout=DEADLINE)
    assert all(j.status.state is JobState.JOB_FINISHED for j in done)
    rerun = [j for j in done if any(h.to_state is JobState.RUN_TIMEOUT for h in j.status.history)]
    assert rerun, "the jobs running on the killed node were rerun"
    assert all(j.status.placement.nodes == ["survivor"] for j in rerun)


def test_killed_leading_controller_manager_hands_over_and_every_job_runs_once(cluster: Cluster):
    cluster.app("once", "echo $BALSAM_JOB_ID >> ../ran; sleep 0.3")
    cluster.agent("o0", cpus=4)
    cluster.controller("cm-a")
    cluster.wait_leader("cm-a")  # checked in the store: otherwise cm-b might lead and nothing hands over
    cluster.controller("cm-b")
    batch = [Job(metadata={"name": f"once-{i}"}, spec={"app": "once", "workdir": f"once/{i}"}) for i in range(20)]
    cluster.registry.create_many(batch[:10])
    deadline = time.monotonic() + DEADLINE  # cm-a is at work on the first ten when it is killed
    while all(cluster.registry.get(Job, j.name).status.state is JobState.CREATED for j in batch[:10]):
        assert time.monotonic() < deadline, cluster.log("cm-a")
        time.sleep(0.02)
    assert cluster.leader() == "cm-a"
    cluster.kill("cm-a")
    cluster.wait_leader("cm-b")
    cluster.registry.create_many(batch[10:])
    done = cluster.wait_all([j.name for j in batch], timeout=DEADLINE)
    assert all(j.status.state is JobState.JOB_FINISHED for j in done)
    ran = (cluster.site.data_path / "once" / "ran").read_text().split()
    assert sorted(ran) == sorted(j.name for j in batch)  # every job, exactly once


def test_unschedulable_job_explains_itself_and_does_not_block_others(cluster: Cluster):
    cluster.app("timed", TIMED, parameters=SECS)
    cluster.agent("u0", cpus=8, gpus=4)
    cluster.controller()
    cluster.registry.create(Job(metadata={"name": "greedy"}, spec={
        "app": "timed", "workdir": "u/greedy", "priority": 9, "resources": {"ranksPerNode": 8, "gpusPerRank": 1}}))
    cluster.registry.create_many(jobs("behind", 3, parameters={"secs": "0.1"}))
    cluster.wait_all([f"behind-{i}" for i in range(3)])
    greedy = cluster.registry.get(Job, "greedy")
    cond = get_condition(greedy.status.conditions, "Unschedulable")
    assert cond is not None and "needs 8 GPUs per node; largest node has 4" in cond.message


def test_agent_stopped_gracefully_requeues_its_running_job(cluster: Cluster):
    cluster.app("timed", TIMED, parameters=SECS)
    cluster.agent("leaving", cpus=1)
    cluster.controller()
    # 20 s: still running when a starved test thread gets round to the SIGTERM (3 s was not sure to be).
    cluster.registry.create_many(jobs("g", 1, parameters={"secs": "20"}))
    deadline = time.monotonic() + DEADLINE
    while cluster.registry.get(Job, "g-0").status.state is not JobState.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    cluster.kill("leaving", signal.SIGTERM)
    cluster.agent("arriving", cpus=1)
    (job,) = cluster.wait_all(["g-0"], timeout=DEADLINE)
    assert job.status.state is JobState.JOB_FINISHED and job.status.attempts == 2
