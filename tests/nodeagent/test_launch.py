"""Turning a rendered command into a process: the no-shell fast path and the output tail."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodeagent._launch import output_tail, simple_argv


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
