"""``balsamctl dashboard``: a live, read-only web page for one namespace (see
``kubectl_like/dashboard.py``)."""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket

import click

from .._context import common_options, get_ctx
from .._errors import CLIError

TOKEN_ENV = "BALSAM_DASHBOARD_TOKEN"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command("dashboard", short_help="A live web page of the namespace's jobs, nodes and failures.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="0: any free port.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs the printed token.")
@click.option("--require-token", is_flag=True, help="Ask for the token on loopback too.")
@common_options
def command(port: int, host: str, require_token: bool) -> None:
    """Serve a read-only dashboard of the namespace: state counts, throughput and utilization
    charts, nodes, allocations, failing jobs (reason and output tail) and each job's page.
    It lists the store once, then follows ONE watch and pushes changes to open pages.

    \b
    balsamctl dashboard                      # http://127.0.0.1:8765/
    balsamctl dashboard --host 0.0.0.0       # prints http://HOST:8765/?token=... (the token: $BALSAM_DASHBOARD_TOKEN, else new)
    """
    # The web stack (uvicorn, starlette, sse-starlette) is imported when this command runs, not
    # when balsamctl starts: it would add ~0.5 s to the start-up of every other command.
    import uvicorn

    from ..dashboard import CampaignState, make_app

    ctx = get_ctx()
    token = None
    if require_token or not is_loopback(host):
        token = os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except (OSError, OverflowError) as e:
        raise CLIError(f"cannot listen on {host}:{port}: {getattr(e, 'strerror', None) or e}") from None
    state = CampaignState(ctx.registry, ctx.namespace)
    try:
        state.start()
        bound_port = sock.getsockname()[1]
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        url = f"http://{'[' + shown + ']' if ':' in shown else shown}:{bound_port}/"
        click.echo(f"Dashboard of namespace {ctx.namespace} ({len(state.jobs):,} jobs): "
                   f"{url}{'?token=' + token if token else ''}", err=True)
        click.echo("Read-only; Ctrl-C to stop.", err=True)
        config = uvicorn.Config(make_app(state, token, ctx.resolved_store_url().split("://")[0]),
                                log_level="warning", access_log=False, lifespan="off")
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        state.stop()
        sock.close()
