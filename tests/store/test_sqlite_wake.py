"""Wake-ups across processes for SQLite watchers (store/_wake.py): a writer wakes every other
watcher of the file after its commit instead of each polling SQLite every millisecond; the
FIFO of a watcher that is gone is removed; and a watch still sees every write."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

from store import open_store
from store._wake import Listener, Notifier, wake_dir
from tests._support import poll_until


def test_a_listener_is_woken_by_another_store_objects_notifier(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    listener = Listener(db)
    try:
        assert not listener.wait(0)
        Notifier(db).notify()
        assert listener.wait(60)
        assert not listener.wait(0)  # drained: one wake-up per round of writes
    finally:
        listener.close()
    assert os.listdir(wake_dir(db)) == []


def test_the_wake_directory_and_fifos_are_private(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    listener = Listener(db)
    try:
        assert stat.S_IMODE(os.stat(wake_dir(db)).st_mode) & 0o077 == 0
        assert stat.S_IMODE(os.stat(listener.path).st_mode) & 0o077 == 0
    finally:
        listener.close()


def test_a_fifo_nobody_reads_is_removed_by_the_next_writer(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    os.makedirs(wake_dir(db), mode=0o700)
    stale = os.path.join(wake_dir(db), "12345-0-dead")
    os.mkfifo(stale, 0o600)  # as a killed process leaves it
    Notifier(db).notify()
    assert not os.path.exists(stale)


def test_a_watch_sees_a_write_by_another_process_and_its_fifo_goes_when_it_is_killed(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/s.db"
    store = open_store(url)
    try:
        w = store.watch("/k/")
        code = f"from store import open_store; s = open_store({url!r}); s.put('/k/a', b'1'); s.close()"
        subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
        events = []
        poll_until(lambda: bool(events.extend(w.poll(1)) or events), 60, "the other process's write")
        assert events[0].kv.key == "/k/a"
        w.close()
        # a watcher process killed outright leaves its FIFO; the next writer removes it
        watcher = subprocess.Popen([sys.executable, "-c", f"from store import open_store; import time; "
                                    f"s = open_store({url!r}); s.watch('/k/'); print('ok', flush=True); "
                                    "time.sleep(600)"], stdout=subprocess.PIPE)
        assert watcher.stdout is not None and watcher.stdout.readline().strip() == b"ok"
        theirs = [n for n in os.listdir(wake_dir(str(tmp_path / "s.db"))) if n.startswith(f"{watcher.pid}-")]
        assert len(theirs) == 1
        watcher.send_signal(signal.SIGKILL)
        watcher.wait(60)
        store.put("/k/b", b"2")
        assert not os.path.exists(os.path.join(wake_dir(str(tmp_path / "s.db")), theirs[0]))
    finally:
        store.close()


def test_a_listener_made_right_after_a_writers_listing_is_woken_too(tmp_path: Path) -> None:
    """Directory times move in clock ticks: a FIFO renamed in within the tick of the writer's
    last listing must not be missed (the writer lists a recently changed directory again)."""
    db = str(tmp_path / "s.db")
    first = Listener(db)
    notifier = Notifier(db)
    try:
        notifier.notify()
        assert first.wait(60)
        listed = os.stat(wake_dir(db))
        second = Listener(db)
        # as on a kernel whose directory times did not move within this clock tick
        os.utime(wake_dir(db), ns=(listed.st_atime_ns, listed.st_mtime_ns))
        try:
            notifier.notify()
            assert second.wait(60) and first.wait(60)
        finally:
            second.close()
    finally:
        first.close()
        notifier.close()


def test_a_store_not_woken_by_its_own_writes_still_delivers_them_in_order(tmp_path: Path) -> None:
    # The node agent's setting: its own commits do not poke its poller; they are caught up
    # with the next other writer's wake-up or the fallback poll, in revision order.
    url = f"sqlite://{tmp_path}/s.db"
    store, other = open_store(url), open_store(url)
    try:
        store.wake_own_writes = False  # type: ignore[attr-defined]
        w = store.watch("/k/")
        store.put("/k/own-1", b"1")
        other.put("/k/other", b"2")
        store.put("/k/own-2", b"3")
        events: list = []
        poll_until(lambda: bool(events.extend(w.poll(1))) or len(events) >= 3, 60, "all three writes")
        assert [e.kv.key for e in events] == ["/k/own-1", "/k/other", "/k/own-2"]
        assert [e.kv.mod_revision for e in events] == sorted(e.kv.mod_revision for e in events)
    finally:
        other.close()
        store.close()
