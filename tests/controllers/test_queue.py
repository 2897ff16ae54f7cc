from __future__ import annotations

import threading
import time

import pytest

from controllers import WorkQueue
from controllers._queue import ShutDown
from tests._deadline import DEADLINE


def test_repeated_adds_of_a_waiting_key_collapse():
    q: WorkQueue[str] = WorkQueue()
    for _ in range(5):
        q.add("a")
    q.add("b")
    assert q.get_batch(10, timeout=0) == ["a", "b"]
    assert q.get_batch(10, timeout=0) == []


def test_key_added_while_processing_is_handed_out_again_only_after_done():
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    assert q.get_batch(1, timeout=0) == ["a"]
    q.add("a")
    assert q.get_batch(1, timeout=0) == []  # never to two workers at once
    q.done("a")
    assert q.get_batch(1, timeout=0) == ["a"]


def test_rate_limited_requeue_backs_off_exponentially_and_forget_resets():
    q: WorkQueue[str] = WorkQueue(base_delay=0.01)
    delays = [q.add_rate_limited("a") for _ in range(4)]
    assert delays == [0.01, 0.02, 0.04, 0.08]
    q.forget("a")
    assert q.add_rate_limited("a") == 0.01


def test_add_after_delivers_at_the_time_not_before():
    q: WorkQueue[str] = WorkQueue()
    t0 = time.monotonic()
    q.add_after("a", 0.1)
    early = q.get_batch(1, timeout=0.02)
    # Nothing yet, unless this thread was held up past the delay (a loaded machine).
    assert early == [] or time.monotonic() - t0 >= 0.1
    assert early or q.get_batch(1, timeout=DEADLINE) == ["a"]
    assert time.monotonic() - t0 >= 0.1


def test_get_batch_wakes_a_blocked_worker_and_shutdown_ends_it():
    q: WorkQueue[str] = WorkQueue()
    got: list[list[str]] = []
    ended = threading.Event()

    def worker():
        try:
            while True:
                got.append(q.get_batch(10))
        except ShutDown:
            ended.set()

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    q.add("x")
    deadline = time.monotonic() + DEADLINE
    while not got and time.monotonic() < deadline:
        time.sleep(0.001)
    assert got == [["x"]]
    q.shutdown()
    assert ended.wait(DEADLINE)


def test_batches_are_capped():
    q: WorkQueue[int] = WorkQueue()
    q.add_many(list(range(10)))
    assert q.get_batch(4, timeout=0) == [0, 1, 2, 3]
    assert len(q) == 6
    with pytest.raises(ShutDown):
        q.shutdown()
        q.get_batch(100, timeout=0)
        q.get_batch(100, timeout=0)
