"""The Reflector: list, watch from the next revision, relist on compaction, a broken stream
or an unreachable store, resume from a resource version; on both backends."""

from __future__ import annotations

import random
import threading
import time

import pytest

from store import Put, Store, Unavailable, Watch, open_store
from store.reflector import Backoff, Delta, Reflector
from store.testing import EtcdCluster, etcd_available
from tests._deadline import DEADLINE


def decode(value: bytes) -> str:
    return value.decode()


class Consumer:
    """Runs ``reflector.events()`` on a thread and keeps the state the deltas describe."""

    def __init__(self, reflector: Reflector[str], **kwargs: object) -> None:
        self.reflector = reflector
        self.state: dict[str, str] = {}
        self.deltas: list[Delta[str]] = []
        self.syncs = 0
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, kwargs=kwargs, daemon=True)
        self._thread.start()

    def _run(self, **kwargs: object) -> None:
        try:
            for d in self.reflector.events(stop=self._stop, **kwargs):  # type: ignore[arg-type]
                with self._lock:
                    self.deltas.append(d)
                    if d.type == "SYNC":
                        self.syncs += 1
                    elif d.type == "DELETED":
                        self.state.pop(d.key, None)
                    else:
                        assert d.obj is not None
                        self.state[d.key] = d.obj
        except BaseException as e:  # surfaced by the test
            self.error = e

    def wait(self, predicate: object, what: str) -> None:
        assert callable(predicate)
        deadline = time.monotonic() + DEADLINE
        while True:
            with self._lock:
                if predicate():
                    return
            assert self.error is None, self.error
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.state}"
            time.sleep(0.02)

    def wait_state(self, store: Store, prefix: str) -> None:
        def same() -> bool:
            want = {kv.key: kv.value.decode() for kv in store.range(prefix).kvs}
            return self.state == want

        self.wait(same, "the store's state")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=DEADLINE)
        assert not self._thread.is_alive()
        assert self.error is None, self.error


def test_lists_in_pages_then_syncs_then_streams_changes(store: Store, ns: str) -> None:
    for i in range(25):
        store.put(f"{ns}k{i:02d}", f"v{i}".encode())
    r = Reflector(store, ns, decode, page=7)
    c = Consumer(r)
    try:
        c.wait(lambda: c.syncs == 1, "the first SYNC")
        assert [d.type for d in c.deltas] == ["ADDED"] * 25 + ["SYNC"]
        assert c.state == {f"{ns}k{i:02d}": f"v{i}" for i in range(25)}
        store.put(ns + "k00", b"changed")
        rd = store.delete(ns + "k01")
        store.put(ns + "new", b"n")
        c.wait(lambda: len(c.deltas) == 29, "three live deltas")
        mod, dele, add = c.deltas[26:]
        assert (mod.type, mod.key, mod.obj) == ("MODIFIED", ns + "k00", "changed")
        assert (dele.type, dele.key, dele.obj, dele.revision) == ("DELETED", ns + "k01", "v1", rd)
        assert (add.type, add.key, add.obj) == ("ADDED", ns + "new", "n")
        assert r.relists == 0
    finally:
        c.stop()


def test_relists_after_compaction_and_reports_only_what_changed(store: Store, ns: str) -> None:
    for k in "abc":
        store.put(ns + k, b"1")
    r = Reflector(store, ns, decode)
    stream = r.events()
    first = [next(stream) for _ in range(4)]
    assert [d.type for d in first] == ["ADDED", "ADDED", "ADDED", "SYNC"]
    # The reflector is paused after its list: these writes and the compaction happen before
    # it opens its watch, so the revisions it needs are gone.
    store.put(ns + "a", b"2")
    store.delete(ns + "b")
    store.put(ns + "d", b"1")
    store.compact(store.current_revision())
    after = [next(stream) for _ in range(4)]
    stream.close()
    assert sorted((d.type, d.key, d.obj) for d in after[:3]) == [
        ("ADDED", ns + "d", "1"),
        ("DELETED", ns + "b", None),
        ("MODIFIED", ns + "a", "2"),
    ]
    assert after[3].type == "SYNC" and after[3].revision == store.current_revision()
    assert r.relists == 1
    assert r.known == {ns + "a": store.get(ns + "a").mod_revision, ns + "c": first[2].revision,  # type: ignore[union-attr]
                       ns + "d": store.get(ns + "d").mod_revision}  # type: ignore[union-attr]


