"""Workdir containment at its edges: a Job's workdir is a relative path that stays inside the
site's ``data/`` directory (seed: "relative to the Site's data/ path"). The check is lexical
(``posixpath.normpath``), so a path that leaves ``data/`` and comes back is refused too."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

import store as st
from apis import App, Job, Registry
from apis._kinds import validate_workdir

INSIDE = "must stay inside the site's data/ directory"
RELATIVE = "must be relative to the site's data/ directory"

REFUSED = [
    ("..", INSIDE),  # the site directory itself
    ("a/../..", INSIDE),  # in and back out: the site directory again
    ("../", INSIDE),
    ("./..", INSIDE),
    ("a/b/../../..", INSIDE),
    ("../data/x", INSIDE),  # leaves data/ even though it would come back
    ("../../etc", INSIDE),
    ("a/\x00b", INSIDE),
    ("/", RELATIVE),
    ("/abs/path", RELATIVE),
    ("//twice", RELATIVE),
    ("", "spec.workdir: Required value"),
]

#: Accepted workdirs and what is stored (normalised).
ACCEPTED = [
    (".", "."),  # data/ itself is inside data/
    ("a/..", "."),
    ("./x", "x"),
    ("x//y/", "x/y"),
    ("a/b/../c", "a/c"),
    ("..foo", "..foo"),  # a name that starts with two dots is not the parent
    ("a/..b", "a/..b"),
    ("a/b..", "a/b.."),
    ("test/1", "test/1"),
]


@pytest.mark.parametrize("workdir, message", REFUSED, ids=[repr(w) for w, _ in REFUSED])
def test_a_workdir_outside_data_is_refused(workdir: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        validate_workdir(workdir)
    assert message in str(err.value)
    with pytest.raises(ValidationError, match="spec.workdir"):
        Job(metadata={"name": "j"}, spec={"app": "a", "workdir": workdir})


@pytest.mark.parametrize("workdir, stored", ACCEPTED, ids=[repr(w) for w, _ in ACCEPTED])
def test_a_workdir_inside_data_is_accepted_normalised(workdir: str, stored: str, tmp_path: Path) -> None:
    assert validate_workdir(workdir) == stored
    job = Job(metadata={"name": "j"}, spec={"app": "a", "workdir": workdir})
    assert job.spec.workdir == stored
    data = (tmp_path / "site" / "data").resolve()
    resolved = (data / job.spec.workdir).resolve()
    assert resolved == data or data in resolved.parents


def test_the_store_keeps_nothing_of_a_refused_workdir(tmp_path: Path) -> None:
    s = st.open_store(f"sqlite://{tmp_path}/store.db")
    try:
        reg = Registry(s)
        reg.create(App(metadata={"name": "a"}, spec={"command": "true"}))
        rev = s.current_revision()
        for workdir, _ in REFUSED:
            with pytest.raises(ValidationError):
                reg.create(Job(metadata={"name": "j"}, spec={"app": "a", "workdir": workdir}))
        assert reg.count(Job) == 0 and s.current_revision() == rev
    finally:
        s.close()
