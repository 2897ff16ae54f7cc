"""The fork server that Python apps and hooks run in (apis/_forkserver.py), on its own."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import time

import pytest

from apis import ApplicationDefinition
from apis._forkserver import (
    Ended,
    ForkServer,
    ServerDied,
    Started,
    WorkerGone,
    prefork,
    remove_stale_runtime_dirs,
)
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
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or during the read (ESRCH)
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
        if isinstance(m, kind):
            return gen, m


def test_each_task_is_a_child_whose_exit_follows_its_spawn(server, tmp_path):
    fs, msgs = server
    gen = fs.spawn("a", _spec(Exit3, tmp_path, "a"))
    got_gen, started = _next(msgs, Started)
    assert (got_gen, started.token) == (gen, "a") and started.pid != os.getpid()
    _, ended = _next(msgs, Ended)
    assert (ended.pid, ended.code) == (started.pid, 3)


def test_a_tasks_process_group_dies_with_it(server, tmp_path):
    fs, msgs = server
    pidfile = tmp_path / "bg.pid"
    fs.spawn("b", _spec(LeavesABackgroundProcess, tmp_path, "b", pidfile=str(pidfile)))
    _next(msgs, Started)
    _, ended = _next(msgs, Ended)
    assert ended.code == 0
    bg = int(pidfile.read_text())
    deadline = time.monotonic() + DEADLINE
    while _alive(bg):
        assert time.monotonic() < deadline, "the task's background process outlived it"
        time.sleep(0.02)


def test_the_task_gets_exactly_its_environment(server, tmp_path):
    import json

    fs, msgs = server
    fs.spawn("c", _spec(Env, tmp_path, "c"))
    _next(msgs, Ended)
    assert json.loads((tmp_path / "c.json").read_text()) == {"result": {"ONLY_HERE": "1", "HOME": None}}


def test_closing_the_server_kills_its_children_and_a_dead_server_is_reported(tmp_path):
    msgs: queue.SimpleQueue = queue.SimpleQueue()
    fs = ForkServer(lambda gen, m: msgs.put((gen, m)))

    class Sleeps(ApplicationDefinition):
        def run(self):
            import time

            time.sleep(60)

    fs.spawn("d", _spec(Sleeps, tmp_path, "d"))
    _, started = _next(msgs, Started)
    pid = started.pid
    assert _alive(pid)
    fs.close()
    _next(msgs, ServerDied)
    deadline = time.monotonic() + DEADLINE
    while _alive(pid):
        assert time.monotonic() < deadline
        time.sleep(0.02)


class Add(ApplicationDefinition):
    def run(self, x, y):
        return [x + y, os.getpid()]


def _submit(fs, cls, tmp_path, name, key="pool-a", **params):
    spec = _spec(cls, tmp_path, name, **params)
    return fs.submit(name, key, spec.pop("app"), spec)


def test_warm_worker_tasks_answer_their_outcome_in_the_message_on_one_worker(server, tmp_path):
    fs, msgs = server
    _submit(fs, Add, tmp_path, "w1", x=1, y=2)
    _, first = _next(msgs, Started)
    _, ended = _next(msgs, Ended)
    assert (ended.pid, ended.code, ended.outcome) == (first.pid, 0, {"result": [3, first.pid]})
    assert not (tmp_path / "w1.json").exists()  # no handoff file on the warm path
    _submit(fs, Add, tmp_path, "w2", x=5, y=5)
    _, second = _next(msgs, Started)
    _, ended = _next(msgs, Ended)
    assert second.pid == first.pid and ended.outcome == {"result": [10, first.pid]}


def test_a_pools_app_code_travels_once_per_server_and_again_to_a_new_server(server, tmp_path):
    fs, msgs = server
    _submit(fs, Add, tmp_path, "c1", x=1, y=1)
    _next(msgs, Ended)
    # Later tasks of the pool do not carry the code: a wrong one given now is never sent.
    spec = _spec(Add, tmp_path, "c2", x=2, y=2)
    fs.submit("c2", "pool-a", {"module": "no.such.module", "class": "Nope"}, {k: v for k, v in spec.items() if k != "app"})
    _, ended = _next(msgs, Ended)
    assert ended.code == 0 and ended.outcome["result"][0] == 4
    fs._proc.kill()  # the server dies: the next one must be given the pool's code again
    _next(msgs, ServerDied)
    _submit(fs, Add, tmp_path, "c3", x=3, y=3)
    _, ended = _next(msgs, Ended)
    assert ended.code == 0 and ended.outcome["result"][0] == 6


class EnvAndMess(ApplicationDefinition):
    def run(self, mess):
        seen = {k: os.environ.get(k) for k in ("ONLY_HERE", "JOB_VAR", "LEFT_BY_A_JOB", "BASE_ONLY")}
        if mess:  # what a job does to its interpreter's environment must not reach the next job
            os.environ["LEFT_BY_A_JOB"] = "x"
            os.environ["ONLY_HERE"] = "changed"
            os.environ.pop("BASE_ONLY", None)
        return [seen, os.getpid()]


def test_warm_tasks_get_exactly_their_environment_whatever_a_job_before_did_to_it(server, tmp_path):
    fs, msgs = server
    outcomes = []
    for i, env in enumerate([
        {"ONLY_HERE": "1", "JOB_VAR": "a", "BASE_ONLY": "b"},
        {"ONLY_HERE": "1", "JOB_VAR": "b", "BASE_ONLY": "b"},  # after a job that changed the environment
        {"ONLY_HERE": "1", "NEW": "n"},                       # one of the first removed, one added
    ]):
        spec = _spec(EnvAndMess, tmp_path, f"env{i}", mess=True)
        spec["env"] = env
        fs.submit(f"env{i}", "pool-env", spec.pop("app"), spec)
        _next(msgs, Started)
        _, ended = _next(msgs, Ended)
        assert ended.code == 0, ended
        outcomes.append(ended.outcome["result"])
    assert len({pid for _, pid in outcomes}) == 1  # one warm worker ran them all
    assert [seen for seen, _ in outcomes] == [
        {"ONLY_HERE": "1", "JOB_VAR": "a", "LEFT_BY_A_JOB": None, "BASE_ONLY": "b"},
        {"ONLY_HERE": "1", "JOB_VAR": "b", "LEFT_BY_A_JOB": None, "BASE_ONLY": "b"},
        {"ONLY_HERE": "1", "JOB_VAR": None, "LEFT_BY_A_JOB": None, "BASE_ONLY": None},
    ]


class WholeEnv(ApplicationDefinition):
    def run(self, mess):
        seen = dict(os.environ)
        if mess:
            os.environ["LEFT_BY_A_JOB"] = "x"
            os.environ["A"] = "changed"
        return [seen, os.getpid()]


def test_a_warm_worker_sets_each_tasks_whole_environment_from_the_differences_or_afresh(server, tmp_path):
    # Tasks that leave os.environ alone get the next environment by differences (issue
    # 14p); after one that changed it, the whole environment is compared again.
    fs, msgs = server
    envs = [
        ({"A": "1", "B": "2", "C": "3"}, False),
        ({"A": "1", "B": "two", "D": "4"}, False),  # one changed, one gone, one new
        ({"A": "1", "B": "two", "D": "4"}, True),   # the same again: nothing to change; the job messes
        ({"A": "1", "E": "5"}, False),              # after the mess
        ({"E": "5", "F": ""}, False),
        ({}, False),
    ]
    seen = []
    for i, (env, mess) in enumerate(envs):
        spec = _spec(WholeEnv, tmp_path, f"whole{i}", mess=mess)
        spec["env"] = env
        fs.submit(f"whole{i}", "pool-whole", spec.pop("app"), spec)
        _next(msgs, Started)
        _, ended = _next(msgs, Ended)
        assert ended.code == 0, ended
        seen.append(ended.outcome["result"])
    assert len({pid for _, pid in seen}) == 1  # one warm worker ran them all
    assert [got for got, _ in seen] == [env for env, _ in envs]


def test_an_exception_in_a_warm_worker_comes_back_as_the_tasks_outcome(server, tmp_path):
    class Boom(ApplicationDefinition):
        def run(self):
            raise ValueError("no good")

    fs, msgs = server
    _submit(fs, Boom, tmp_path, "e1", key="pool-boom")
    _, ended = _next(msgs, Ended)
    assert ended.code == 1 and ended.outcome["exception"] == "ValueError: no good"
    assert "in run" in ended.outcome["traceback"]
    assert "ValueError: no good" in (tmp_path / "e1" / "job.out").read_text()


class LongMessage(ApplicationDefinition):
    def run(self, n):
        raise ValueError("x" * n)


def test_an_answer_longer_than_one_read_arrives_whole_and_the_worker_serves_on(server, tmp_path):
    # the client reads a worker's socket once per wake-up; the rest of a long answer wakes it again
    fs, msgs = server
    _submit(fs, LongMessage, tmp_path, "long1", key="pool-long", n=300_000)
    _, started = _next(msgs, Started)
    _, ended = _next(msgs, Ended)
    assert ended.code == 1 and ended.outcome["exception"] == "ValueError: " + "x" * 300_000
    _submit(fs, LongMessage, tmp_path, "long2", key="pool-long", n=3)
    _, again = _next(msgs, Started)
    _, ended = _next(msgs, Ended)
    assert again.pid == started.pid and ended.outcome["exception"] == "ValueError: xxx"


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def test_a_preforked_server_is_the_one_that_runs_the_tasks(tmp_path):
    msgs: queue.SimpleQueue = queue.SimpleQueue()
    pre = prefork(tmp_path / "server.log")
    fs = ForkServer(lambda gen, m: msgs.put((gen, m)), preforked=pre)
    try:
        _submit(fs, Add, tmp_path, "p1", x=20, y=22)
        _, started = _next(msgs, Started)
        _, ended = _next(msgs, Ended)
        assert ended.outcome["result"][0] == 42
        assert _ppid(started.pid) == pre.pid  # forked by the pre-forked server, not a new interpreter's
    finally:
        fs.close()
    assert pre.poll() is not None


def test_closing_a_server_that_never_adopted_its_preforked_one_ends_it(tmp_path):
    pre = prefork()
    fs = ForkServer(lambda gen, m: None, preforked=pre)
    assert pre.poll() is None
    fs.close()
    assert pre.poll() is not None


def test_runtime_dirs_of_processes_that_are_gone_are_removed_and_live_ones_kept(tmp_path) -> None:
    """A kill -9'd agent cannot remove its handoff directory: the next one made removes it."""
    p = subprocess.Popen(["sleep", "300"])
    dead_pid = p.pid
    p.kill()
    p.wait()
    dead = tmp_path / f"balsam-t-{dead_pid}-abc"
    live = tmp_path / f"balsam-t-{os.getppid()}-def"
    mine = tmp_path / f"balsam-t-{os.getpid()}-ghi"
    other = tmp_path / f"balsam-other-{dead_pid}-x"
    unnamed = tmp_path / "balsam-t-noname"
    for d in (dead, live, mine, other, unnamed):
        d.mkdir()
    (dead / "result.json").write_text("{}")
    assert remove_stale_runtime_dirs(str(tmp_path), "balsam-t-") == 1
    assert not dead.exists()
    assert live.exists() and mine.exists() and other.exists() and unnamed.exists()


