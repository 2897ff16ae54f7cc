"""``balsamctl admin ...``: etcd users and roles for sites sharing one etcd cluster.

Run as etcd's root (a root client certificate, or user root with a password file) against the
shared store (``--store URL``). Each command makes or updates one role and grants it to one
user; users sign in by a client certificate whose CN is the user name (no password), or with
``--password-file``. Key layout and roles: docs/design.md, "Sites on a shared etcd".

\b
balsamctl admin enable-auth                       # root user, then etcd's auth on
balsamctl admin site-role polaris                 # role balsam-site-polaris, user site-polaris
balsamctl admin user-role alice --allow polaris --allow aurora
balsamctl admin dashboard-role viewer
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from apis import Site
from apis._roles import dashboard_permissions, site_permissions, user_permissions
from apis._sites import site_namespace

from .._context import common_options, get_ctx
from .._errors import CLIError


def _etcd() -> Any:
    store = get_ctx().registry.store
    if not hasattr(store, "ensure_role"):
        raise CLIError("users and roles need an etcd store (--store etcd://...); this one has no access control")
    return store


def _password(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        text = path.read_text().strip()
    except OSError as e:
        raise CLIError(f"cannot read {path}: {e.strerror}") from None
    if not text:
        raise CLIError(f"{path} is empty")
    return text


def _grant(role: str, perms: Sequence[tuple[str, str]], user: str, password: Path | None) -> None:
    store = _etcd()
    store.ensure_role(role, perms)
    store.ensure_user(user, password=_password(password), roles=[role])
    click.echo(f"role {role}: {len(perms)} permissions; user {user} has it")


_password_option = click.option(
    "--password-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="The user's password, read from this file (else it signs in by client certificate, CN=USER).")


@click.group("admin")
def command() -> None:
    """etcd users and roles for sites sharing one etcd cluster (run as etcd's root)."""


@command.command("enable-auth")
@_password_option
@common_options
def enable_auth(password_file: Path | None) -> None:
    """Create etcd's root user (with the root role) and turn auth on."""
    store = _etcd()
    store.ensure_user("root", password=_password(password_file), roles=["root"])
    store.auth_enable()
    click.echo("etcd auth enabled (user root)")


@command.command("site-role")
@click.argument("site_name", metavar="SITE")
@click.option("--user", default=None, help="The site's etcd user (default: site-SITE).")
@_password_option
@common_options
def site_role(site_name: str, user: str | None, password_file: Path | None) -> None:
    """The role of SITE's controller manager and node agents: its own namespace's keys only."""
    ctx = get_ctx()
    ns = ctx.namespace_flag or site_namespace(ctx.registry, site_name) or site_name
    _grant(f"balsam-site-{site_name}", site_permissions(ns), user or f"site-{site_name}", password_file)


@command.command("user-role")
@click.argument("user")
@click.option("--allow", "sites", metavar="SITE", multiple=True, required=True,
              help="A site this user may submit to (repeat).")
@_password_option
@common_options
def user_role(user: str, sites: tuple[str, ...], password_file: Path | None) -> None:
    """A submitting user's role: create and read jobs of the given sites."""
    reg = get_ctx().registry
    namespaces = []
    for s in sites:
        ns = site_namespace(reg, s)
        if ns is None:
            raise CLIError(f'no Site "{s}" in the store ({Site.resource_name()}); make it with balsamctl init first')
        namespaces.append(ns)
    _grant(f"balsam-user-{user}", user_permissions(namespaces), user, password_file)


@command.command("dashboard-role")
@click.argument("user")
@_password_option
@common_options
def dashboard_role(user: str, password_file: Path | None) -> None:
    """A read-only role (dashboards, reports)."""
    _grant("balsam-dashboard", dashboard_permissions(), user, password_file)