def test_resumes_from_a_resource_version_without_listing(store: Store, ns: str) -> None:
    store.put(ns + "old", b"1")
    rv = store.put(ns + "a", b"1")
    r2 = store.put(ns + "a", b"2")
    r3 = store.put(ns + "b", b"1")
    r = Reflector(store, ns, decode)
    stream = r.events(resource_version=rv, known={ns + "old": rv - 1, ns + "a": rv})
    got = [next(stream) for _ in range(2)]
    stream.close()
    assert [(d.type, d.key, d.obj, d.revision) for d in got] == [
        ("MODIFIED", ns + "a", "2", r2),
        ("ADDED", ns + "b", "1", r3),
    ]


def test_a_resumed_stream_yields_deletes_of_unseen_keys_with_their_previous_value_when_asked(
        store: Store, ns: str) -> None:
    store.put(ns + "gone", b"before")
    rv = store.put(ns + "other", b"1")
    d1 = store.delete(ns + "gone")
    r2 = store.put(ns + "b", b"1")
    plain = Reflector(store, ns, decode).events(resource_version=rv)
    first = next(plain)
    plain.close()
    assert (first.type, first.key, first.revision) == ("ADDED", ns + "b", r2)  # the unseen delete is dropped
    stream = Reflector(store, ns, decode, unseen_deletes=True).events(resource_version=rv)
    got = [next(stream) for _ in range(2)]
    stream.close()
    assert [(d.type, d.key, d.obj, d.revision) for d in got] == [
        ("DELETED", ns + "gone", "before", d1),
        ("ADDED", ns + "b", "1", r2),
    ]


def test_deleted_deltas_without_values_name_the_key_and_open_the_watch_without_them(store: Store, ns: str) -> None:
    opened: list[dict[str, object]] = []

    class Spy:
        def __getattr__(self, name: str) -> object:
            return getattr(store, name)

        def watch(self, prefix: str, start_revision: int | None = None, **kw: object) -> Watch:
            opened.append(kw)
            return store.watch(prefix, start_revision, **kw)  # type: ignore[arg-type]

    store.put(ns + "a", b"1")
    c = Consumer(Reflector(Spy(), ns, decode, deleted_values=False))  # type: ignore[arg-type]
    c.wait(lambda: c.syncs == 1 and "1" in c.state.values(), "the list")
    rd = store.delete(ns + "a")
    c.wait(lambda: any(d.type == "DELETED" for d in c.deltas), "the delete")
    c.stop()
    (d,) = [d for d in c.deltas if d.type == "DELETED"]
    assert (d.key, d.revision, d.obj, d.kv) == (ns + "a", rd, None, None)
    assert opened == [{"prev_values": False}]


def test_resume_past_compaction_relists_and_reports_deletes_of_the_known_state(store: Store, ns: str) -> None:
    rv = store.put(ns + "a", b"1")
    store.put(ns + "gone", b"1")
    store.delete(ns + "gone")
    store.put(ns + "b", b"1")
    store.compact(store.current_revision())
    r = Reflector(store, ns, decode)
    stream = r.events(resource_version=rv - 1, known={ns + "a": rv, ns + "gone": rv - 1})
    got = [next(stream) for _ in range(3)]
    stream.close()
    assert sorted((d.type, d.key) for d in got[:2]) == [("ADDED", ns + "b"), ("DELETED", ns + "gone")]
    assert got[2].type == "SYNC"
    assert r.relists == 1


def test_a_value_that_does_not_decode_is_skipped_and_the_stream_goes_on(store: Store, ns: str) -> None:
    store.put(ns + "bad", b"\xff\xfe")
    store.put(ns + "good", b"ok")
    r = Reflector(store, ns, decode)
    c = Consumer(r)
    try:
        c.wait(lambda: c.syncs == 1, "SYNC")
        assert c.state == {ns + "good": "ok"}
        store.put(ns + "bad2", b"\xff")
        store.put(ns + "later", b"x")
        c.wait(lambda: ns + "later" in c.state, "the later key")
        assert ns + "bad2" not in c.state
    finally:
        c.stop()


def test_decode_kv_sees_the_whole_key_value(store: Store, ns: str) -> None:
    rev = store.put(ns + "a", b"x")
    r: Reflector[tuple[str, int]] = Reflector(store, ns, decode_kv=lambda kv: (kv.key, kv.mod_revision))
    stream = r.events()
    d = next(stream)
    stream.close()
    assert d.obj == (ns + "a", rev)


def test_close_from_another_thread_ends_the_stream(store: Store, ns: str) -> None:
    r = Reflector(store, ns, decode)
    done = threading.Event()

    def consume() -> None:
        for _ in r.events():
            pass
        done.set()

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    time.sleep(0.2)
    r.close()
    assert done.wait(DEADLINE)


# --- a store that goes away -------------------------------------------------------------


class FlakyWatch(Watch):
    def __init__(self, inner: Watch, flaky: FlakyStore) -> None:
        self.inner = inner
        self.flaky = flaky

    def poll(self, timeout: float | None = None) -> list:  # type: ignore[type-arg]
        if self.flaky.down.is_set():
            raise Unavailable("injected: the store is away")
        return self.inner.poll(timeout)

    def close(self) -> None:
        self.inner.close()


