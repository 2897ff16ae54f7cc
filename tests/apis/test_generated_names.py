"""Generated names: prefix + 10 base36 characters, made of a per-process stem and a counter so
that one process's names sort in the order it made them (a store's b-trees then take a bulk
create's keys as appends: docs/design.md, issue 13b)."""

from __future__ import annotations

import os
import re
import uuid

from apis import App, Job, _meta
from apis._meta import serial_suffix, uuid4_strs
from apis._registry import Registry
from store import open_store


def test_names_are_unique_and_sort_in_creation_order() -> None:
    names = [Job(app_id="hello", workdir=f"w/{i}").ensure_identity().name for i in range(3000)]
    assert len(set(names)) == len(names)
    assert names == sorted(names)  # 3000 > 36 * 36: the counter's carries keep the order
    assert all(re.fullmatch(r"hello-[0-9a-z]{10}", n) for n in names), names[:3]
    uids = {Job(app_id="hello", workdir="w").ensure_identity().metadata.uid for _ in range(100)}
    assert len(uids) == 100  # uids stay random


def test_a_bulk_create_names_its_jobs_in_order(tmp_path: object) -> None:
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    try:
        reg = Registry(store)
        reg.create(App.model_validate({"metadata": {"name": "hello"}, "spec": {"command": "/bin/true"}}))
        made = Job.objects.using(reg).bulk_create([Job(app_id="hello", workdir=f"w/{i}") for i in range(50)])
        names = [j.name for j in made]
        assert names == sorted(names) and len(set(names)) == 50
        assert [j.spec.workdir for j in made] == [f"w/{i}" for i in range(50)]
    finally:
        store.close()


def test_a_forked_child_draws_a_stem_of_its_own() -> None:
    serial_suffix()  # the parent has a stem
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next names, then out
        os.close(r)
        os.write(w, ",".join(serial_suffix() for _ in range(3)).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        child = f.read().split(",")
    os.waitpid(pid, 0)
    parent = [serial_suffix() for _ in range(3)]
    assert len(child) == 3 and child == sorted(child)
    assert child[0][:6] != parent[0][:6]  # another stem (equal with odds 1 in 2.2e9)
    assert not set(child) & set(parent)


def test_a_batch_of_suffixes_continues_the_sequence_across_a_new_stem() -> None:
    before = serial_suffix()
    batch = _meta.serial_suffixes(5)
    after = serial_suffix()
    assert [before, *batch, after] == sorted([before, *batch, after]) and len({before, *batch, after}) == 7
    _meta._serial[1] = _meta._SERIAL_SPAN - 2  # two names left on this stem
    crossing = _meta.serial_suffixes(4)
    assert [s[6:] for s in crossing] == ["zzzy", "zzzz", "0000", "0001"]
    assert crossing[0][:6] == crossing[1][:6] != crossing[2][:6] == crossing[3][:6]


def test_batch_uids_are_random_version_4_uuids() -> None:
    uids = uuid4_strs(500)
    assert len(set(uids)) == 500
    for u in uids:
        parsed = uuid.UUID(u)
        assert str(parsed) == u and parsed.version == 4 and parsed.variant == uuid.RFC_4122
