"""Paths under a site's ``data/`` resolved without following symbolic links.

A job's workdir and its transfer slots' local paths are checked lexically when the job is
written (they must stay inside ``data/``), but a job's process may make a symlink: a parent
job that links ``data/run/child -> /home/someone`` would send its child's ``job.out`` (or a
stage-in's file) outside ``data/``. So at launch and at transfer time the path is walked
``openat``-style from ``data/``: each component is opened with ``O_NOFOLLOW | O_DIRECTORY``
relative to the previous one (made, private, when missing), and any symbolic link on the
way is refused with :class:`UnsafePath`. Links *inside* a workdir that the job itself reads
are its own business; only the path we write to or read from on its behalf is checked.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(ValueError):
    """A path that passes through a symbolic link, or leaves its root."""


def _components(root: Path, path: str | os.PathLike[str]) -> list[str]:
    rel = os.fspath(path)
    if os.path.isabs(rel):
        rel = os.path.relpath(rel, root)
    rel = posixpath.normpath(rel)
    if rel == ".":
        return []
    parts = rel.split("/")
    if parts[0] == ".." or "" in parts:
        raise UnsafePath(f'"{path}" leaves {root}')
    return parts


def open_dir_nofollow(root: Path, path: str | os.PathLike[str], create: bool = True) -> int:
    """A file descriptor of directory ``root/path`` reached without following any symbolic
    link below ``root`` (missing directories are made when ``create``); raises UnsafePath
    naming the link, FileNotFoundError when missing and not ``create``."""
    fd = os.open(root, _DIR_FLAGS)
    walked = ""
    try:
        for part in _components(root, path):
            walked = f"{walked}/{part}" if walked else part
            try:
                try:
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    # Made only when missing: an existing directory costs one open, not a
                    # failed mkdir too (the node agent walks every job's workdir twice).
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o777, dir_fd=fd)  # the umask makes it private
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    st = os.lstat(part, dir_fd=fd)
                    if stat.S_ISLNK(st.st_mode):
                        raise UnsafePath(
                            f'"{root}/{walked}" is a symbolic link (to "{os.readlink(part, dir_fd=fd)}"); '
                            f"paths under {root} are not followed through links"
                        ) from None
                    raise UnsafePath(f'"{root}/{walked}" is not a directory') from None
                raise
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def safe_dir(root: Path, path: str | os.PathLike[str], create: bool = True) -> Path:
    """``root/path`` after checking (and making) it as :func:`open_dir_nofollow` does."""
    os.close(open_dir_nofollow(root, path, create))
    return root.joinpath(*_components(root, path))


def check_file_nofollow(root: Path, path: str | os.PathLike[str]) -> Path:
    """``root/path`` for a file we are about to write or read: its directory reached without
    links (made when missing) and the file itself not a link. Returns the absolute path."""
    checked, fd = open_file_dir_nofollow(root, path)
    os.close(fd)
    return checked


def open_file_dir_nofollow(root: Path, path: str | os.PathLike[str]) -> tuple[Path, int]:
    """:func:`check_file_nofollow`, keeping the directory it reached open: ``(root/path, fd of
    its directory)`` — the caller closes the fd (the node agent starts a job in it, so the
    workdir is walked once per launch, not twice)."""
    parts = _components(root, path)
    if not parts:
        raise UnsafePath(f'"{path}" is {root} itself, not a file under it')
    fd = open_dir_nofollow(root, "/".join(parts[:-1]) or ".", create=True)
    try:
        try:
            st = os.lstat(parts[-1], dir_fd=fd)
        except FileNotFoundError:
            pass
        else:
            if stat.S_ISLNK(st.st_mode):
                raise UnsafePath(
                    f'"{root.joinpath(*parts)}" is a symbolic link (to "{os.readlink(parts[-1], dir_fd=fd)}"); '
                    f"paths under {root} are not followed through links"
                )
    except BaseException:
        os.close(fd)
        raise
    return root.joinpath(*parts), fd


SETTINGS_FILE = "settings.yml"


def data_root_of(path: str | os.PathLike[str]) -> Path | None:
    """The ``data/`` directory of the site that ``path`` (absolute, lexical) lies in: the
    nearest ancestor named ``data`` beside a ``settings.yml``; None outside any site."""
    p = Path(os.path.normpath(os.fspath(path)))
    for a in p.parents:
        if a.name == "data" and (a.parent / SETTINGS_FILE).is_file():
            return a
    return None


def check_local_transfer_path(path: str | os.PathLike[str]) -> None:
    """A transfer's local side (a stage-in's destination, a stage-out's source) reached from
    its site's ``data/`` without a symbolic link, the path itself included; UnsafePath if not.
    A path outside any site directory is not ours to judge and passes."""
    root = data_root_of(path)
    if root is not None:
        check_file_nofollow(root, os.path.relpath(os.path.normpath(os.fspath(path)), root))
