"""``file://``: copies on a local or shared filesystem — files and directories, or hard
links when the location asks for them (``file://?hardlink=true``) and both ends are on the
same filesystem. Files land under a temporary name and are renamed into place, so a reader
never sees half a file."""

from __future__ import annotations

import os
import shutil
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
        if not src.exists():
            raise ItemFailed(f"No such file or directory: {src}")
        if src.is_dir():
            if not item.recursive:
                raise ItemFailed(f"{src} is a directory, but slot {item.slot!r} is not recursive", permanent=True)
            return self._copy_tree(src, dst, link, progress)
        if item.recursive and not src.is_dir():
            raise ItemFailed(f"{src} is not a directory (slot {item.slot!r} is recursive)", permanent=True)
        dst.parent.mkdir(parents=True, exist_ok=True)
        self._copy_file(src, dst, link, progress)
        return 1

    @staticmethod
    def _copy_file(src: Path, dst: Path, link: bool, progress: Callable[[int], None]) -> None:
        tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            if link and os.stat(src).st_dev == os.stat(dst.parent).st_dev:
                os.link(src, tmp)
            else:
                shutil.copy2(src, tmp)
            os.replace(tmp, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        progress(dst.stat().st_size)

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
                    self._copy_file(s, target / n, link, progress)
                files += 1
        return files
