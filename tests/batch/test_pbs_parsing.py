"""The ``pbs`` plugin's reading of PBS Pro's own formats (``qstat -f -F json``, ``qsub``,
``qstat -Q -f -F json``) and its mapping of job states and exit statuses. Samples follow PBS
Pro 2022's output as documented and as Balsam's PBS scheduler parses it."""

from __future__ import annotations

import json

import pytest

from controllers.batch.pbs import (
    EXIT_WALLTIME,
    PBSScheduler,
    finished_state,
    parse_ctime,
    parse_qstat_json,
    parse_qsub,
    parse_queues,
    walltime,
)
from controllers.batch.scheduler import SchedulerError, SubmitRequest

QSTAT = r"""{
    "timestamp":1796620000,
    "pbs_version":"2022.1.3.20230614134139",
    "pbs_server":"polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov",
    "Jobs":{
        "1234567.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov":{
            "Job_Name":"balsam-alloc-0123abcd",
            "Job_Owner":"user@polaris-login-02.hsn.cm.polaris.alcf.anl.gov",
            "job_state":"Q",
            "queue":"debug",
            "comment":"Not Running: Insufficient amount of resource: ncpus ",
            "Resource_List":{"ncpus":64,"nodect":2,"place":"scatter","select":"2:system=polaris","walltime":"00:30:00"},
            "qtime":"Mon Dec  7 05:00:00 2026",
            "Variable_List":{"PBS_O_HOME":"/home/user","PBS_O_PS1":"\u@\h:\w\$ "},
            "project":"datascience"
        },
        "1234568.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov":{
            "job_state":"R",
            "comment":"Job run at Mon Dec 07 at 05:10 on (x3005c0s7b0n0:ncpus=64)",
            "stime":"Mon Dec  7 05:10:11 2026"
        },
        "1234569.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov":{
            "job_state":"F",
            "comment":"Job run at Mon Dec 07 at 05:10 on (x3005c0s7b0n0:ncpus=64) and finished",
            "stime":"Mon Dec  7 05:10:11 2026",
            "obittime":"Mon Dec  7 05:40:12 2026",
            "Exit_status":-29
        },
        "1234570[].polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov":{"job_state":"B"}
    }
}"""


def test_qstat_json_jobs_become_phases_with_pbs_words_comments_and_times() -> None:
    infos = parse_qstat_json(QSTAT)  # Variable_List's bare backslashes (a PBS quirk) are tolerated
    assert set(infos) == {"1234567", "1234568", "1234569", "1234570[]"}
    q, r, f = infos["1234567"], infos["1234568"], infos["1234569"]
    assert (q.phase, q.state) == ("queued", "Q") and "Insufficient amount of resource" in q.reason
    assert (r.phase, r.state) == ("running", "R") and r.start_time == parse_ctime("Mon Dec  7 05:10:11 2026")
    assert (f.phase, f.state, f.exit_code) == ("finished", "TIMEOUT", "-29")
    assert f.end_time is not None and f.start_time is not None and (f.end_time - f.start_time).seconds == 1801
    assert f.describe().startswith("TIMEOUT (Exit_status -29: Job run at")
    assert infos["1234570[]"].phase == "running"  # an array job that has begun


@pytest.mark.parametrize(("letter", "phase"), [("Q", "queued"), ("H", "queued"), ("W", "queued"), ("T", "queued"),
                                               ("S", "queued"), ("R", "running"), ("E", "running"),
                                               ("F", "finished"), ("X", "finished")])
def test_every_pbs_job_state_has_a_phase(letter: str, phase: str) -> None:
    doc = json.dumps({"Jobs": {"7.s": {"job_state": letter, "Exit_status": 0}}})
    assert parse_qstat_json(doc)["7"].phase == phase


@pytest.mark.parametrize(("exit_status", "comment", "word"), [
    (0, "Job run at ... and finished", "COMPLETED"),
    (3, "Job run at ... and finished", "FAILED"),
    (-1, "", "FAILED"),  # JOB_EXEC_FAIL1: the MoM could not start it
    (EXIT_WALLTIME, "", "TIMEOUT"),
    (271, "Job run at ... and finished", "CANCELLED"),  # 256 + SIGTERM: qdel of a running job
    (None, "Job deleted as result of qdel request", "CANCELLED"),  # deleted before it ran
    (271, "job killed: walltime 1830 exceeded limit 1800", "TIMEOUT"),
])
def test_exit_status_and_comment_say_how_a_finished_job_ended(exit_status: int | None, comment: str,
                                                              word: str) -> None:
    assert finished_state(exit_status, comment) == word


@pytest.mark.parametrize("text", [
    "not json at all",
    '["Jobs"]',
    '{"Jobs": {"7.s": {"job_state": "Z"}}}',
    '{"Jobs": {"7.s": {"job_state": "F", "Exit_status": "lots"}}}',
    '{"Jobs": {"seven": {"job_state": "R"}}}',
])
def test_garbage_from_qstat_is_garbage_never_a_state(text: str) -> None:
    with pytest.raises(SchedulerError) as e:
        parse_qstat_json(text)
    assert e.value.kind == "garbage"


def test_no_jobs_key_is_no_job() -> None:
    assert parse_qstat_json('{"timestamp": 1, "pbs_version": "2022.1.3", "pbs_server": "s"}') == {}


def test_qsub_prints_the_full_job_id() -> None:
    assert parse_qsub("1234567.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov\n") == (
        "1234567.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov")
    with pytest.raises(SchedulerError, match="no job id"):
        parse_qsub("qsub: would have submitted\n")


def test_queues_from_qstat_Q() -> None:  # noqa: N802 - the flag's name
    doc = ('{"Queue": {"debug": {"queue_type": "Execution", "enabled": "True", "started": "True", '
           '"resources_max": {"nodect": 2, "walltime": "01:00:00"}}, "prod": {"queue_type": "Route"}, '
           '"demand": {"queue_type": "Execution", "enabled": "False", "started": "True"}}}')
    parts = {p.name: p for p in parse_queues(doc)}
    assert set(parts) == {"debug", "demand"}
    assert parts["debug"].nodes == 2 and parts["debug"].max_time == "01:00:00" and parts["debug"].available
    assert not parts["demand"].available


@pytest.mark.parametrize(("minutes", "text"), [(60, "1:00:00"), (0.25, "0:00:15"), (90.5, "1:30:30"),
                                                (0.001, "0:00:01"), (1440, "24:00:00")])
def test_walltime_is_h_mm_ss_rounded_up_to_seconds(minutes: float, text: str) -> None:
    assert walltime(minutes) == text


def test_qsub_arguments_come_from_the_batchjob_and_the_site(tmp_path: object) -> None:
    plugin = PBSScheduler(system="polaris", place="scatter", filesystems="home:grand:eagle")
    req = SubmitRequest(job_name="balsam-a-1", script="/s/batch/a.sh", output="/s/logs/batch/a.out",  # type: ignore[arg-type]
                        num_nodes=4, wall_time_min=30, queue="prod", project="datascience",
                        optional_params={"filesystems": "home:eagle", "mig_count": "2", "-W": "depend=afterok:1"})
    assert plugin.submit_argv(req) == [
        "qsub", "-N", "balsam-a-1", "-o", "/s/logs/batch/a.out", "-j", "oe",
        "-l", "select=4:system=polaris", "-l", "walltime=0:30:00",
        "-l", "place=scatter", "-l", "filesystems=home:eagle", "-l", "mig_count=2",
        "-q", "prod", "-A", "datascience", "-W", "depend=afterok:1", "/s/batch/a.sh"]