class FlakyStore:
    """The real store, but while ``down`` is set every range and watch fails as an
    unreachable store fails (the reflector's only calls)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.down = threading.Event()
        self.failures = 0

    def _check(self) -> None:
        if self.down.is_set():
            self.failures += 1
            raise Unavailable("injected: the store is away")

    def range(self, prefix: str, limit: int = 0, start_after: str | None = None, keys_only: bool = False):  # type: ignore[no-untyped-def]
        self._check()
        return self.inner.range(prefix, limit, start_after, keys_only)

    def watch(self, prefix: str, start_revision: int | None = None) -> Watch:
        self._check()
        return FlakyWatch(self.inner.watch(prefix, start_revision), self)


def test_relists_with_backoff_after_the_store_was_away(store: Store, ns: str) -> None:
    flaky = FlakyStore(store)
    store.put(ns + "a", b"1")
    errors: list[Exception] = []
    back = threading.Event()
    r = Reflector(flaky, ns, decode, on_unavailable=errors.append, on_available=back.set,  # type: ignore[arg-type]
                  backoff=Backoff(initial=0.01, cap=0.05), poll_interval=0.05)
    c = Consumer(r)
    try:
        c.wait(lambda: c.syncs == 1, "SYNC")
        flaky.down.set()
        c.wait(lambda: len(errors) >= 3, "failed relists")
        store.put(ns + "a", b"2")
        store.delete(ns + "a")
        store.put(ns + "b", b"1")
        store.compact(store.current_revision())
        flaky.down.clear()
        c.wait_state(store, ns)
        assert back.wait(DEADLINE)
        assert r.relists >= 1
        assert all(isinstance(e, Unavailable) for e in errors)
        store.put(ns + "c", b"1")
        c.wait_state(store, ns)
    finally:
        c.stop()


def test_backoff_is_jittered_doubling_and_capped() -> None:
    b = Backoff(initial=0.1, cap=1.0, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(8)]
    bases = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    assert all(0.5 * base <= d <= base for d, base in zip(delays, bases, strict=True))
    assert len(set(delays[4:])) == 4  # jittered: not all the same
    b.reset()
    assert b.next_delay() <= 0.1


def test_writes_from_another_opening_of_the_store_arrive(store_url: str, ns: str) -> None:
    """The SQLite file opened twice (another process's view); etcd through a second client."""
    reader = open_store(store_url)
    writer = open_store(store_url)
    try:
        c = Consumer(Reflector(reader, ns, decode))
        c.wait(lambda: c.syncs == 1, "SYNC")
        for i in range(20):
            writer.put(f"{ns}{i}", b"w")
        writer.delete(f"{ns}3")
        c.wait_state(writer, ns)
        c.stop()
    finally:
        reader.close()
        writer.close()


@pytest.mark.etcd
def test_relists_after_the_etcd_member_restarts(tmp_path: object) -> None:
    if not etcd_available():
        pytest.skip("etcd is not installed")
    with EtcdCluster.start(1) as cluster:
        s = open_store(cluster.url)
        try:
            s.put("/r/a", b"1")
            r = Reflector(s, "/r/", decode, backoff=Backoff(initial=0.05, cap=0.5))
            c = Consumer(r)
            c.wait(lambda: c.syncs == 1, "SYNC")
            cluster.members[0].kill()
            cluster.members[0].restart()
            deadline = time.monotonic() + DEADLINE
            while True:
                try:
                    s.put("/r/b", b"1")
                    s.delete("/r/a")
                    break
                except Unavailable:
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
            c.wait(lambda: c.state == {"/r/b": "1"}, "the writes after the restart")
            c.stop()
        finally:
            s.close()


def test_sqlite_file_reopened_by_a_new_store_object_relists_into_the_same_state(tmp_path: object) -> None:
    url = f"sqlite://{tmp_path}/store.db"
    s1 = open_store(url)
    s1.put("/x/a", b"1")
    r = Reflector(s1, "/x/", decode)
    stream = r.events()
    assert next(stream).key == "/x/a"
    assert next(stream).type == "SYNC"
    stream.close()
    s1.close()
    s2 = open_store(url)  # the file reopened, e.g. after the control plane restarted
    try:
        s2.put("/x/b", b"1")
        s2.delete("/x/a")
        r.store = s2
        stream = r.events(resource_version=r.revision)
        got = [next(stream) for _ in range(2)]
        stream.close()
        assert [(d.type, d.key) for d in got] == [("ADDED", "/x/b"), ("DELETED", "/x/a")]
    finally:
        s2.close()



# --- batches, key-only deltas, a reflector that lists nothing (the futures' watch) --------


class CountingStore:
    """The real store, recording every range (prefix, keys_only) and watch the reflector asks
    for (and the ``prev_values`` it asks with)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.ranges: list[tuple[str, bool]] = []
        self.watch_prev_values: list[bool] = []

    def range(self, prefix: str, limit: int = 0, start_after: str | None = None, keys_only: bool = False):  # type: ignore[no-untyped-def]
        self.ranges.append((prefix, keys_only))
        return self.inner.range(prefix, limit, start_after, keys_only)

    def watch(self, prefix: str, start_revision: int | None = None, *, prev_values: bool = True) -> Watch:
        self.watch_prev_values.append(prev_values)
        return self.inner.watch(prefix, start_revision, prev_values=prev_values)

    def current_revision(self) -> int:
        return self.inner.current_revision()


def test_batches_hand_out_a_list_page_or_a_watch_poll_at_a_time(store: Store, ns: str) -> None:
    for i in range(25):
        store.put(f"{ns}k{i:02d}", b"v")
    r = Reflector(store, ns, decode, page=10)
    stream = r.batches()
    try:
        pages = [next(stream) for _ in range(3)]
        assert [len(b) for b in pages] == [10, 10, 6]  # the SYNC closes the last page
        assert [d.type for d in pages[2]][-1] == "SYNC"
        store.txn([], [Put(f"{ns}t{i}", b"x") for i in range(3)])  # one revision: one watch poll
        batch = next(stream)
        assert [(d.type, d.key) for d in batch] == [("ADDED", f"{ns}t{i}") for i in range(3)]
        assert sum(len(b) for b in pages) == 26
    finally:
        stream.close()


def test_keys_only_deltas_read_and_decode_no_value(store: Store, ns: str) -> None:
    store.put(ns + "a", b"1")
    counting = CountingStore(store)
    r: Reflector[None] = Reflector(counting, ns, keys_only=True)  # type: ignore[arg-type]
    stream = r.events()
    try:
        first = [next(stream) for _ in range(2)]
        assert [(d.type, d.key, d.obj) for d in first] == [("ADDED", ns + "a", None), ("SYNC", "", None)]
        assert counting.ranges == [(ns, True)]
        store.put(ns + "b", b"2")
        store.delete(ns + "a")
        got = [next(stream) for _ in range(2)]
        assert [(d.type, d.key, d.obj) for d in got] == [("ADDED", ns + "b", None), ("DELETED", ns + "a", None)]
        assert counting.watch_prev_values == [False]
    finally:
        stream.close()


def test_without_lists_a_relist_reads_no_key_and_syncs_at_the_store_revision(store: Store, ns: str) -> None:
    store.put(ns + "old", b"1")
    start = store.current_revision()
    store.put(ns + "a", b"1")
    store.delete(ns + "old")  # never seen by this stream: handed out all the same
    store.put(ns + "b", b"1")
    store.compact(store.current_revision())  # the history after ``start`` is gone
    counting = CountingStore(store)
    r: Reflector[None] = Reflector(counting, ns, keys_only=True, lists=False)  # type: ignore[arg-type]
    stream = r.batches(resource_version=start)
    try:
        sync = next(stream)
        assert [(d.type, d.revision) for d in sync] == [("SYNC", store.current_revision())]
        assert counting.ranges == [] and r.relists == 1 and r.known == {}
        store.put(ns + "c", b"1")
        store.delete(ns + "a")  # listed by nobody: still a DELETED
        got = []
        while len(got) < 2:
            got += next(stream)
        assert [(d.type, d.key) for d in got] == [("ADDED", ns + "c"), ("DELETED", ns + "a")]
        assert counting.ranges == [] and r.known == {}
    finally:
        stream.close()


def test_a_relist_asked_by_the_consumer_syncs_again_after_the_backoff(store: Store, ns: str) -> None:
    errors: list[Exception] = []
    r: Reflector[None] = Reflector(store, ns, keys_only=True, lists=False, poll_interval=0.05,
                                   backoff=Backoff(initial=0.01, cap=0.05), on_unavailable=errors.append)
    stream = r.batches(resource_version=store.current_revision())
    try:
        store.put(ns + "a", b"1")
        assert [d.key for d in next(stream)] == [ns + "a"]
        r.relist()  # say: the read this batch needed failed
        rb = store.put(ns + "b", b"1")
        batch = next(stream)
        assert [d.type for d in batch] == ["SYNC"] and r.relists == 1 and len(errors) == 1
        if batch[0].revision < rb:  # not in what a read at the SYNC's revision sees: the watch brings it
            assert [d.key for d in next(stream)] == [ns + "b"]
    finally:
        stream.close()
