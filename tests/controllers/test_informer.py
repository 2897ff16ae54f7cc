from __future__ import annotations

import time

from apis import Job
from controllers import Informer

from .conftest import make_job


def _eventually(fn, timeout=30.0):
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
    import store as st

    inf = Informer(registry, Job)
    inf.start()
    try:
        inf._stop.set()  # pause the watch loop while events pile up
        inf._thread.join(5)
        seen_rev = inf.revision
        for i in range(5):
            registry.create(make_job(f"j{i}"))
        registry.delete(Job, "j0")
        registry.store.compact(registry.store.current_revision())
        # Resume as a watch from the last seen revision would: the store says Compacted.
        prefix = "/registry/jobs/default/"
        try:
            inf._watch = registry.store.watch(prefix, seen_rev + 1)
        except st.Compacted as e:
            err = e

            class Raising:
                def poll(self, timeout=None):
                    raise err

                def close(self):
                    pass

            inf._watch = Raising()
        inf._stop.clear()
        import threading

        inf._thread = threading.Thread(target=inf._run, daemon=True)
        inf._thread.start()
        _eventually(lambda: sorted(inf.names()) == ["j1", "j2", "j3", "j4"])
        assert inf.relists >= 1
    finally:
        inf.stop()
