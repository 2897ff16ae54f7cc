"""Python apps of the node-agent suite, importable by module path (``tests.nodeagent.pyapps``)
in the agent's warm Python workers."""

from __future__ import annotations

import ctypes
import os
import sys
import time

from apis import ApplicationDefinition

_calls = 0  # a module global: survives from one job to the next in a reused worker


class Where(ApplicationDefinition):
    """Where and as whom it runs; leaves a variable and a global behind for the next job."""

    def run(self, tag: str = "") -> dict[str, object]:
        global _calls
        _calls += 1
        print(f"stdout of {os.environ['BALSAM_JOB_ID']}")
        print(f"stderr of {os.environ['BALSAM_JOB_ID']}", file=sys.stderr)
        seen = {"cwd": os.getcwd(), "pid": os.getpid(), "job": os.environ.get("BALSAM_JOB_ID"),
                "left_by_earlier": os.environ.get("LEFT_BEHIND"), "calls": _calls,
                "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "tag": tag}
        os.environ["LEFT_BEHIND"] = os.environ["BALSAM_JOB_ID"]
        return seen


class Fresh(Where):
    """The same, in a fresh process per job."""

    fresh_process = True


class Crash(ApplicationDefinition):
    def run(self, how: str) -> None:
        if how == "exit":
            os._exit(3)
        elif how == "segfault":
            ctypes.string_at(0)
        elif how == "abort":
            os.abort()
        elif how == "memory":
            raise MemoryError("no room for this")
        elif how == "sleep":
            time.sleep(600)


class Pid(ApplicationDefinition):
    def run(self, how: str = "") -> int:
        if how == "sys.exit":
            sys.exit(2)
        return os.getpid()


class BadInput(Exception):
    pass


def _check(x: int) -> None:
    if x < 0:
        raise BadInput(f"x must not be negative, got {x}")


class Raises(ApplicationDefinition):
    def run(self, x: int) -> int:
        _check(x)
        return x
