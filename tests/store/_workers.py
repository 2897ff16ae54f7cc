"""Code that the store suite runs in other processes (importable under spawn)."""

from __future__ import annotations

import time
from typing import Any

from store import Conflict, open_store


def cas_increment(url: str, key: str, n: int) -> int:
    """Increment the integer at ``key`` ``n`` times with get + CAS put; returns conflicts seen."""
    conflicts = 0
    with open_store(url) as s:
        for _ in range(n):
            while True:
                kv = s.get(key)
                assert kv is not None
                try:
                    s.put(key, str(int(kv.value) + 1).encode(), expect_revision=kv.mod_revision)
                    break
                except Conflict:
                    conflicts += 1
    return conflicts


def watch_and_timestamp(url: str, prefix: str, n: int, ready: Any, out: Any) -> None:
    """Watch ``prefix``; after ``ready`` is set, send (key, revision, receive time) of ``n`` events."""
    with open_store(url) as s, s.watch(prefix) as w:
        ready.set()
        got = 0
        deadline = time.monotonic() + 30
        while got < n and time.monotonic() < deadline:
            for e in w.poll(0.5):
                out.put((e.kv.key, e.revision, time.time()))
                got += 1
    out.put(None)
