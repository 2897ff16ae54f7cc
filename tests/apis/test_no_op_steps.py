"""The no-op steps of the state table (``NO_OP_STEPS``): which steps a writer may take in the
same write as the one before, and when the work a job declares stops them."""

from __future__ import annotations

from apis import NO_OP_STEPS, TRANSITIONS, App, Job, JobState, no_op_steps, step_work, transition

S = JobState


def _app(**spec: object) -> App:
    return App.model_validate({"metadata": {"name": "a"}, "spec": {"command": "true", **spec}})


def _job(**spec: object) -> Job:
    return Job.model_validate({"metadata": {"name": "j"}, "spec": {"app": "a", "workdir": "w", **spec}})


def test_every_no_op_step_is_a_move_of_the_table() -> None:
    for frm, (to, _work, _msg) in NO_OP_STEPS.items():
        assert to in TRANSITIONS[frm]


def test_a_job_needing_nothing_goes_from_run_done_to_job_finished() -> None:
    steps = no_op_steps(S.RUN_DONE, lambda work: False)
    assert steps == [(S.POSTPROCESSED, "no postprocess hook"), (S.STAGED_OUT, "no stage-out transfers"),
                     (S.JOB_FINISHED, "no stage-out transfers")]


def test_declared_work_stops_the_steps_before_it() -> None:
    assert no_op_steps(S.RUN_DONE, lambda work: work == "postprocess") == []
    assert [s for s, _ in no_op_steps(S.RUN_DONE, lambda work: work == "stage_out")] == [S.POSTPROCESSED]
    assert [s for s, _ in no_op_steps(S.READY, lambda work: work == "preprocess")] == [S.STAGED_IN]
    assert [s for s, _ in no_op_steps(S.READY, lambda work: False)] == [S.STAGED_IN, S.PREPROCESSED]


def test_step_work_reads_hooks_from_the_app_and_stage_out_from_the_jobs_filled_slots() -> None:
    slot = {"result": {"direction": "out", "localPath": "r.txt"}}
    plain = _app(transfers=slot)
    assert not step_work(_job(), plain, "stage_out")
    assert step_work(_job(transfers={"result": "remote:/r.txt"}), plain, "stage_out")
    assert not step_work(_job(transfers={"result": "remote:/r.txt"}), plain, "stage_in")
    assert not step_work(_job(), plain, "postprocess")
    hooked = App.model_validate({"metadata": {"name": "a"}, "spec": {
        "python": {"module": "m", "class": "C", "hooks": ["postprocess"]}}})
    assert step_work(_job(), hooked, "postprocess") and not step_work(_job(), hooked, "preprocess")
    every = App.model_validate({"metadata": {"name": "a"}, "spec": {"python": {"module": "m", "class": "C"}}})
    assert step_work(_job(), every, "preprocess")  # a class that does not list its hooks runs them all


def test_collapsed_steps_are_each_in_the_history() -> None:
    job = _job()
    for s in (S.READY, S.STAGED_IN, S.PREPROCESSED, S.RUNNING, S.RUN_DONE):
        transition(job, s)
    for s, msg in no_op_steps(job.status.state, lambda work: step_work(job, _app(), work)):
        transition(job, s, msg)
    assert [h.to_state for h in job.status.history][-4:] == [S.RUN_DONE, S.POSTPROCESSED, S.STAGED_OUT,
                                                             S.JOB_FINISHED]
