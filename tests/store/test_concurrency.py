"""Several writers and watchers at once: threads and other processes."""

from __future__ import annotations

import multiprocessing
import statistics
import threading
import time

from store import Conflict, Store
from tests._deadline import DEADLINE

from . import _workers

SPAWN = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited store or gRPC state


def test_cas_increments_from_several_processes_lose_no_update(store: Store, store_url: str, ns: str) -> None:
    key = ns + "counter"
    store.put(key, b"0")
    procs, per_proc = 4, 200
    with SPAWN.Pool(procs) as pool:
        results = [pool.apply_async(_workers.cas_increment, (store_url, key, per_proc)) for _ in range(procs)]
        for r in results:
            r.get(timeout=240)
    kv = store.get(key)
    assert kv is not None
    assert int(kv.value) == procs * per_proc
    assert kv.version == procs * per_proc + 1


def test_cas_increments_from_threads_sharing_one_store_lose_no_update(store: Store, ns: str) -> None:
    key = ns + "counter"
    store.put(key, b"0")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(100):
                while True:
                    kv = store.get(key)
                    assert kv is not None
                    try:
                        store.put(key, str(int(kv.value) + 1).encode(), expect_revision=kv.mod_revision)
                        break
                    except Conflict:
                        continue
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert store.get(key).value == b"400"  # type: ignore[union-attr]


def test_watcher_in_another_process_sees_writes_within_milliseconds(
    store: Store, store_url: str, ns: str
) -> None:
    n = 20
    ready, out = SPAWN.Event(), SPAWN.Queue()
    child = SPAWN.Process(target=_workers.watch_and_timestamp, args=(store_url, ns, n, ready, out))
    child.start()
    try:
        assert ready.wait(DEADLINE), "the watching process did not start"
        sent: dict[int, float] = {}
        for i in range(n):
            t = time.time()
            sent[store.put(f"{ns}k{i}", b"x")] = t
            time.sleep(0.02)
        received = []
        while (item := out.get(timeout=DEADLINE)) is not None:
            received.append(item)
    finally:
        child.join(DEADLINE)
        if child.is_alive():
            child.kill()
    assert [rev for _, rev, _ in received] == sorted(sent)
    latencies = [at - sent[rev] for _, rev, at in received]
    # liveness, with room for a loaded machine: typical latency is about a millisecond
    assert statistics.median(latencies) < 0.1, latencies
