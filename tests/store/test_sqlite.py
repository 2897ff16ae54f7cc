"""What only the SQLite backend has: a file, several processes on it, its log and compaction."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from store import Compacted, LeaseNotFound, Put, Unavailable, open_store
from store._sqlite import SQLiteStore
from tests._deadline import DEADLINE

from ._util import collect


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path}/store.db"


@pytest.fixture
def s(url: str) -> Iterator[SQLiteStore]:
    st = open_store(url)
    assert isinstance(st, SQLiteStore)
    yield st
    st.close()


def test_open_store_picks_sqlite_from_the_url(s: SQLiteStore, url: str) -> None:
    assert s.url == url
    assert s.current_revision() == 1  # as etcd: an empty store is at revision 1


def test_missing_directory_is_unavailable_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(Unavailable) as err:
        open_store(f"sqlite://{tmp_path}/no/such/dir/store.db")
    assert "does not exist" in str(err.value) and "\n" not in str(err.value)


def test_unopenable_file_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(Unavailable):
        open_store(f"sqlite://{tmp_path}/dir.db")


def test_data_and_revision_survive_reopening(url: str) -> None:
    with open_store(url) as a:
        rev = a.put("/k", b"v")
    with open_store(url) as b:
        assert b.current_revision() == rev
        assert b.get("/k").value == b"v"  # type: ignore[union-attr]
        assert b.put("/k", b"w") == rev + 1


def test_two_stores_on_one_file_see_each_other(url: str) -> None:
    with open_store(url) as a, open_store(url) as b, b.watch("/") as w:
        rev = a.put("/x", b"1")
        assert b.get("/x").mod_revision == rev  # type: ignore[union-attr]
        assert [e.revision for e in collect(w, 1)] == [rev]


def test_one_txn_is_one_revision_in_the_log(s: SQLiteStore, url: str) -> None:
    before = s.current_revision()
    rev = s.txn([], [Put(f"/k{i}", b"v") for i in range(2000)]).revision
    assert rev == before + 1
    db = sqlite3.connect(url[len("sqlite://") :])
    revs = db.execute("SELECT DISTINCT id >> 24 FROM log").fetchall()
    db.close()
    assert revs == [(rev,)]


def test_expired_lease_is_reaped_when_the_store_is_opened(url: str) -> None:
    a = open_store(url)
    lease = a.lease_grant(0.3)
    a.put("/eph", b"x", lease=lease)
    rev = a.current_revision()
    a.close()  # like a process that stops before its lease expires: nobody reaps it
    time.sleep(0.5)  # past the lease's 0.3 s TTL: a wait on the clock that expiry is computed from, not a race
    with open_store(url) as b:
        assert b.get("/eph") is None
        with b.watch("/", start_revision=rev + 1) as w:
            (e,) = collect(w, 1)
        assert e.type == "DELETE" and e.prev is not None and e.prev.value == b"x"
        with pytest.raises(LeaseNotFound):
            b.lease_keepalive(lease)


def test_put_with_an_unknown_lease_raises_and_writes_nothing(s: SQLiteStore) -> None:
    rev = s.current_revision()
    with pytest.raises(LeaseNotFound):
        s.put("/k", b"v", lease=12345)
    assert s.get("/k") is None and s.current_revision() == rev


def test_compaction_keeps_what_later_events_need(s: SQLiteStore) -> None:
    r1 = s.put("/a", b"1")
    s.put("/b", b"1")
    r3 = s.put("/b", b"2")  # superseded before the compaction: goes
    s.compact(r3)
    rd = s.delete("/a")  # after the compaction, its prev (r1) is still there
    with s.watch("/", start_revision=r3 + 1) as w:
        (e,) = collect(w, 1)
    assert e.type == "DELETE" and e.revision == rd
    assert e.prev is not None and (e.prev.value, e.prev.mod_revision) == (b"1", r1)
    with pytest.raises(Compacted):
        s.watch("/", start_revision=r3)


def test_replay_fails_if_compaction_comes_before_it(s: SQLiteStore) -> None:
    r1 = s.put("/a", b"1")
    s.put("/a", b"2")
    rev = s.put("/a", b"3")
    with s.watch("/", start_revision=r1) as w:  # replays lazily, on the first poll
        s.compact(rev)
        with pytest.raises(Compacted) as err:
            w.poll(1)
    assert err.value.compact_revision == rev


def test_live_watch_fails_if_compaction_overtakes_it(url: str) -> None:
    """Another process compacts away events this store's poller had not read yet."""
    # its poller wakes only for its own writes (no wake-ups from other processes' commits)
    slow = SQLiteStore(url, poll_interval=3600, wake=False)
    try:
        with slow.watch("/") as w:
            # The poller has taken the watch in (it delivered our own write), then sleeps.
            slow.put("/warm", b"1")
            (warm,) = collect(w, 1, timeout=DEADLINE)
            assert warm.kv.key == "/warm"
            with open_store(url) as other:
                other.put("/a", b"1")
                rev = other.put("/a", b"2")
                other.compact(rev)
            slow.put("/b", b"1")  # wakes the poller
            with pytest.raises(Compacted) as err:
                collect(w, 1, timeout=DEADLINE)
            assert err.value.compact_revision == rev
    finally:
        slow.close()


