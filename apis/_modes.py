"""Who may read a site: private by default, group-shared on request.

A site holds every job's parameters (``store.db``), outputs (``job.out``) and credentials
(token files), so nothing of it is readable by other users unless the site says so:

* ``sharing: private`` (the default): directories 0700, files 0600, and every process we
  start (controller manager, node agents, ``up``, hooks, jobs) runs under umask 077.
* ``sharing: group`` (settings.yml, or ``balsamctl init --sharing group``): for a team that
  shares one site through a Unix group: directories 2750 (setgid, so what is made inside
  keeps the site's group), files 0640, umask 027, and everything in the site is given the
  site directory's group. Group members read; only the owner writes (the store is written
  by the owner's processes).

``balsamctl init`` on an existing site applies these modes to everything in it (a site made
before, or whose sharing changed); files keep their owner-execute bit.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

SHARING = ("private", "group")


@dataclass(frozen=True)
class Modes:
    directory: int
    file: int
    umask: int
    group: bool


_MODES = {
    "private": Modes(directory=0o700, file=0o600, umask=0o077, group=False),
    "group": Modes(directory=0o2750, file=0o640, umask=0o027, group=True),
}


def modes_for(sharing: str) -> Modes:
    try:
        return _MODES[sharing]
    except KeyError:
        raise ValueError(f"sharing: {sharing!r} is not one of {', '.join(SHARING)}") from None


def apply_umask(sharing: str = "private") -> None:
    """The umask of a process that writes into a site (it is inherited by what it starts)."""
    os.umask(modes_for(sharing).umask)


def fix_modes(site: Path, sharing: str = "private") -> int:
    """Give every directory and file under ``site`` (itself included) the modes of ``sharing``,
    without following symbolic links; returns how many changed."""
    modes = modes_for(sharing)
    gid = os.lstat(site).st_gid if modes.group else -1
    changed = 0

    def fix(path: str, st: os.stat_result, is_dir: bool) -> None:
        nonlocal changed
        if is_dir:
            want = modes.directory
        else:
            execute = 0o100 | (0o010 if modes.group else 0) if st.st_mode & 0o100 else 0
            want = modes.file | execute
        if stat.S_IMODE(st.st_mode) != want:
            os.chmod(path, want, follow_symlinks=False)
            changed += 1
        if modes.group and st.st_gid != gid:
            os.chown(path, -1, gid, follow_symlinks=False)
            if is_dir:  # chown clears setgid on some systems: set it again
                os.chmod(path, want, follow_symlinks=False)
            changed += 1

    fix(str(site), os.lstat(site), True)
    for root, dirs, files in os.walk(site, followlinks=False):
        for name in dirs + files:
            p = os.path.join(root, name)
            try:
                st = os.lstat(p)
            except FileNotFoundError:  # gone meanwhile (a watcher's FIFO in store.db.wake/)
                continue
            if stat.S_ISLNK(st.st_mode) or not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                continue  # links, sockets, fifos: left alone
            fix(p, st, stat.S_ISDIR(st.st_mode))
    return changed


def private_open(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> int:
    """``os.open`` with mode 0660, cut by the umask (0600 under a private site's, 0640 under a
    group site's): a file we make is never world-readable, whatever umask we were started with."""
    return os.open(path, flags, 0o660 & ~0o007)
