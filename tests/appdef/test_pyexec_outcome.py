"""``apis._pyexec.run_loaded``: what a Python app's process does around ``run()`` — the
earlier attempt's result file, and where a large result goes."""

from __future__ import annotations

from apis import ApplicationDefinition
from apis._pycodec import INLINE_CAP, RESULT_FILE, decode_result, encode_params
from apis._pyexec import run_loaded


class Echo(ApplicationDefinition):
    def run(self, value):
        return value


def _spec(cwd, value, attempt):
    return {"cwd": str(cwd), "job": b"{}", "parameters": encode_params({"value": value}), "attempt": attempt}


def test_a_retry_removes_the_result_file_of_the_attempt_before(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / RESULT_FILE).write_bytes(b"old")
    code, _, outcome = run_loaded(_spec(tmp_path, 7, attempt=2), Echo)
    assert (code, outcome) == (0, {"result": 7})
    assert not (tmp_path / RESULT_FILE).exists()


def test_a_first_attempt_leaves_a_result_file_it_did_not_write(tmp_path, monkeypatch):
    # another job of the same workdir wrote it, and that job's status points at it
    monkeypatch.chdir(tmp_path)
    (tmp_path / RESULT_FILE).write_bytes(b"another job's")
    code, _, outcome = run_loaded(_spec(tmp_path, 7, attempt=1), Echo)
    assert (code, outcome) == (0, {"result": 7})
    assert (tmp_path / RESULT_FILE).read_bytes() == b"another job's"


def test_a_large_result_is_written_in_the_workdir_under_its_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    big = "x" * (2 * INLINE_CAP)
    code, _, outcome = run_loaded(_spec(tmp_path, big, attempt=1), Echo)
    assert code == 0 and outcome["result"]["$file"] == str(tmp_path / RESULT_FILE)
    assert decode_result(outcome["result"]) == big
