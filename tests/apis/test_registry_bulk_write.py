"""Big writes through Registry.write: one admission compare per referenced key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import store as st
from apis import App, Invalid, Job
from apis._registry import Registry


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
