"""``balsamctl logs JOB [-f] [--tail N]``: a job's output, ``data/<workdir>/job.out``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import BinaryIO

import click

from apis import TERMINAL, Job, JobState, kind_for

from .._context import common_options, get_ctx
from .._errors import CLIError
from ..completion import complete_job_names
from ..watching import ListWatch

OUTPUT_FILE = "job.out"  # what the node agent writes (nodeagent._launch.OUTPUT_FILE)
CHUNK = 1 << 16


def job_name(arg: str) -> str:
    """``NAME`` or ``job/NAME``."""
    kind, sep, name = arg.partition("/")
    if not sep:
        return arg
    if not name or kind_for(kind) is not Job:
        raise CLIError(f"logs are kept for jobs only: expected NAME or job/NAME, got {arg!r}")
    return name


def tail_offset(f: BinaryIO, lines: int) -> int:
    """Byte offset where the last ``lines`` lines of ``f`` start (a last line without a
    newline counts as a line), reading backwards a block at a time."""
    end = f.seek(0, os.SEEK_END)
    if lines < 0:
        return 0
    if lines == 0:
        return end
    pos, newlines = end, 0
    f.seek(end - 1 if end else 0)
    if end and f.read(1) == b"\n":
        pos -= 1  # the final newline ends the last line; it does not start one
    while pos > 0:
        start = max(0, pos - CHUNK)
        f.seek(start)
        block = f.read(pos - start)
        i = len(block)
        while True:
            i = block.rfind(b"\n", 0, i)
            if i < 0:
                break
            newlines += 1
            if newlines == lines:
                return start + i + 1
        pos = start
    return 0


def copy_from(path: Path, offset: int, out: BinaryIO) -> int:
    """Write ``path`` from ``offset`` to ``out``; the new offset (0 again if the file was
    truncated, as the node agent does for each attempt)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size < offset:
                offset = 0
            f.seek(offset)
            while chunk := f.read(CHUNK):
                out.write(chunk)
                offset += len(chunk)
    except FileNotFoundError:
        return offset
    out.flush()
    return offset


@click.command("logs")
@click.argument("job", metavar="JOB", shell_complete=complete_job_names)
@click.option("-f", "--follow", is_flag=True, help="Keep printing output as it is written, until the job ends.")
@click.option("--tail", type=int, default=-1, show_default=True, metavar="N",
              help="Only the last N lines (-1: all).")
@common_options
def command(job: str, follow: bool, tail: int) -> None:
    """Print a job's output (data/<workdir>/job.out of the site).

    \b
    balsamctl logs hello-world
    balsamctl logs -f job/sim-17 --tail 20    # follow until the job is JOB_FINISHED or FAILED
    """
    ctx = get_ctx()
    name = job_name(job)
    cfg = ctx.site_config(required=True)  # the output lives in the site's data/ directory
    assert cfg is not None
    data = cfg.data_path
    reg, ns = ctx.registry, ctx.namespace
    out = sys.stdout.buffer
    with ListWatch(reg, Job, ns, lambda: [reg.get(Job, name, ns)], name=name) as lw:
        cur = lw.start()[0]
        path = cur.resolve_workdir(data) / OUTPUT_FILE
        exists = path.is_file()
        if not exists and (not follow or cur.status.state in TERMINAL):
            raise CLIError(f"job {name} has no output yet (state {cur.status.state.value})")
        offset = 0
        if exists:
            with open(path, "rb") as f:
                offset = tail_offset(f, tail)
        offset = copy_from(path, offset, out)
        if not follow:
            return
        ended = (JobState.RUN_ERROR, JobState.RUN_TIMEOUT, JobState.RESTART_READY)
        between = cur.status.state in ended  # an attempt ended; the next starts job.out afresh
        started = cur.status.start_time
        try:
            while cur.status.state not in TERMINAL:
                # The watch says when the job ends or runs again; between its events the
                # file is read for what the job wrote (as ``tail -f`` does without inotify).
                for ev in lw.next(timeout=0.1):
                    if ev.type == "DELETED":
                        copy_from(path, offset, out)
                        return
                    cur = ev.object
                    if cur.status.state in ended and not between:
                        offset = copy_from(path, offset, out)  # the rest of the attempt that ended
                        between, started = True, cur.status.start_time
                    elif between and cur.status.start_time != started and cur.status.state not in ended:
                        between, offset = False, 0  # the next attempt: its job.out from the start
                if not between:
                    offset = copy_from(path, offset, out)
            if not between:
                copy_from(path, offset, out)
        except KeyboardInterrupt:
            return
