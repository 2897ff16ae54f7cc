"""``globus://<endpoint-uuid>``: batched Globus transfers with globus-sdk 4.

One TransferTask becomes one Globus task (``TransferData`` with an item per job slot,
``recursive`` for directory slots, ``verify_checksum``); ``poll`` asks ``get_task`` for each
active task. Sign-in problems (no tokens, an expired sign-in, a collection that needs
``data_access`` consent) become :class:`AuthRequired` whose message is the exact
``balsamctl login globus ...`` command to run (Balsam #304, #116) — never a stack trace.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from apis import TransferTask

from .base import AuthRequired, ProviderStatus, TransferProvider, TransferProviderError
from .globus_auth import data_access_from_scopes, login_command, transfer_client


class GlobusProvider(TransferProvider):
    name = "globus"
    poll_interval = 5.0  # Balsam polled Globus every 5 s too

    def __init__(self, site_path: str | os.PathLike[str],
                 client_factory: Callable[[], Any] | None = None) -> None:
        self.site_path = str(site_path)
        self._factory = client_factory or (lambda: transfer_client(self.site_path))
        self._client: Any = None
        self._lock = threading.Lock()

    def _tc(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._factory()
            return self._client

    def _translate(self, e: Exception) -> Exception:
        import globus_sdk

        if isinstance(e, AuthRequired):
            return e
        if isinstance(e, globus_sdk.GlobusAPIError):
            consent = e.info.consent_required
            if consent:
                collections = data_access_from_scopes(consent.required_scopes or [])
                what = ", ".join(collections) or "a collection"
                return AuthRequired(f"Globus needs your consent to access {what}: run "
                                    f"'{login_command(self.site_path, collections)}'", "ConsentRequired")
            if e.http_status == 401 or "AuthenticationFailed" in str(e.code):
                self._client = None  # tokens may have been replaced by a new login
                return AuthRequired(f"the Globus sign-in expired: run '{login_command(self.site_path)}'",
                                    "LoginExpired")
            return TransferProviderError(f"Globus {e.http_status} {e.code}: {e.message}")
        if isinstance(e, globus_sdk.token_storage.TokenValidationError) or type(e).__name__.endswith("TokenError"):
            self._client = None
            return AuthRequired(f"not signed in to Globus, or the sign-in expired: run "
                                f"'{login_command(self.site_path)}'", "LoginRequired")
        if isinstance(e, globus_sdk.GlobusError):
            return TransferProviderError(f"Globus: {type(e).__name__}: {e}")
        return e

    def submit(self, task: TransferTask, indices: Sequence[int]) -> str:
        import globus_sdk

        spec = task.spec
        remote = spec.location.partition("://")[2].strip("/")
        local = spec.local_endpoint
        if not local:
            raise TransferProviderError("the Site has no globusEndpointId (its own Globus collection)")
        src, dst = (remote, local) if spec.direction == "in" else (local, remote)
        kw: dict[str, Any] = {"label": f"balsam {task.name}"[:128], "verify_checksum": True}
        if task.status.attempts:
            kw["sync_level"] = "checksum"  # a retry skips what already arrived intact
        tdata = globus_sdk.TransferData(src, dst, **kw)
        for i in indices:
            item = spec.items[i]
            if item.recursive:
                tdata.add_item(item.source, item.destination, recursive=True)
            else:
                tdata.add_item(item.source, item.destination)
        try:
            return str(self._tc().submit_transfer(tdata)["task_id"])
        except Exception as e:
            raise self._translate(e) from None

    def poll(self, task_ids: Sequence[str]) -> dict[str, ProviderStatus | Exception]:
        import globus_sdk

        out: dict[str, ProviderStatus | Exception] = {}
        for tid in task_ids:
            try:
                doc = self._tc().get_task(tid)
            except globus_sdk.GlobusAPIError as e:
                if e.http_status == 404:
                    continue  # unknown to Globus: lost
                out[tid] = self._translate(e)
                continue
            except Exception as e:  # noqa: BLE001 - reported per task
                out[tid] = self._translate(e)
                continue
            out[tid] = _status(doc)
        return out

    def cancel(self, task_id: str) -> None:
        try:
            self._tc().cancel_task(task_id)
        except Exception as e:  # noqa: BLE001 - best effort
            raise self._translate(e) from None


def _status(doc: Any) -> ProviderStatus:
    status = doc.get("status")
    nbytes = int(doc.get("bytes_transferred") or 0)
    files = int(doc.get("files_transferred") or 0)
    if status == "SUCCEEDED":
        return ProviderStatus("Succeeded", nbytes, files, "done")
    if status == "FAILED":
        fatal = doc.get("fatal_error") or {}
        msg = (fatal.get("description") if isinstance(fatal, dict) else None) or doc.get("nice_status_details") \
            or doc.get("nice_status") or "Globus task failed"
        return ProviderStatus("Failed", nbytes, files, f"Globus task {doc.get('task_id')} failed: {msg}", None)
    nice = doc.get("nice_status_short_description") or doc.get("nice_status") or ""
    return ProviderStatus("Active", nbytes, files, f"Globus: {status}" + (f" ({nice})" if nice else ""))
