"""``file://``: copies on a local or shared filesystem — files and directories, or hard
links when the location asks for them (``file://?hardlink=true``) and both ends are on the
same filesystem. Files land under a temporary name and are renamed into place, so a reader
never sees half a file."""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from apis import TransferItem, TransferTask

from .base import ItemFailed, LocalProvider

CHUNK = 1 << 20


def wants_hardlink(location: str) -> bool:
    q = parse_qs(urlsplit(location).query)
    return any(v.lower() in ("1", "true", "yes") for v in q.get("hardlink", []))


class FileProvider(LocalProvider):
    name = "file"

    def transfer_item(self, task: TransferTask, item: TransferItem, progress: Callable[[int], None]) -> int:
        src, dst = Path(item.source), Path(item.destination)
        link = wants_hardlink(task.spec.location)
        try:
            st = os.stat(src)
        except FileNotFoundError:
            raise ItemFailed(f"No such file or directory: {src}") from None
        if stat.S_ISDIR(st.st_mode):
            if not item.recursive:
                raise ItemFailed(f"{src} is a directory, but slot {item.slot!r} is not recursive", permanent=True)
            return self._copy_tree(src, dst, link, progress)
        if item.recursive:
            raise ItemFailed(f"{src} is not a directory (slot {item.slot!r} is recursive)", permanent=True)
        os.makedirs(dst.parent, exist_ok=True)
        self._copy_file(src, dst, link and st.st_dev == os.stat(dst.parent).st_dev)
        progress(st.st_size)
        return 1

    @staticmethod
    def _copy_file(src: Path, dst: Path, link: bool) -> None:
        """``src`` to ``dst`` under a temporary name, renamed into place: a hard link when
        ``link``, else a copy of the data and permission bits (``shutil.copy``)."""
        tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            if link:
                os.link(src, tmp)
            else:
                shutil.copy(src, tmp)
            os.replace(tmp, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _copy_tree(self, src: Path, dst: Path, link: bool, progress: Callable[[int], None]) -> int:
        files = 0
        for root, dirs, names in os.walk(src):
            rel = Path(root).relative_to(src)
            target = dst / rel
            target.mkdir(parents=True, exist_ok=True)
            for d in dirs:
                (target / d).mkdir(exist_ok=True)
            for n in names:
                s = Path(root) / n
                if s.is_symlink():
                    t = target / n
                    t.unlink(missing_ok=True)
                    os.symlink(os.readlink(s), t)
                else:
                    size = s.stat().st_size
                    self._copy_file(s, target / n, link and os.stat(s).st_dev == os.stat(target).st_dev)
                    progress(size)
                files += 1
        return files
