"""``http://`` / ``https://`` stage-in with httpx: each item is streamed to a temporary file
beside its destination and renamed into place. 5xx answers and connection errors are retried
with exponential backoff (in this provider's worker thread, never the reconciler's); a 4xx is
a permanent failure whose message carries the status. Stage-out over HTTP is refused when the
Job is created (``apis._transfers``)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

from apis import TransferItem, TransferTask

from .base import ItemFailed, LocalProvider


def item_url(location: str, path: str) -> str:
    return location.rstrip("/") + "/" + path.lstrip("/")


class HttpProvider(LocalProvider):
    name = "http"

    def __init__(self, workers: int = 4, retries: int = 4, backoff: float = 0.5, timeout: float = 30.0) -> None:
        super().__init__(workers)
        self.retries = retries
        self.backoff = backoff
        self._client = httpx.Client(timeout=timeout, follow_redirects=True)

    def transfer_item(self, task: TransferTask, item: TransferItem, progress: Callable[[int], None]) -> int:
        if task.spec.direction != "in":
            raise ItemFailed("HTTP locations are for stage-in only", permanent=True)
        url = item_url(task.spec.location, item.source)
        dst = Path(item.destination)
        dst.parent.mkdir(parents=True, exist_ok=True)
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                self._download(url, dst, progress)
                return 1
            except _Retryable as e:
                last = str(e)
            except httpx.TransportError as e:  # connection refused/reset, timeouts
                last = f"{type(e).__name__}: {e or 'connection failed'} ({url})"
        raise ItemFailed(f"{last} (gave up after {self.retries + 1} tries)")

    def _download(self, url: str, dst: Path, progress: Callable[[int], None]) -> None:
        tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.part")
        written = 0
        try:
            with self._client.stream("GET", url) as r:
                if r.status_code >= 500:
                    raise _Retryable(f"HTTP {r.status_code} {r.reason_phrase} ({url})")
                if r.status_code >= 400:
                    raise ItemFailed(f"HTTP {r.status_code} {r.reason_phrase} ({url})", permanent=True)
                with open(tmp, "wb") as f:
                    for chunk in r.iter_bytes(1 << 20):
                        f.write(chunk)
                        written += len(chunk)
                        progress(len(chunk))
            os.replace(tmp, dst)
        except BaseException:
            progress(-written)  # this try's bytes do not count
            raise
        finally:
            tmp.unlink(missing_ok=True)

    def close(self) -> None:
        super().close()
        self._client.close()


class _Retryable(Exception):
    pass
