"""The futures' shared watch (``apis._futures``) on both store backends, with no site: the
test writes the states itself. Futures wake on the terminal states' index entries and on a
job's deletion; the writes on the way there wake nobody."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import apis
import store as st
from apis import App, AppSpec, Job, JobState, ObjectMeta, Registry
from apis import _futures as futures
from apis._registry import object_key
from store.testing import EtcdCluster, etcd_available
from tests._deadline import DEADLINE
from tests.apis.conftest import Backend

S = JobState


def _jobs(backend: Backend, *names: str) -> list[Job]:
    backend.app()
    return [backend.registry.create(Job(name=n, namespace=backend.namespace, app_id="echo", workdir=n,
                                        parameters={"x": "1"})) for n in names]


def _to(backend: Backend, name: str, *path: JobState) -> None:
    backend.registry.mutate(Job, name, lambda j: apis.advance(j, list(path), "test"), backend.namespace)


def test_waiters_wake_on_finished_failed_and_deleted_jobs_not_on_the_writes_between(backend: Backend) -> None:
    done, failed, deleted, running = _jobs(backend, "done", "failed", "deleted", "running")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        it = futures.as_completed([done, failed, deleted, running], timeout=DEADLINE, registry=backend.registry)
        first = pool.submit(next, it)
        _to(backend, "running", S.READY, S.STAGED_IN, S.PREPROCESSED, S.RUNNING)  # not terminal: wakes nobody
        _to(backend, "done", S.READY, S.STAGED_IN, S.PREPROCESSED, S.RUNNING)
        _to(backend, "done", S.RUN_DONE, S.POSTPROCESSED, S.STAGED_OUT, S.JOB_FINISHED)
        assert first.result(timeout=DEADLINE).name == "done"
        _to(backend, "failed", S.FAILED)
        assert pool.submit(next, it).result(timeout=DEADLINE).name == "failed"
        backend.registry.delete(Job, "deleted", backend.namespace)
        assert pool.submit(next, it).result(timeout=DEADLINE).name == "deleted"
    assert done.state == "JOB_FINISHED" and failed.state == "FAILED"
    with pytest.raises(futures.JobDeleted):
        futures.outcome(deleted)
    res = futures.wait([running], timeout=0.2, registry=backend.registry)
    assert res.not_done == [running]


# --- the watch on the store's one list-watch: compaction, a broken stream, a restart ----------


def _until(ok: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _subscribed(watcher: futures.JobWatcher, *names: str) -> None:
    """Wait until the waiter has subscribed ``names`` and made its first read (which holds the
    watcher's lock): from here on only the watch can wake it."""
    _until(lambda: all(n in watcher._sinks for n in names), "the waiter to subscribe")
    with watcher._lock:
        pass


class _GatedWatch(st.Watch):
    def __init__(self, inner: st.Watch, owner: GatedStore) -> None:
        self.inner = inner
        self.owner = owner

    def poll(self, timeout: float | None = None) -> list[st.Event]:
        if self.owner.down.is_set():
            self.owner.failures += 1
            raise st.Unavailable("injected: the stream broke")
        return self.inner.poll(timeout)

    def close(self) -> None:
        self.inner.close()


class GatedStore:
    """The real store, as the waiters' registry sees it. Its watches open only once ``gate``
    is set (so a watch resumes at a revision the test may compact meanwhile); while ``down``
    is set every watch, new or open, and every revision asked fails as an unreachable
    store's; ``failing_reads`` get_many calls fail so."""

    def __init__(self, inner: st.Store) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.gate.set()
        self.down = threading.Event()
        self.failures = 0
        self.failing_reads = 0
        self.watches = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def current_revision(self) -> int:
        if self.down.is_set():
            self.failures += 1
            raise st.Unavailable("injected: the store is away")
        return self.inner.current_revision()

    def get_many(self, keys: list[str]) -> list[st.KeyValue | None]:
        if self.failing_reads:
            self.failing_reads -= 1
            raise st.Unavailable("injected: the read failed")
        return self.inner.get_many(keys)

    def watch(self, prefix: str, start_revision: int | None = None, *, prev_values: bool = True) -> st.Watch:
        assert self.gate.wait(DEADLINE)
        if self.down.is_set():
            self.failures += 1
            raise st.Unavailable("injected: the store is away")
        self.watches += 1
        return _GatedWatch(self.inner.watch(prefix, start_revision, prev_values=prev_values), self)


def _open_watches(store: st.Store) -> int:
    """The store object's watches not closed (etcd's set keeps closed ones until collected)."""
    return sum(1 for w in list(store._watches) if not w._closed)  # type: ignore[attr-defined]


def _finish(backend: Backend, name: str) -> None:
    _to(backend, name, S.READY, S.STAGED_IN, S.PREPROCESSED, S.RUNNING)
    _to(backend, name, S.RUN_DONE, S.POSTPROCESSED, S.STAGED_OUT, S.JOB_FINISHED)


def _outcomes(jobs: list[Job]) -> dict[str, str]:
    out = {}
    for j in jobs:
        try:
            futures.outcome(j)
            out[j.name] = j.state
        except futures.JobDeleted:
            out[j.name] = "deleted"
        except futures.JobFailed:
            out[j.name] = "failed"
    return out


def test_a_waiter_gets_its_result_across_a_compaction(backend: Backend) -> None:
    jobs = _jobs(backend, "done", "deleted")
    gated = GatedStore(backend.registry.store)
    gated.gate.clear()  # the watches resume at the waiter's revision, but open only later
    reg = Registry(gated)  # type: ignore[arg-type]
    watcher = futures.watcher_for(reg, backend.namespace)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(futures.wait, jobs, timeout=DEADLINE, registry=reg)
        _subscribed(watcher, "done", "deleted")
        _finish(backend, "done")
        backend.registry.delete(Job, "deleted", backend.namespace)
        backend.registry.store.compact(backend.registry.store.current_revision())  # the events are gone
        gated.gate.set()
        res = waiting.result(timeout=DEADLINE)
    assert res.not_done == []
    assert _outcomes(jobs) == {"done": "JOB_FINISHED", "deleted": "deleted"}
    assert watcher.resyncs >= 1  # found by the re-read after the relist, not by the watch


def test_a_waiter_gets_its_result_across_a_broken_stream(backend: Backend) -> None:
    jobs = _jobs(backend, "done", "deleted", "later")
    gated = GatedStore(backend.registry.store)
    reg = Registry(gated)  # type: ignore[arg-type]
    watcher = futures.watcher_for(reg, backend.namespace)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        it = futures.as_completed(jobs, timeout=DEADLINE, registry=reg)
        first = pool.submit(lambda: [next(it).name, next(it).name])
        _subscribed(watcher, "done", "deleted", "later")
        _until(lambda: gated.watches == len(futures.watched_prefixes(backend.namespace)), "the watches")
        gated.down.set()
        _until(lambda: gated.failures >= 2 * len(futures.watched_prefixes(backend.namespace)),
               "every watch to meet the outage and retry")
        _finish(backend, "done")
        backend.registry.delete(Job, "deleted", backend.namespace)
        gated.down.clear()
        assert sorted(first.result(timeout=DEADLINE)) == ["deleted", "done"]
        _to(backend, "later", S.FAILED)  # after the relist: the watch again
        assert pool.submit(next, it).result(timeout=DEADLINE).name == "later"
    assert _outcomes(jobs) == {"done": "JOB_FINISHED", "deleted": "deleted", "later": "failed"}
    assert watcher.resyncs >= 1 and watcher.watches_opened == 1


def test_a_failed_read_of_a_batch_is_made_good_by_a_relist(backend: Backend) -> None:
    jobs = _jobs(backend, "done")
    gated = GatedStore(backend.registry.store)
    reg = Registry(gated)  # type: ignore[arg-type]
    watcher = futures.watcher_for(reg, backend.namespace)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(futures.wait, jobs, timeout=DEADLINE, registry=reg)
        _subscribed(watcher, "done")
        gated.failing_reads = 1  # the read the finished job's entry asks for
        _finish(backend, "done")
        assert waiting.result(timeout=DEADLINE).not_done == []
    assert gated.failing_reads == 0 and watcher.resyncs >= 1
    assert _outcomes(jobs) == {"done": "JOB_FINISHED"}


@pytest.mark.etcd
def test_a_waiter_gets_its_result_across_an_etcd_restart() -> None:
    if not etcd_available():
        pytest.skip("etcd is not installed")
    with EtcdCluster.start(1) as cluster:
        s = st.open_store(cluster.url)
        try:
            reg = Registry(s)
            spec = AppSpec.model_validate({"command": "echo {{ x }}", "parameters": {"x": {"required": True}}})
            reg.create(App(metadata=ObjectMeta(name="echo", namespace="default"), spec=spec))
            job = reg.create(Job(name="j", namespace="default", app_id="echo", workdir="j", parameters={"x": "1"}))
            watcher = futures.watcher_for(reg, "default")
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                waiting = pool.submit(futures.wait, [job], timeout=DEADLINE, registry=reg)
                _subscribed(watcher, "j")
                cluster.members[0].kill()
                cluster.members[0].restart()
                deadline = time.monotonic() + DEADLINE
                while True:
                    try:
                        reg.mutate(Job, "j", lambda j: apis.advance(j, [S.FAILED], "test"), "default")
                        break
                    except apis.StoreUnavailable:
                        assert time.monotonic() < deadline, "etcd did not come back"
                        time.sleep(0.2)
                assert waiting.result(timeout=DEADLINE).not_done == []
            assert job.state == "FAILED"
        finally:
            s.close()


def test_a_thousand_futures_in_ten_waits_cost_one_set_of_watches(backend: Backend) -> None:
    backend.app()
    jobs = backend.registry.create_many([Job(name=f"j{i}", namespace=backend.namespace, app_id="echo",
                                             workdir=f"j{i}", parameters={"x": "1"}) for i in range(1000)])
    store = backend.registry.store
    watcher = futures.watcher_for(backend.registry, backend.namespace)
    opened = watcher.watches_opened
    watches_before = _open_watches(store)
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        waits = [pool.submit(futures.wait, jobs[i::10], timeout=DEADLINE, registry=backend.registry)
                 for i in range(10)]
        _until(lambda: len(watcher._sinks) == 1000, "every waiter to subscribe")
        prefixes = len(futures.watched_prefixes(backend.namespace))
        assert watcher.watches_opened - opened <= 1 and len(watcher._reflectors) == prefixes
        _until(lambda: _open_watches(store) >= watches_before + prefixes, "the watches")
        assert _open_watches(store) - watches_before == prefixes
        backend.registry.update_many([(j, j.model_copy(update={"status": j.status.model_copy(
            update={"state": S.FAILED})})) for j in jobs])
        assert all(w.result(timeout=DEADLINE).not_done == [] for w in waits)
    assert {j.state for j in jobs} == {"FAILED"}


def test_a_waiters_first_read_decodes_only_the_jobs_with_a_terminal_index_entry(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = _jobs(backend, "a", "b", "c", "moved", "ended")
    _to(backend, "moved", S.READY)  # written since the waiter's copy: its entries are read
    _to(backend, "ended", S.FAILED)
    decoded: list[str] = []
    real = Registry.decode

    def counting(kind: type[Any], kv: st.KeyValue) -> Any:
        decoded.append(kv.key)
        return real(kind, kv)

    monkeypatch.setattr(Registry, "decode", staticmethod(counting))
    res = futures.wait(jobs, timeout=0.2, registry=backend.registry)
    assert [j.name for j in res.done] == ["ended"]
    assert decoded == [object_key(Job, backend.namespace, "ended")]


def test_a_wait_on_a_store_that_is_away_raises_store_unavailable_and_leaves_no_waiter(backend: Backend) -> None:
    jobs = _jobs(backend, "j")
    gated = GatedStore(backend.registry.store)
    reg = Registry(gated)  # type: ignore[arg-type]
    watcher = futures.watcher_for(reg, backend.namespace)
    gated.down.set()  # the watches cannot even take a revision to start from
    with pytest.raises(apis.StoreUnavailable):
        futures.wait(jobs, timeout=DEADLINE, registry=reg)
    assert watcher._sinks == {} and watcher._reflectors == []
    gated.down.clear()
    gated.failing_reads = 1  # the watches open, the waiter's first read fails
    with pytest.raises(apis.StoreUnavailable):
        futures.wait(jobs, timeout=DEADLINE, registry=reg)
    assert watcher._sinks == {}
    _to(backend, "j", S.FAILED)
    assert futures.wait(jobs, timeout=DEADLINE, registry=reg).not_done == []
    assert jobs[0].state == "FAILED"


def test_the_watches_close_when_no_one_waits_and_reopen_for_the_next_waiter(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(futures, "IDLE_CLOSE", 0.2)
    jobs = _jobs(backend, "first", "second")
    store = backend.registry.store
    before = _open_watches(store)
    watcher = futures.watcher_for(backend.registry, backend.namespace)
    assert futures.wait(jobs[:1], timeout=0.2, registry=backend.registry).not_done == jobs[:1]
    assert watcher.watches_opened == 1
    _until(lambda: watcher._reflectors == [] and _open_watches(store) == before, "the idle watches to close")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(futures.wait, jobs[1:], timeout=DEADLINE, registry=backend.registry)
        _subscribed(watcher, "second")
        _to(backend, "second", S.FAILED)
        assert waiting.result(timeout=DEADLINE).not_done == []
    assert watcher.watches_opened == 2
