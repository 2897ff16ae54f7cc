"""Helpers of the store suite."""

from __future__ import annotations

import time

from store import Event, Watch
from tests._deadline import DEADLINE


def collect(watch: Watch, n: int, timeout: float = DEADLINE) -> list[Event]:
    """The next ``n`` events of ``watch`` (fewer only if ``timeout`` runs out)."""
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    while len(events) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        events.extend(watch.poll(min(left, 0.5)))
    return events


def wait_until(predicate: object, timeout: float = DEADLINE, interval: float = 0.02) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` runs out."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
