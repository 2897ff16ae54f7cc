"""Big writes through Registry.write: one admission compare per referenced key, and the
cyclic GC paused only for the duration of the write (see apis/_registry.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

import store as st
from apis import App, Invalid, Job
from apis._registry import GC_PAUSE_MIN_OBJECTS, Registry


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
    real = reg.store.txn

    def spy(compares, success, failure=()):  # type: ignore[no-untyped-def]
        seen.append(list(compares))
        return real(compares, success, failure)

    monkeypatch.setattr(reg.store, "txn", spy)
    created = Job.objects.using(reg).bulk_create(_jobs(50, parents=[parent.id]))
    assert len(created) == 50
    refs = [c for c in seen[0] if c.target == "create" and c.op == ">"]
    assert sorted(c.key for c in refs) == ["/registry/apps/default/hello", f"/registry/jobs/default/{parent.id}"]


def test_missing_app_still_refused_for_whole_batch(reg: Registry) -> None:
    with pytest.raises(Invalid, match="spec.app"):
        Job.objects.using(reg).bulk_create([*_jobs(3), *_jobs(2, app="nope")])
    assert Job.objects.using(reg).count() == 0


def test_gc_paused_only_during_big_writes(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    states: list[bool] = []
    real = reg.store.txn

    def spy(compares, success, failure=()):  # type: ignore[no-untyped-def]
        states.append(gc.isenabled())
        return real(compares, success, failure)

    monkeypatch.setattr(reg.store, "txn", spy)
    assert gc.isenabled()
    Job.objects.using(reg).bulk_create(_jobs(GC_PAUSE_MIN_OBJECTS))
    Job.objects.using(reg).bulk_create(_jobs(3))
    assert states == [False, True]
    assert gc.isenabled()
    with pytest.raises(Invalid):  # a failed big write turns the collector back on too
        Job.objects.using(reg).bulk_create(_jobs(GC_PAUSE_MIN_OBJECTS, app="nope"))
    assert gc.isenabled()


def test_gc_left_off_if_caller_turned_it_off(reg: Registry) -> None:
    gc.disable()
    try:
        Job.objects.using(reg).bulk_create(_jobs(GC_PAUSE_MIN_OBJECTS))
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_gc_paused_while_a_big_read_decodes(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    names = [j.id for j in Job.objects.using(reg).bulk_create(_jobs(GC_PAUSE_MIN_OBJECTS))]
    states: list[bool] = []
    real = reg.store.get_many

    def spy(keys):  # type: ignore[no-untyped-def]
        states.append(gc.isenabled())
        return real(keys)

    monkeypatch.setattr(reg.store, "get_many", spy)
    assert len(reg.get_many(Job, names)) == len(names)
    assert len(reg.get_many(Job, names[:3])) == 3
    assert states == [False, True] and gc.isenabled()
