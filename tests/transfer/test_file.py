"""file:// transfers end to end: real copies, through the real reconcilers and store."""

from __future__ import annotations

import os

from apis import JobState, get_condition
from tests._deadline import DEADLINE
from tests._support import poll_until

from .conftest import make_app, make_jobs, make_site, tasks, wait_states

DONE_IN = {JobState.PREPROCESSED}


def test_fifty_jobs_from_one_location_make_one_task_and_reach_preprocessed(registry, site, remote, manager):
    make_site(registry, site)
    make_app(registry)
    for i in range(50):
        (remote / f"in{i}.dat").write_text(f"input {i}\n")
    # A task forms after no item joined for `window` s: 2 s outlasts any pause of a busy
    # machine between the 50 jobs becoming READY (one batched write), so one task is the rule
    # at work, not the machine's pace; max_wait far away for the same reason.
    manager(window=2.0, max_wait=120.0)
    jobs = make_jobs(registry, 50, lambda i: {"inp": f"local:{remote}/in{i}.dat"})
    done = wait_states(registry, [j.name for j in jobs], DONE_IN)
    for j in done:
        assert [h.to_state.value for h in j.status.history][-3:] == ["READY", "STAGED_IN", "PREPROCESSED"]
        i = int(j.name[1:])
        assert (site.data_path / "w" / j.name / "in.dat").read_text() == f"input {i}\n"
    ts = tasks(registry)
    assert len(ts) == 1
    t = ts[0]
    assert (t.spec.provider, t.spec.direction, t.status.state) == ("file", "in", "Succeeded")
    assert len(t.spec.items) == 50 and t.status.files_transferred == 50 and t.status.attempts == 1


def test_batch_size_caps_a_task(registry, site, remote, manager):
    make_site(registry, site)
    make_app(registry)
    for i in range(25):
        (remote / f"in{i}.dat").write_text("x")
    manager(batch_size=10, window=2.0, max_wait=120.0)  # one window holds all 25 (see above)
    jobs = make_jobs(registry, 25, lambda i: {"inp": f"local:{remote}/in{i}.dat"})
    wait_states(registry, [j.name for j in jobs], DONE_IN)
    assert sorted(len(t.spec.items) for t in tasks(registry)) == [5, 10, 10]


def test_recursive_slot_copies_a_directory_tree(registry, site, remote, manager):
    make_site(registry, site)
    make_app(registry, inputs={"direction": "in", "localPath": "inputs", "recursive": True})
    tree = remote / "dataset"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("a")
    (tree / "sub" / "b.txt").write_text("b")
    manager()
    make_jobs(registry, 1, lambda i: {"inputs": f"local:{tree}"})
    wait_states(registry, ["j0"], DONE_IN)
    dst = site.data_path / "w" / "j0" / "inputs"
    assert (dst / "a.txt").read_text() == "a" and (dst / "sub" / "b.txt").read_text() == "b"
    assert tasks(registry)[0].status.files_transferred == 2


def test_hardlink_when_the_location_asks_and_the_filesystem_is_the_same(registry, site, remote, manager):
    make_site(registry, site, linked="file://?hardlink=true")
    make_app(registry)
    (remote / "big.dat").write_text("shared")
    manager()
    make_jobs(registry, 1, lambda i: {"inp": f"linked:{remote}/big.dat"})
    wait_states(registry, ["j0"], DONE_IN)
    dst = site.data_path / "w" / "j0" / "in.dat"
    assert os.stat(dst).st_ino == os.stat(remote / "big.dat").st_ino


def test_missing_source_is_retried_then_fails_only_its_job_with_the_reason(registry, site, remote, manager):
    make_site(registry, site)
    make_app(registry)
    (remote / "in0.dat").write_text("here")
    manager(max_attempts=2)
    make_jobs(registry, 2, lambda i: {"inp": f"local:{remote}/in{i}.dat"})
    ok, bad = wait_states(registry, ["j0", "j1"], {JobState.PREPROCESSED, JobState.FAILED})
    assert ok.status.state is JobState.PREPROCESSED
    assert bad.status.state is JobState.FAILED
    assert "No such file or directory" in bad.status.message and "after 2 attempt(s)" in bad.status.message
    t = tasks(registry)[0]
    assert t.status.state == "Failed" and t.status.attempts == 2
    assert [f.index for f in t.status.failed_items] == [next(i for i, it in enumerate(t.spec.items) if it.job == "j1")]
    assert get_condition(bad.status.conditions, "TransferStalled") is None


