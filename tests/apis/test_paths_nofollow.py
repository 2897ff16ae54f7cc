"""Walking a path under data/ without links (apis/_paths.py): existing directories are only
opened, missing ones made, and a link anywhere on the way — dangling or not — is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from apis._paths import UnsafePath, check_file_nofollow, open_dir_nofollow


def test_missing_directories_are_made_and_existing_ones_kept(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "keep").write_text("x")
    fd = open_dir_nofollow(tmp_path, "a/b/c")
    try:
        assert os.path.samestat(os.fstat(fd), os.stat(tmp_path / "a" / "b" / "c"))
    finally:
        os.close(fd)
    assert (tmp_path / "a" / "keep").read_text() == "x"
    assert check_file_nofollow(tmp_path, "a/b/c/job.out") == tmp_path / "a" / "b" / "c" / "job.out"


def test_a_missing_directory_is_not_made_without_create(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_dir_nofollow(tmp_path, "nope/deeper", create=False)
    assert not (tmp_path / "nope").exists()


@pytest.mark.parametrize("target", ["outside", "dangling"])
def test_a_link_on_the_way_is_refused_and_nothing_is_made_through_it(tmp_path: Path, target: str) -> None:
    root, outside = tmp_path / "data", tmp_path / "outside"
    root.mkdir()
    if target == "outside":
        outside.mkdir()
    (root / "w").symlink_to(outside)
    with pytest.raises(UnsafePath, match="symbolic link"):
        open_dir_nofollow(root, "w/child")
    with pytest.raises(UnsafePath, match="symbolic link"):
        check_file_nofollow(root, "w/child/job.out")
    assert not outside.exists() or list(outside.iterdir()) == []


def test_a_file_in_the_way_is_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(UnsafePath, match="not a directory"):
        open_dir_nofollow(tmp_path, "f/child")
