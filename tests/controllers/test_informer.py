from __future__ import annotations

import time

from apis import Job
from controllers import Informer
from tests._deadline import DEADLINE

from .conftest import make_job


def _eventually(fn, timeout=DEADLINE):
    deadline = time.monotonic() + timeout
    while not fn():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_informer_lists_then_sees_every_later_change_with_indexes(registry, app):
    registry.create(make_job("one"))
    inf = Informer(registry, Job, indexers={"children": lambda j: tuple(j.spec.parents)})
    seen: list[tuple[str, str]] = []
    inf.add_handler(lambda typ, old, new: seen.append((typ, (new or old).name)))
    inf.start()
    try:
        assert inf.get("one") is not None
        registry.create(make_job("two", ("one",)))
        _eventually(lambda: inf.get("two") is not None)
        assert [j.name for j in inf.by_index("children", "one")] == ["two"]
        registry.delete(Job, "two")
        _eventually(lambda: inf.get("two") is None)
        assert inf.by_index("children", "one") == []
        assert ("ADDED", "one") in seen and ("ADDED", "two") in seen and ("DELETED", "two") in seen
    finally:
        inf.stop()


def test_informer_relists_after_compaction_and_misses_nothing(registry, app):
    inf = Informer(registry, Job)
    inf.start()
    try:
        inf._stop.set()  # pause the watch loop while events pile up
        inf._thread.join(DEADLINE)
        seen_rev = inf.revision
        for i in range(5):
            registry.create(make_job(f"j{i}"))
        registry.delete(Job, "j0")
        registry.store.compact(registry.store.current_revision())
        # Resume from the last seen revision as the reflector would: the store says Compacted.
        import threading

        assert inf._reflector is not None
        inf._stop.clear()
        stream = inf._reflector.events(resource_version=seen_rev, stop=inf._stop)
        inf._thread = threading.Thread(target=inf._run, args=(stream,), daemon=True)
        inf._thread.start()
        _eventually(lambda: sorted(inf.names()) == ["j1", "j2", "j3", "j4"])
        assert inf.relists >= 1
    finally:
        inf.stop()