def test_jobs_that_trickle_in_share_a_task_and_a_lone_job_waits_only_the_window(registry, site, remote, manager):
    import time

    make_site(registry, site)
    make_app(registry)
    for i in range(40):
        (remote / f"in{i}.dat").write_text("x")
    # max_wait (an hour) is far beyond wait_states' deadline: a lone job that waited it instead
    # of the window would fail the test; the window (10 s) outlasts a loaded machine's pauses
    # between the bursts (3 s did not at load 50: the bursts split into two tasks).
    manager(window=10.0, max_wait=3600.0)
    for b in range(4):  # 4 bursts of 10 jobs, paced 0.1 s apart: closer than the window
        make_jobs(registry, 10, lambda i, b=b: {"inp": f"local:{remote}/in{b * 10 + i}.dat"}, prefix=f"b{b}-")
        time.sleep(0.1)
    wait_states(registry, [f"b{b}-{i}" for b in range(4) for i in range(10)], DONE_IN)
    assert [len(t.spec.items) for t in tasks(registry)] == [40]
    t0 = time.monotonic()
    make_jobs(registry, 1, lambda i: {"inp": f"local:{remote}/in0.dat"}, prefix="lone")
    wait_states(registry, ["lone0"], DONE_IN)  # within DEADLINE: it did not wait max_wait
    assert time.monotonic() - t0 >= 10.0  # it did wait the window (a lower bound: slowness only adds)
    assert sorted(len(t.spec.items) for t in tasks(registry)) == [1, 40]


def test_a_stage_in_through_a_jobs_symlink_fails_the_job_and_writes_nothing_outside(registry, site, remote,
                                                                                    manager, tmp_path):
    """A link that an earlier job (a parent) left in data/ is not followed: the item fails
    for good, its job FAILS with the reason, and the file outside data/ is untouched."""
    make_site(registry, site)
    make_app(registry)
    (remote / "in0.dat").write_text("payload")
    outside = tmp_path / "outside"
    outside.mkdir()
    (site.data_path / "w").mkdir(parents=True, exist_ok=True)
    os.symlink(outside, site.data_path / "w" / "j0")  # what a parent job's `ln -s` makes
    manager(max_attempts=2)
    make_jobs(registry, 1, lambda i: {"inp": f"local:{remote}/in{i}.dat"})
    (bad,) = wait_states(registry, ["j0"], {JobState.PREPROCESSED, JobState.FAILED})
    assert bad.status.state is JobState.FAILED
    assert "symbolic link" in bad.status.message
    assert list(outside.iterdir()) == []


def test_a_stage_in_destination_that_is_a_symlink_is_not_written_through(registry, site, remote, manager,
                                                                         tmp_path):
    make_site(registry, site)
    make_app(registry)
    (remote / "in0.dat").write_text("payload")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (site.data_path / "w" / "j0").mkdir(parents=True)
    os.symlink(victim, site.data_path / "w" / "j0" / "in.dat")
    manager(max_attempts=2)
    make_jobs(registry, 1, lambda i: {"inp": f"local:{remote}/in{i}.dat"})
    (bad,) = wait_states(registry, ["j0"], {JobState.PREPROCESSED, JobState.FAILED})
    assert bad.status.state is JobState.FAILED and "symbolic link" in bad.status.message
    assert victim.read_text() == "precious"


def test_transfers_run_again_after_the_manager_loses_its_lease_and_leads_again(registry, site, remote, manager):
    """A manager given its reconcilers reuses them in its next term: the transfer reconciler's
    provider calls ended with the lost term must start again in the new one (a loaded CI box
    lost a test manager's 2 s lease, and every later stage-in failed "after shutdown")."""
    make_site(registry, site)
    make_app(registry)
    for i in range(2):
        (remote / f"in{i}.dat").write_text(f"input {i}\n")
    mgr = manager(window=0.05, max_wait=5.0)
    make_jobs(registry, 1, lambda i: {"inp": f"local:{remote}/in0.dat"}, prefix="before")
    wait_states(registry, ["before0"], DONE_IN)
    first = mgr.elector.lease_id
    registry.store.lease_revoke(first)  # the store expired it during a pause
    poll_until(lambda: mgr.terms >= 2 and mgr.leading.is_set(), DEADLINE, "the manager to lead again")
    make_jobs(registry, 1, lambda i: {"inp": f"local:{remote}/in1.dat"}, prefix="after")
    (after,) = wait_states(registry, ["after0"], DONE_IN)
    assert (site.data_path / "w" / "after0" / "in.dat").read_text() == "input 1\n"