def test_a_warm_worker_answers_its_tasks_while_the_server_is_stopped(server, tmp_path):
    """Tasks of an idle worker go to the worker and come back from it: the server is not on
    their path (issue 14, fifth round). Stopped with SIGSTOP, it cannot have relayed them."""
    fs, msgs = server
    _submit(fs, Add, tmp_path, "s1", x=1, y=1)
    _, first = _next(msgs, Started)
    _next(msgs, Ended)
    server_pid = fs._proc.pid
    os.kill(server_pid, signal.SIGSTOP)
    try:
        for i in range(3):
            _submit(fs, Add, tmp_path, f"s{i + 2}", x=i, y=10)
            _, started = _next(msgs, Started)
            _, ended = _next(msgs, Ended)
            assert started.pid == first.pid and ended.outcome == {"result": [i + 10, first.pid]}
    finally:
        os.kill(server_pid, signal.SIGCONT)


def test_a_worker_killed_while_idle_fails_no_task_and_the_next_task_gets_a_new_one(server, tmp_path):
    fs, msgs = server
    _submit(fs, Add, tmp_path, "k1", x=1, y=1)
    _, first = _next(msgs, Started)
    _next(msgs, Ended)
    os.kill(first.pid, signal.SIGKILL)
    seen = []
    while True:  # reaped by the server, whose word reaches the client's reader
        _, m = msgs.get(timeout=DEADLINE)
        if isinstance(m, WorkerGone) and m.pid == first.pid:
            break
        seen.append(m)
    assert not [m for m in seen if isinstance(m, Ended)]  # no Ended for its death: it held no task
    assert first.pid not in fs._peers
    _submit(fs, Add, tmp_path, "k2", x=2, y=2)
    _, second = _next(msgs, Started)
    _, ended = _next(msgs, Ended)
    assert second.pid != first.pid and (ended.code, ended.died) == (0, "")
    assert ended.outcome == {"result": [4, second.pid]}
    assert msgs.empty()  # no Ended for the idle worker's death: it held no task


def test_a_worker_killed_under_its_task_fails_that_task_saying_how(server, tmp_path):
    class Sleeps(ApplicationDefinition):
        def run(self):
            import time

            time.sleep(60)

    fs, msgs = server
    _submit(fs, Sleeps, tmp_path, "d1", key="pool-sleep")
    _, started = _next(msgs, Started)
    os.kill(started.pid, signal.SIGKILL)
    _, ended = _next(msgs, Ended)
    assert ended.pid == started.pid and ended.code == -signal.SIGKILL
    assert "killed by SIGKILL" in ended.died and ended.outcome is None
