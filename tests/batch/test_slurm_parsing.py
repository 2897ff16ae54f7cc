"""The Slurm plugin's parsers on what Slurm 22.05 prints (and on what a broken one might)."""

from __future__ import annotations

import pytest

from controllers.batch.scheduler import SchedulerError
from controllers.batch.slurm import parse_jobcomp_line, parse_sinfo, parse_squeue, parse_submitted, phase_of


def test_squeue_lines() -> None:
    out = ("12|PENDING|Resources|N/A|N/A\n"
           "13|RUNNING|None|2026-11-26T17:17:23|2026-11-26T17:18:23\n"
           "14|TIMEOUT|TimeLimit|2026-11-26T17:00:00|2026-11-26T17:01:30\n\n")
    infos = parse_squeue(out)
    assert [(i.id, i.phase, i.state) for i in infos] == [
        ("12", "queued", "PENDING"), ("13", "running", "RUNNING"), ("14", "finished", "TIMEOUT")]
    assert infos[0].start_time is None and infos[1].start_time is not None
    assert infos[2].describe() == "TIMEOUT (TimeLimit)"
    assert infos[1].describe() == "RUNNING"


@pytest.mark.parametrize("garbage", [
    "Segmentation fault\n",
    "12 RUNNING\n",
    "<html>502 Bad Gateway</html>\n",
    "12|running|None\n",
    "JOBID|STATE\n12|RUNNING\n",
])
def test_squeue_garbage_is_an_error_not_a_state(garbage: str) -> None:
    with pytest.raises(SchedulerError) as e:
        parse_squeue(garbage)
    assert e.value.kind == "garbage" and e.value.reason == "SchedulerGarbage"


@pytest.mark.parametrize(("state", "phase"), [
    ("PENDING", "queued"), ("REQUEUED", "queued"), ("CONFIGURING", "queued"), ("RUNNING", "running"),
    ("COMPLETING", "running"), ("COMPLETED", "finished"), ("CANCELLED", "finished"), ("FAILED", "finished"),
    ("NODE_FAIL", "finished"), ("OUT_OF_MEMORY", "finished"), ("CANCELLED+", "finished"),
])
def test_phases(state: str, phase: str) -> None:
    assert phase_of(state) == phase


def test_jobcomp_record() -> None:
    line = ("JobId=29 UserId=root(0) GroupId=root(0) Name=balsam-a-1234 JobState=TIMEOUT Partition=debug "
            "TimeLimit=1 StartTime=2026-11-26T17:17:23 EndTime=2026-11-26T17:18:53 NodeList=n[1-2] NodeCnt=2 "
            "ProcCnt=2 WorkDir=/tmp DerivedExitCode=0:0 ExitCode=0:15 ")
    info = parse_jobcomp_line(line)
    assert info is not None
    assert (info.id, info.phase, info.state, info.exit_code) == ("29", "finished", "TIMEOUT", "0:15")
    assert info.end_time is not None and info.start_time is not None
    assert parse_jobcomp_line("JobId=x JobState=?") is None


def test_sbatch_parsable() -> None:
    assert parse_submitted("41\n") == "41"
    assert parse_submitted("41;cluster\n") == "41"
    with pytest.raises(SchedulerError) as e:
        parse_submitted("Submitted batch job 41 (not parsable)\n")
    assert e.value.kind == "garbage"


def test_sinfo() -> None:
    parts = parse_sinfo("debug*|up|infinite|3|2|idle\ndebug*|up|infinite|1|2|alloc\nbig|down|1:00:00|2|64|down*\n")
    assert [(p.name, p.nodes, p.idle_nodes, p.cpus_per_node, p.available, p.default) for p in parts] == [
        ("debug", 4, 3, 2, True, True), ("big", 2, 0, 64, False, False)]
    with pytest.raises(SchedulerError):
        parse_sinfo("PARTITION AVAIL\n")