def test_bulk_sanity_many_keys_in_one_txn(s: SQLiteStore) -> None:
    """A large txn (no timing): every key lands, once, at one revision, and a watch replays it."""
    n = 20_000
    res = s.txn([], [Put(f"/jobs/j{i:05d}", b"{}") for i in range(n)])
    assert s.count("/jobs/") == n
    assert len(s.get_many([f"/jobs/j{i:05d}" for i in range(0, n, 7)])) == len(range(0, n, 7))
    with s.watch("/jobs/", start_revision=res.revision) as w:
        events = collect(w, n)
    assert len(events) == n and {e.revision for e in events} == {res.revision}
    assert [e.kv.key for e in events] == [f"/jobs/j{i:05d}" for i in range(n)]


# --- options, file modes, auto-compaction, a full disk ----------------------------------


def test_synchronous_is_a_url_option(tmp_path: Path) -> None:
    full = open_store(f"sqlite://{tmp_path}/store.db?synchronous=full")
    normal = open_store(f"sqlite://{tmp_path}/store.db")
    try:
        assert isinstance(full, SQLiteStore) and isinstance(normal, SQLiteStore)
        full.put("/a", b"1")
        assert full._conn().execute("PRAGMA synchronous").fetchall() == [(2,)]  # FULL
        assert normal._conn().execute("PRAGMA synchronous").fetchall() == [(1,)]  # NORMAL
        assert normal.get("/a") is not None
    finally:
        full.close()
        normal.close()


@pytest.mark.parametrize("query, expect", [("sync=full", "unknown SQLite store option 'sync'"),
                                           ("synchronous=sometimes", "synchronous='sometimes'"),
                                           ("history=soon", "history='soon'")])
def test_bad_options_are_unavailable_with_one_line(tmp_path: Path, query: str, expect: str) -> None:
    with pytest.raises(Unavailable) as err:
        open_store(f"sqlite://{tmp_path}/store.db?{query}")
    assert expect in str(err.value) and "\n" not in str(err.value)


