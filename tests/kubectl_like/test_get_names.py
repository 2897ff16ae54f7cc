"""get -o name from index keys alone: no object is read or decoded when the index decides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from apis import Registry

from .conftest import Site
from .test_get import jobs_site, seed_jobs, t  # noqa: F401  (the seeded site fixture)


@pytest.fixture
def no_object_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every read of whole objects through the registry (get_many, list)."""
    reads: list[str] = []
    for name in ("get_many", "list"):
        real = getattr(Registry, name)

        def reading(self: Registry, *a: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
            reads.append(_name)
            return _real(self, *a, **kw)

        monkeypatch.setattr(Registry, name, reading)
    return reads


def test_names_by_label_and_state_read_no_object_and_come_in_name_order(
        jobs_site: Site, no_object_reads: list[str]) -> None:  # noqa: F811
    r = jobs_site.run("get", "jobs", "-l", "experiment=foo,system=H2O", "--state", "RUNNING", "-o", "name")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "job.balsam.io/test-5\n"
    r = jobs_site.run("get", "jobs", "-l", "experiment=foo", "-o", "name")
    assert [ln.split("/", 1)[1] for ln in r.stdout.splitlines()] == t(0, 1, 2, 3, 4, 5)
    r = jobs_site.run("get", "jobs", "--state", "FAILED", "--tag", "system=D2O", "-o", "name")
    assert r.stdout.splitlines() == ["job.balsam.io/test-0"]
    assert no_object_reads == []


def test_names_when_nothing_matches_say_so_without_reading_objects(
        jobs_site: Site, no_object_reads: list[str]) -> None:  # noqa: F811
    r = jobs_site.run("get", "jobs", "-l", "experiment=foo", "--state", "JOB_FINISHED", "-o", "name")
    assert r.exit_code == 0 and r.stdout == ""
    assert r.stderr == f"No resources found in {jobs_site.namespace} namespace.\n"
    assert no_object_reads == []


def test_names_with_a_filter_the_index_cannot_decide_read_the_objects(
        jobs_site: Site, no_object_reads: list[str]) -> None:  # noqa: F811
    r = jobs_site.run("get", "jobs", "-l", "experiment=foo,system!=H2O", "-o", "name")
    assert sorted(ln.split("/", 1)[1] for ln in r.stdout.splitlines()) == t(0, 2, 4)
    assert no_object_reads  # != is a predicate on the candidates: they are read


def test_names_bad_selector_is_one_error_line(jobs_site: Site, tmp_path: Path) -> None:  # noqa: F811
    r = jobs_site.run("get", "jobs", "-l", "experiment=", "--state", "NOPE", "-o", "name")
    assert r.exit_code != 0 and r.stdout == ""
    assert r.stderr.startswith("error: ") and len(r.stderr.splitlines()) == 1
