"""Globus sign-in for a site, with globus-sdk's own login flow and token storage.

``balsamctl login globus`` runs the SDK's command-line login flow and stores the tokens with
its ``JSONTokenStorage`` in ``<site>/globus/tokens.json`` (mode 0600, directory 0700), with
refresh tokens, so the controller's TransferClient refreshes access tokens by itself. The
client id and the collections that need ``data_access`` consent are kept beside them in
``<site>/globus/app.json``. The controller never prompts: without valid tokens its calls
fail with :class:`AuthRequired` naming the command to run.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .base import AuthRequired

APP_NAME = "balsamctl"
DIR = "globus"
TOKENS = "tokens.json"
SETTINGS = "app.json"
CLIENT_ID_ENV = "BALSAM_GLOBUS_CLIENT_ID"
_DATA_ACCESS = re.compile(r"scopes/([0-9a-fA-F-]{36})/data_access")


def globus_dir(site_path: str | os.PathLike[str]) -> Path:
    return Path(site_path) / DIR


def login_command(site_path: str | os.PathLike[str], data_access: Iterable[str] = ()) -> str:
    extra = "".join(f" --data-access {c}" for c in data_access)
    return f"balsamctl login globus --site {site_path}{extra}"


def load_settings(site_path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        data = json.loads((globus_dir(site_path) / SETTINGS).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_settings(site_path: str | os.PathLike[str], settings: dict[str, Any]) -> None:
    d = globus_dir(site_path)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    path = d / SETTINGS
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(settings, f, indent=2)
    os.chmod(path, 0o600)


def data_access_from_scopes(scopes: Iterable[str]) -> list[str]:
    """The collection ids in ``...scopes/<uuid>/data_access`` scope strings."""
    return sorted({m.group(1).lower() for s in scopes for m in _DATA_ACCESS.finditer(s)})


def make_app(site_path: str | os.PathLike[str], client_id: str, *, interactive: bool) -> Any:
    """A globus-sdk ``UserApp`` whose tokens live in the site directory. Not interactive:
    a missing or expired sign-in raises instead of starting a login flow."""
    import globus_sdk
    from globus_sdk.token_storage import JSONTokenStorage

    d = globus_dir(site_path)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    storage = JSONTokenStorage(d / TOKENS)
    kw: dict[str, Any] = {"token_storage": storage, "request_refresh_tokens": True}
    if not interactive:
        kw["token_validation_error_handler"] = None
    return globus_sdk.UserApp(APP_NAME, client_id=client_id, config=globus_sdk.GlobusAppConfig(**kw))


def transfer_client(site_path: str | os.PathLike[str], *, interactive: bool = False) -> Any:
    """A TransferClient signed in as the site's user (tokens refreshed automatically)."""
    import globus_sdk

    settings = load_settings(site_path)
    client_id = settings.get("client_id") or os.environ.get(CLIENT_ID_ENV)
    tokens = globus_dir(site_path) / TOKENS
    if not client_id or not tokens.exists():
        raise AuthRequired(f"not signed in to Globus: run '{login_command(site_path)}'")
    app = make_app(site_path, str(client_id), interactive=interactive)
    tc = globus_sdk.TransferClient(app=app)
    collections = settings.get("data_access") or []
    if collections:
        tc.add_app_data_access_scope(collections)
    return tc


def secure_tokens(site_path: str | os.PathLike[str]) -> Path:
    """Make sure the token file is readable by its owner only (0600); returns its path."""
    path = globus_dir(site_path) / TOKENS
    if path.exists():
        os.chmod(path, 0o600)
    return path