def test_the_store_files_are_private(s: SQLiteStore, tmp_path: Path) -> None:
    s.put("/secret", b"parameter")
    for name in ("store.db", "store.db-wal", "store.db-shm"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name


def test_auto_compaction_keeps_the_log_bounded_and_late_watches_relist(tmp_path: Path) -> None:
    s = open_store(f"sqlite://{tmp_path}/store.db?history=0.5")
    assert isinstance(s, SQLiteStore)
    try:
        first = s.put("/k", b"0")
        deadline = time.monotonic() + DEADLINE
        n = 0
        while s._revisions(s._conn())[1] < first:  # the poller compacts on its own
            assert time.monotonic() < deadline, "no auto-compaction within the deadline"
            n += 1
            s.put("/k", str(n).encode())
            time.sleep(0.01)
        with pytest.raises(Compacted):
            w = s.watch("/k", first)
            w.poll(1)
        rows = s._conn().execute("SELECT count(*) FROM log WHERE id < ?", ((first + 1) << 24,)).fetchall()[0][0]
        assert rows == 0  # the superseded row of revision `first` is gone
        assert s.get("/k") is not None
    finally:
        s.close()


def test_history_zero_never_compacts(tmp_path: Path) -> None:
    s = open_store(f"sqlite://{tmp_path}/store.db?history=0")
    assert isinstance(s, SQLiteStore)
    try:
        for i in range(5):
            s.put("/k", str(i).encode())
        s._auto_compact()
        assert s._revisions(s._conn())[1] == 0
    finally:
        s.close()


def _expire_a_lease(store: SQLiteStore, path: Path) -> None:
    lease = store.lease_grant(60)
    store.put("/leased", b"1", lease=lease)
    with sqlite3.connect(path) as raw:  # expired without waiting for it
        raw.execute("UPDATE lease SET expiry = 0 WHERE id = ?", (lease,))


@pytest.mark.parametrize("held_open", [True, False], ids=["store-in-use", "store-closed"])
def test_reads_work_on_a_full_disk(tmp_path: Path, held_open: bool) -> None:
    """Opening an existing store writes nothing: on a full disk another process still reads it
    (even with an expired lease to reap, even with no -wal/-shm to share); writes fail with
    Unavailable and work again once space returns."""
    import subprocess
    import sys

    from tests._fulldisk import fill, release, small_tmpfs

    with small_tmpfs(tmp_path / "disk") as disk:
        db = disk / "store.db"
        s = SQLiteStore(f"sqlite://{db}")
        for i in range(20):
            s.put(f"/k/{i}", b"x" * 1000)
        _expire_a_lease(s, db)
        if not held_open:
            s.close()
        filler = fill(disk)
        reader = ("import sys; from store import open_store; s = open_store(sys.argv[1]); "
                  "print(s.count('/k/'), s.get('/k/3') is not None)")
        out = subprocess.run([sys.executable, "-c", reader, f"sqlite://{db}"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[2], timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["20", "True"]
        assert out.stderr == ""
        if held_open:
            with pytest.raises(Unavailable, match="disk is full"):
                s.put("/k/new", b"x" * 100_000)
        release(filler)
        s = SQLiteStore(f"sqlite://{db}") if not held_open else s
        try:
            s.put("/k/after", b"1")
            assert s.count("/k/") == 21
        finally:
            s.close()


def test_leases_outlive_a_full_disk(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """While nothing can be written no holder can send a keepalive: when writes work again the
    store renews every lease (as etcd's new leader does) instead of reaping them all."""
    import logging

    from tests._fulldisk import fill, release, small_tmpfs

    caplog.set_level(logging.WARNING, logger="store._sqlite")
    with small_tmpfs(tmp_path / "disk") as disk:
        s = SQLiteStore(f"sqlite://{disk}/store.db")
        try:
            lease = s.lease_grant(1.0)
            s.put("/node/n1", b"alive", lease=lease)
            expiry = s._conn().execute("SELECT expiry FROM lease WHERE id = ?", (lease,)).fetchall()[0][0]
            filler = fill(disk)
            deadline = time.monotonic() + DEADLINE
            while "retrying every second" not in caplog.text:  # the poller met the full disk
                assert time.monotonic() < deadline, "the poller never tried to reap the expired lease"
                time.sleep(0.05)
            assert time.time() > expiry  # the lease expired during the outage
            release(filler)
            while "writable again" not in caplog.text:
                assert time.monotonic() < deadline + 60, "writes did not come back"
                time.sleep(0.05)
            assert s.get("/node/n1") is not None  # renewed, not reaped
            s.lease_keepalive(lease)  # and its holder can keep it
        finally:
            s.close()
