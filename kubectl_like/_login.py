"""``balsamctl login globus``: sign in to Globus for this site, with globus-sdk's own login flow.

The tokens (with a refresh token, so the controller renews access by itself) are stored by
the SDK's ``JSONTokenStorage`` in ``<site>/globus/tokens.json``, mode 0600. Run it again with
``--data-access COLLECTION`` when a transfer reports that a collection needs consent — the
TransferTask's ``TransferAuthRequired`` condition prints that exact command.
"""

from __future__ import annotations

import os
import re

import click

from controllers.transfer.providers.globus_auth import (
    CLIENT_ID_ENV,
    load_settings,
    make_app,
    save_settings,
    secure_tokens,
)

from ._context import common_options, get_ctx
from ._errors import CLIError

_UUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


@click.group("login")
def command() -> None:
    """Sign in to a transfer service for this site (login globus)."""


@command.command("globus")
@click.option("--client-id", default=None, metavar="UUID",
              help=f"Your Globus native app's client id (else the one saved by an earlier login, else ${CLIENT_ID_ENV}).")
@click.option("--data-access", "data_access", multiple=True, metavar="COLLECTION",
              help="A collection that needs data_access consent (repeatable; earlier ones are kept).")
@common_options
def globus(client_id: str | None, data_access: tuple[str, ...]) -> None:
    """Sign in to Globus: prints a link, then asks for the code Globus shows you.

    \b
    balsamctl login globus --client-id 1b0dc9d3-... [--data-access <collection-uuid>]
    """
    ctx = get_ctx()
    cfg = ctx.site_config(required=True)
    assert cfg is not None
    saved = load_settings(cfg.path)
    client_id = client_id or saved.get("client_id") or os.environ.get(CLIENT_ID_ENV) \
        or cfg.extra.get("globus_client_id")
    if not client_id:
        raise CLIError("no Globus client id: register a native app at https://app.globus.org/settings/developers "
                       "and pass --client-id UUID (it is kept for the next login)")
    for value, what in [(client_id, "--client-id"), *((c, "--data-access") for c in data_access)]:
        if not _UUID.match(str(value)):
            raise CLIError(f'invalid {what} "{value}": expected a UUID')
    collections = sorted({*saved.get("data_access", []), *(c.lower() for c in data_access)})
    import globus_sdk

    app = make_app(cfg.path, str(client_id), interactive=True)
    tc = globus_sdk.TransferClient(app=app)
    if collections:
        tc.add_app_data_access_scope(collections)
    try:
        app.login(force=True)
    except (EOFError, KeyboardInterrupt):
        raise CLIError("Globus sign-in needs the authorization code typed in; run it in a terminal") from None
    except globus_sdk.GlobusError as e:
        raise CLIError(f"Globus sign-in failed: {e}") from None
    finally:
        app.close()
    path = secure_tokens(cfg.path)
    save_settings(cfg.path, {"client_id": str(client_id), "data_access": collections})
    click.echo(f"signed in to Globus; tokens saved in {path} (mode 0600)")
