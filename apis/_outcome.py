"""What a finished Job returns: its value, or the exception to raise (the model's side of
Balsam's Python App Futures; waiting for the job is the client's, ``apis._futures``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._pycodec import b64unpickle, decode_result
from ._states import JobState

if TYPE_CHECKING:
    from ._kinds import Job


class NoResult(Exception):
    """``result_nowait()``: the job has not finished yet."""


class JobFailed(Exception):
    """The job FAILED without a Python exception to re-raise (a shell command that exited
    non-zero, a hook that failed, a parent that failed...): carries its return code, message
    and the tail of its output."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.name = job.name
        self.return_code = job.status.return_code
        self.message = job.status.message
        self.output_tail = job.status.output_tail
        text = f"job {job.name} failed: {job.status.message or 'FAILED'}"
        if self.return_code is not None:
            text += f" (return code {self.return_code})"
        if self.output_tail:
            text += "\n--- output tail ---\n" + self.output_tail
        super().__init__(text)


class JobDeleted(JobFailed):
    """The job was deleted while it was waited for."""

    def __init__(self, name: str) -> None:
        self.job = None  # type: ignore[assignment]
        self.name = name
        self.return_code = None
        self.message = "deleted"
        self.output_tail = None
        Exception.__init__(self, f"job {name} was deleted before it finished")


def outcome(job: Job) -> Any:
    """The value of a terminal job: ``run()``'s return value, or raise its exception."""
    if (job.__pydantic_private__ or {}).get("_deleted"):
        raise JobDeleted(job.name)
    st_ = job.status
    if st_.state is JobState.JOB_FINISHED:
        return decode_result(st_.result)
    if st_.state is JobState.FAILED:
        if st_.exception_data:
            try:
                exc = b64unpickle(st_.exception_data)
            except Exception:  # noqa: BLE001 - its class cannot be loaded here
                exc = None
            if isinstance(exc, BaseException):
                raise exc
        raise JobFailed(job)
    raise NoResult(f"job {job.name} is {st_.state.value}")
