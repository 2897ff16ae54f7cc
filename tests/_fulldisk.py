"""A small tmpfs to fill: how tests make a real full disk (root only; CI runs as root)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests._support import skip_or_fail


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "4m", inodes: int = 2000) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` bytes and ``inodes`` inodes at ``path`` (made 0700) for the
    block; skip when not root (mount needs it), fail so in CI (which runs as root)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        skip_or_fail("a full-disk test mounts a tmpfs, which needs root (CI runs as root)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},nr_inodes={inodes},mode=0700", "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory``: every byte and every inode (so that not even an
    empty file or directory can be made). Returns what to remove to give the space back."""
    filler = directory / ".filler"
    filler.mkdir()
    with open(filler / "bytes", "wb", buffering=0) as f:
        for chunk in (65536, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError:
                pass
    n = 0
    try:
        while True:
            (filler / str(n)).touch()
            n += 1
    except OSError:
        pass
    return filler


def release(filler: Path) -> None:
    """Give the bytes back first, then the inodes: nothing can start in between on a disk that
    has inodes but no bytes."""
    (filler / "bytes").unlink()
    shutil.rmtree(filler)
