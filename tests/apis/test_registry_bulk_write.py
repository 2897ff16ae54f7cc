"""Big writes through Registry.write: one admission compare per referenced key, and the
cyclic GC paused only for the duration of the write (see apis/_registry.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

import store as st
from apis import App, Invalid, Job
from apis._registry import Registry, index_keys


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[Registry]:
    s = st.open_store(f"sqlite:///{tmp_path / 'store.db'}")
    r = Registry(s)
    r.create(App(metadata={"name": "hello"}, spec={"command": "/bin/true"}))
    yield r
    s.close()


def _jobs(n: int, app: str = "hello", parents: list[str] | None = None) -> list[Job]:
    return [Job(app_id=app, workdir=f"w/{i}", parent_ids=parents or []) for i in range(n)]


def test_one_admission_compare_per_referenced_key(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    parent = Job.objects.using(reg).bulk_create(_jobs(1))[0]
    seen: list[list[st.Compare]] = []
    real = reg.store.txn_with_entries

    def spy(compares, success, entries, lease=0):  # type: ignore[no-untyped-def]
        seen.append(list(compares))
        return real(compares, success, entries, lease)

    monkeypatch.setattr(reg.store, "txn_with_entries", spy)
    created = Job.objects.using(reg).bulk_create(_jobs(50, parents=[parent.id]))
    assert len(created) == 50
    refs = [c for c in seen[0] if c.target == "create" and c.op == ">"]
    assert sorted(c.key for c in refs) == ["/registry/apps/default/hello", f"/registry/jobs/default/{parent.id}"]


def test_missing_app_still_refused_for_whole_batch(reg: Registry) -> None:
    with pytest.raises(Invalid, match="spec.app"):
        Job.objects.using(reg).bulk_create([*_jobs(3), *_jobs(2, app="nope")])
    assert Job.objects.using(reg).count() == 0


BIG = 1000  # objects: what the old registry paused the collector for


def test_a_big_write_and_a_big_read_leave_the_collector_alone(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """GC tuning belongs to process entry points: a user's bulk_create or Job.objects.filter
    must never turn the collector off (not even for the length of the call)."""
    threshold = gc.get_threshold()
    states: list[bool] = []
    for method in ("txn", "txn_with_entries", "get_many", "range"):
        real = getattr(reg.store, method)

        def spy(*a, _real=real, **kw):  # type: ignore[no-untyped-def]
            states.append(gc.isenabled())
            return _real(*a, **kw)

        monkeypatch.setattr(reg.store, method, spy)
    assert gc.isenabled()
    names = [j.id for j in Job.objects.using(reg).bulk_create(_jobs(BIG))]
    assert len(reg.get_many(Job, names)) == BIG
    assert len(list(Job.objects.using(reg).filter(state="CREATED"))) == BIG
    assert len(list(Job.objects.using(reg).all())) == BIG
    assert states and all(states)
    assert gc.isenabled() and gc.get_threshold() == threshold


def test_index_keys_of_a_batch_are_those_of_each_job(reg: Registry) -> None:
    """The batch path groups index keys by value (each quoted once): the keys written are
    still exactly ``index_keys`` of each job, names given out of order and values that need
    quoting included."""
    jobs = [Job(name=f"j{n}", app_id="hello", workdir=f"w/{i % 3}", tags={"example.com/x": f"v.{i % 2}", "run": str(i)})
            for i, n in enumerate([5, 1, 9, 3, 7, 2])]
    created = Job.objects.using(reg).bulk_create(jobs)
    want = set().union(*(index_keys(j) for j in created))
    got = {kv.key for kv in reg.store.range("/index/jobs/", keys_only=True).kvs}
    assert got == want
    assert Job.objects.using(reg).filter(selector="example.com/x=v.1").count() == 3


def test_jobs_with_other_references_each_get_their_compares(reg: Registry) -> None:
    """References are asked once per distinct references_key: jobs of one batch that name
    another parent or a missing app are still each checked."""
    a, b = Job.objects.using(reg).bulk_create(_jobs(2))
    created = Job.objects.using(reg).bulk_create([*_jobs(2, parents=[a.id]), *_jobs(2, parents=[b.id])])
    assert len(created) == 4
    with pytest.raises(Invalid, match='spec.parents: Not found: "gone"'):
        Job.objects.using(reg).bulk_create([*_jobs(2, parents=[a.id]), *_jobs(1, parents=["gone"])])
    assert Job.objects.using(reg).count() == 6
