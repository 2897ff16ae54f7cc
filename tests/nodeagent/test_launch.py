"""Turning a rendered command into a process: the no-shell fast path and the output tail."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

import nodeagent._launch
from apis import App, Job
from apis._templates import render_command
from nodeagent._launch import OUTPUT_FILE, Prepared, job_command, output_tail, simple_argv, spawn
from tests._deadline import DEADLINE


@pytest.mark.parametrize("cmd,argv", [
    ("/bin/true", ["/bin/true"]),
    ("./sim --n 3 'a b' x=1", ["./sim", "--n", "3", "a b", "x=1"]),
    ("prog 'it'\"'\"'s'", ["prog", "it's"]),
    ("python3 -c 'print(1)'", ["python3", "-c", "print(1)"]),
])
def test_plain_word_commands_are_exec_ed_without_a_shell(cmd: str, argv: list[str]) -> None:
    assert simple_argv(cmd) == argv


@pytest.mark.parametrize("cmd", [
    "echo hi", "cd x", "A=1 prog", "prog; other", "prog > out", "prog $HOME", "prog *.txt", "prog ~",
    "prog `x`", 'prog "$x"', "prog a\\ b", "prog | cat", "prog &", "# comment", "prog\nother", "",
])
def test_anything_the_shell_would_interpret_goes_through_the_shell(cmd: str) -> None:
    assert simple_argv(cmd) is None


def test_output_tail_is_the_last_lines_of_job_out(tmp_path: Path) -> None:
    (tmp_path / "job.out").write_text("".join(f"line {i}\n" for i in range(100)))
    assert output_tail(tmp_path, lines=3) == "line 97\nline 98\nline 99"
    assert output_tail(tmp_path / "missing") is None


def test_output_tail_reads_only_the_end_of_a_huge_file(tmp_path: Path) -> None:
    with open(tmp_path / "job.out", "wb") as f:
        f.write(b"x" * 10_000_000 + b"\nlast\n")
    tail = output_tail(tmp_path, lines=20, max_bytes=4096)
    assert tail is not None and tail.endswith("last") and len(tail) <= 4096


# --- the spawn itself: fork/exec without subprocess.Popen (issue 19, third round) -----------


@pytest.fixture(autouse=False, params=["direct", "popen"])
def spawn_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways a job is started: CPython's fork_exec called directly, and subprocess.Popen
    (other Python versions): the same process, workdir, output and errors."""
    if request.param == "direct" and not nodeagent._launch._DIRECT:
        pytest.skip("the direct fork_exec path is used on CPython 3.11 only")
    monkeypatch.setattr(nodeagent._launch, "_DIRECT", request.param == "direct")
    return str(request.param)


def _spawn_prepared(root: Path, command: str, env: dict[str, str] | None = None) -> Prepared:
    (root / "w").mkdir(parents=True, exist_ok=True)
    return Prepared(command=command, argv=simple_argv(command), cwd=root / "w",
                    env={"PATH": os.environ["PATH"], **(env or {})}, root=root)


def _run_spawned(p: Prepared) -> tuple[int, str]:
    proc = spawn(p, subprocess.DEVNULL)
    code = proc.wait(timeout=DEADLINE)
    return code, (p.cwd / OUTPUT_FILE).read_text()


def test_a_plain_command_runs_in_its_workdir_with_its_environment_and_output(tmp_path: Path, spawn_path: str) -> None:
    root = tmp_path / "data"
    code, out = _run_spawned(_spawn_prepared(root, "sh -c 'pwd -P; echo $JOBVAR >&2; exit 3'", {"JOBVAR": "v1"}))
    assert code == 3
    assert out.splitlines() == [str((root / "w").resolve()), "v1"]


def test_a_spawned_job_leads_its_own_session_and_reads_nothing_on_stdin(tmp_path: Path, spawn_path: str) -> None:
    code, out = _run_spawned(_spawn_prepared(tmp_path, "sh -c 'ps -o sid= -o pgid= -p $$; cat; echo end'"))
    sid, pgid = out.split()[:2]
    assert code == 0 and sid == pgid and int(sid) != os.getsid(0)
    assert out.split()[2:] == ["end"]


def test_a_command_that_cannot_be_exec_ed_gets_the_shells_message_and_exit_code(tmp_path: Path, spawn_path: str) -> None:
    code, out = _run_spawned(_spawn_prepared(tmp_path, "no-such-program-here x"))
    assert code == 127 and "not found" in out
    script = tmp_path / "w" / "noexec.sh"
    script.write_text("echo never\n")  # not executable: 126 from the shell, as a user sees it
    code, out = _run_spawned(_spawn_prepared(tmp_path, str(script)))
    assert code == 126 and "never" not in out


def test_a_killed_job_reports_minus_the_signal_and_wait_times_out_while_it_runs(tmp_path: Path, spawn_path: str) -> None:
    proc = spawn(_spawn_prepared(tmp_path, "sleep 60"), subprocess.DEVNULL)
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=DEADLINE) == -signal.SIGKILL


def test_spawning_leaks_no_file_descriptor(tmp_path: Path, spawn_path: str) -> None:
    before = set(os.listdir("/proc/self/fd"))
    for cmd in ("true", "no-such-program-here", "echo $HOME"):
        _run_spawned(_spawn_prepared(tmp_path, cmd))
    assert set(os.listdir("/proc/self/fd")) <= before


def test_each_job_gets_its_own_values_of_the_variables_jobs_share(tmp_path: Path, spawn_path: str) -> None:
    for i in range(3):
        code, out = _run_spawned(_spawn_prepared(tmp_path, "sh -c 'echo $BALSAM_JOB_ID $SHARED'",
                                                 {"BALSAM_JOB_ID": f"j{i}", "SHARED": "s"}))
        assert (code, out) == (0, f"j{i} s\n")
    with pytest.raises(ValueError, match="illegal environment variable name"):
        spawn(_spawn_prepared(tmp_path, "true", {"A=B": "x"}), subprocess.DEVNULL)


def test_waiting_with_a_timeout_works_when_the_process_has_more_than_1024_fds_open() -> None:
    """The full suite's process had over 1,024 fds open: select() refused the pidfd."""
    if not nodeagent._launch._DIRECT:
        pytest.skip("the direct launch path is CPython 3.11's only")
    held: list[int] = []
    try:
        while not held or held[-1] < 1100:
            held.append(os.dup(0))
        proc = nodeagent._launch._fork_exec(["sleep", "30"], "/", dict(os.environ), held[0], held[0])
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.05)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=DEADLINE) == -signal.SIGKILL
    finally:
        for fd in held:
            os.close(fd)


@pytest.mark.parametrize("template", ["/bin/true", "echo hi\n", "printf '%s' x y", "echo {{ 'braces' }}",
                                      "echo {{ [1, 2, 3] | random }}{{ [4, 5, 6] | random }}"])
def test_a_command_without_parameters_is_what_its_template_renders_to(template: str) -> None:
    """The constant-command shortcut (rendered once per template) gives jinja's own result;
    a template with jinja syntax is rendered per job (a ``random`` filter stays random)."""
    app = App(metadata={"name": "a"}, spec={"command": template})  # type: ignore[arg-type]
    jobs = [Job(metadata={"name": f"j{i}"}, spec={"app": "a", "workdir": "w"}) for i in range(40)]  # type: ignore[arg-type]
    commands = {job_command(j, app, "none", ["h"]) for j in jobs}
    if "random" in template:
        assert len(commands) > 1
    else:
        assert commands == {render_command(template, {}, {})}
