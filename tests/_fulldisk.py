"""A small tmpfs to fill: how tests make a real full disk (root only; CI runs as root)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from bench._chaos import fill, release  # one filler for the chaos bench and the tests
from tests._support import skip_or_fail

__all__ = ["fill", "release", "small_tmpfs"]


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

