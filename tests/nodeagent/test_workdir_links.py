"""A symbolic link made by a parent job never sends a child's workdir or job.out outside
the site's data/: the agent walks the path without following links and FAILS the job with
the reason instead of starting it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from apis import App, Job, JobState, Registry
from apis._config import SiteConfig
from apis._paths import UnsafePath
from nodeagent._launch import Prepared, PrepareError, prepare, spawn
from tests._deadline import DEADLINE

from .conftest import AgentFactory, bind, make_app, make_job, wait_state

S = JobState
FINAL = (S.JOB_FINISHED, S.RUN_ERROR, S.RUN_TIMEOUT, S.FAILED)


def _parent_makes_a_link(registry: Registry, site: SiteConfig, agent: AgentFactory, link: str, target: Path) -> None:
    make_app(registry, "linker", "d={{ link }}; mkdir -p \"$(dirname \"$d\")\" && ln -s {{ target }} \"$d\"",
             parameters={"link": {}, "target": {}})
    parent = make_job(registry, "linker", "parent", parameters={"link": link, "target": str(target)})
    agent("n1")
    bind(registry, [parent], ["n1"])
    done = wait_state(registry, "parent", FINAL)
    assert done.status.state is S.JOB_FINISHED, done.status.message
    assert (site.data_path / "work" / "parent" / link).is_symlink()


def test_a_workdir_through_a_parents_symlink_fails_without_running(registry: Registry, site: SiteConfig,
                                                                   agent: AgentFactory, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    _parent_makes_a_link(registry, site, agent, "out", outside)
    make_app(registry, "writer", "echo ran > marker")
    child = make_job(registry, "writer", "child", workdir="work/parent/out/child")
    bind(registry, [child], ["n1"])
    done = wait_state(registry, "child", FINAL)
    assert done.status.state is S.FAILED
    assert "symbolic link" in done.status.message and "work/parent/out" in done.status.message
    assert done.status.attempts == 0  # it never ran
    assert list(outside.iterdir()) == []  # no workdir, no job.out, no marker outside data/


def test_a_job_out_that_is_a_symlink_is_not_written_through(registry: Registry, site: SiteConfig,
                                                            agent: AgentFactory, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    # the parent's workdir is work/parent; it plants job.out of a sibling workdir as a link
    _parent_makes_a_link(registry, site, agent, "../sibling/job.out", victim)
    make_app(registry, "echoer", "echo overwritten")
    child = make_job(registry, "echoer", "child", workdir="work/sibling")
    bind(registry, [child], ["n1"])
    done = wait_state(registry, "child", FINAL)
    assert done.status.state is S.FAILED
    assert "job.out" in done.status.message and "symbolic link" in done.status.message
    assert victim.read_text() == "precious\n"
    assert os.path.islink(site.data_path / "work" / "sibling" / "job.out")


def _prepared(root: Path, workdir: str, command: str) -> Prepared:
    return Prepared(command=command, argv=None, cwd=root / workdir, env={"PATH": os.environ["PATH"]}, root=root)


def test_a_workdir_swapped_for_a_link_after_its_check_is_refused_at_the_spawn(tmp_path: Path) -> None:
    """The window between prepare's check and the spawn (the fence waits in it): a parent
    swaps the checked directory for a link to outside data/. The spawn walks the path again
    and starts the job in the directory it opened, so nothing runs or is written outside."""
    root, outside = tmp_path / "data", tmp_path / "outside"
    outside.mkdir()
    (root / "work" / "child").mkdir(parents=True)
    p = _prepared(root, "work/child", "pwd -P > where")
    (root / "work" / "child").rename(root / "work" / "was-child")
    (root / "work" / "child").symlink_to(outside)
    with pytest.raises(UnsafePath, match="symbolic link"):
        spawn(p, subprocess.DEVNULL)
    assert list(outside.iterdir()) == []


def test_a_job_starts_in_the_workdir_it_was_checked_in(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "work" / "j").mkdir(parents=True)
    proc = spawn(_prepared(root, "work/j", "pwd -P; echo $PWD"), subprocess.DEVNULL)
    assert proc.wait(timeout=DEADLINE) == 0
    real = str((root / "work" / "j").resolve())
    assert (root / "work" / "j" / "job.out").read_text().splitlines()[0] == real


def test_a_workdir_kept_open_from_its_check_runs_the_job_there_even_if_swapped_for_a_link(tmp_path: Path) -> None:
    """The agent's own path (``prepare(..., open_dir=True)``): the workdir is walked once and
    the job starts in the directory that walk opened, so a link swapped in after the check
    changes nothing: the job runs and writes in the directory checked, nothing lands outside,
    and no descriptor is left open."""
    root, outside = tmp_path / "data", tmp_path / "outside"
    outside.mkdir()
    root.mkdir()
    app = App(metadata={"name": "a"}, spec={"command": "pwd -P > where"})  # type: ignore[arg-type]
    job = Job(metadata={"name": "child"}, spec={"app": "a", "workdir": "work/child"})  # type: ignore[arg-type]
    fds = set(os.listdir("/proc/self/fd"))
    p = prepare(job, app, data_path=root, site_path=tmp_path, base_env={"PATH": os.environ["PATH"]},
                launcher="none", hosts=["h"], gpus=[], open_dir=True)
    assert p.dirfd >= 0
    (root / "work" / "child").rename(root / "work" / "was-child")
    (root / "work" / "child").symlink_to(outside)
    assert spawn(p, subprocess.DEVNULL).wait(timeout=DEADLINE) == 0
    assert list(outside.iterdir()) == []
    assert (root / "work" / "was-child" / "where").read_text().strip() == str((root / "work" / "was-child").resolve())
    assert set(os.listdir("/proc/self/fd")) <= fds


def test_a_workdir_kept_open_and_not_spawned_is_closed(tmp_path: Path) -> None:
    app = App(metadata={"name": "a"}, spec={"command": "true"})  # type: ignore[arg-type]
    job = Job(metadata={"name": "j"}, spec={"app": "a", "workdir": "w/j"})  # type: ignore[arg-type]
    fds = set(os.listdir("/proc/self/fd"))
    p = prepare(job, app, data_path=tmp_path / "data", site_path=tmp_path, base_env={}, launcher="none",
                hosts=["h"], gpus=[], open_dir=True)
    assert (tmp_path / "data" / "w" / "j").is_dir() and p.dirfd >= 0
    p.close()
    p.close()  # twice is harmless
    assert p.dirfd == -1 and set(os.listdir("/proc/self/fd")) <= fds


def test_a_job_out_link_is_refused_when_the_workdir_is_kept_open(tmp_path: Path) -> None:
    root, outside = tmp_path / "data", tmp_path / "outside"
    (root / "w").mkdir(parents=True)
    outside.mkdir()
    (root / "w" / "job.out").symlink_to(outside / "stolen")
    app = App(metadata={"name": "a"}, spec={"command": "true"})  # type: ignore[arg-type]
    job = Job(metadata={"name": "j"}, spec={"app": "a", "workdir": "w"})  # type: ignore[arg-type]
    fds = set(os.listdir("/proc/self/fd"))
    with pytest.raises(PrepareError, match="symbolic link"):
        prepare(job, app, data_path=root, site_path=tmp_path, base_env={}, launcher="none", hosts=["h"], gpus=[],
                open_dir=True)
    assert set(os.listdir("/proc/self/fd")) <= fds
