"""The fork server that Python apps and hooks run in (apis/_forkserver.py), on its own."""

from __future__ import annotations

import os
import queue
import time

import pytest

from apis import ApplicationDefinition
from apis._forkserver import ForkServer
from apis._pycodec import encode_params
from tests._deadline import DEADLINE

pytestmark = pytest.mark.timeout(3 * DEADLINE)  # a safety net above every wait's own deadline


class Exit3(ApplicationDefinition):
    def run(self):
        raise SystemExit(3)


class LeavesABackgroundProcess(ApplicationDefinition):
    def run(self, pidfile):
        import subprocess

        p = subprocess.Popen(["sleep", "60"])
        with open(pidfile, "w") as f:
            f.write(str(p.pid))
        return os.getpid()


class Env(ApplicationDefinition):
    def run(self):
        return {k: os.environ.get(k) for k in ("ONLY_HERE", "HOME")}


def _spec(cls, tmp_path, name, **params):
    wd = tmp_path / name
    return {"task": "run", "cwd": str(wd), "stdout": str(wd / "job.out"), "env": {"ONLY_HERE": "1"},
            "app": cls.to_app(by_value=True).spec.python.model_dump(by_alias=True, exclude_none=True),
            "job": b"{}", "parameters": encode_params(params), "result_path": str(tmp_path / f"{name}.json")}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.fixture
def server():
    msgs: queue.SimpleQueue = queue.SimpleQueue()
    fs = ForkServer(lambda gen, m: msgs.put((gen, m)))
    yield fs, msgs
    fs.close()


def _next(msgs, kind):
    while True:
        gen, m = msgs.get(timeout=DEADLINE)
        if m[0] == kind:
            return gen, m


def test_each_task_is_a_child_whose_exit_follows_its_spawn(server, tmp_path):
    fs, msgs = server
    gen = fs.spawn("a", _spec(Exit3, tmp_path, "a"))
    got_gen, (_, token, pid) = _next(msgs, "spawned")
    assert (got_gen, token) == (gen, "a") and pid != os.getpid()
    _, (_, exit_pid, code) = _next(msgs, "exit")
    assert (exit_pid, code) == (pid, 3)


def test_a_tasks_process_group_dies_with_it(server, tmp_path):
    fs, msgs = server
    pidfile = tmp_path / "bg.pid"
    fs.spawn("b", _spec(LeavesABackgroundProcess, tmp_path, "b", pidfile=str(pidfile)))
    _, (_, _, pid) = _next(msgs, "spawned")
    _, (_, _, code) = _next(msgs, "exit")
    assert code == 0
    bg = int(pidfile.read_text())
    deadline = time.monotonic() + DEADLINE
    while _alive(bg):
        assert time.monotonic() < deadline, "the task's background process outlived it"
        time.sleep(0.02)


def test_the_task_gets_exactly_its_environment(server, tmp_path):
    import json

    fs, msgs = server
    fs.spawn("c", _spec(Env, tmp_path, "c"))
    _next(msgs, "exit")
    assert json.loads((tmp_path / "c.json").read_text()) == {"result": {"ONLY_HERE": "1", "HOME": None}}


def test_closing_the_server_kills_its_children_and_a_dead_server_is_reported(tmp_path):
    msgs: queue.SimpleQueue = queue.SimpleQueue()
    fs = ForkServer(lambda gen, m: msgs.put((gen, m)))

    class Sleeps(ApplicationDefinition):
        def run(self):
            import time

            time.sleep(60)

    fs.spawn("d", _spec(Sleeps, tmp_path, "d"))
    _, (_, _, pid) = _next(msgs, "spawned")
    assert _alive(pid)
    fs.close()
    _next(msgs, "died")
    deadline = time.monotonic() + DEADLINE
    while _alive(pid):
        assert time.monotonic() < deadline
        time.sleep(0.02)
