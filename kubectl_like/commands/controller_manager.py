"""``balsamctl controller-manager``: the reconcilers of one site (``python -m controllers``),
in the foreground until SIGTERM/Ctrl-C; a second one stands by and takes over when the
leader's lease expires."""

from __future__ import annotations

import click

from .._context import Ctx, common_options, get_ctx


def site_flags(ctx: Ctx) -> list[str]:
    """--site/--store/-n as given to balsamctl, for a daemon's own argument parser."""
    argv: list[str] = []
    for flag, value in (("--site", ctx.site), ("--store", ctx.store_url), ("--namespace", ctx.namespace_flag)):
        if value:
            argv += [flag, value]
    return argv


@click.command("controller-manager")
@click.option("--lease-ttl", type=click.FloatRange(min=1.0), default=15.0, show_default=True, metavar="S",
              help="Seconds a standby waits after the leader stops renewing before it takes over.")
@click.option("--identity", default=None, metavar="ID", help="Leader-election identity (default: HOST-PID).")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              default="INFO", show_default=True, help="Level of logs/controller-manager.log.")
@click.option("--hook-workers", type=click.IntRange(min=1), default=None, metavar="N",
              help="Lifecycle hooks that may run at once (default: one per CPU).")
@click.option("--hook-timeout", type=click.FloatRange(min=0, min_open=True), default=300.0, show_default=True,
              metavar="S", help="Seconds a hook may run before it is killed and its job FAILED (unless its App "
              "says otherwise).")
@common_options
def command(lease_ttl: float, identity: str | None, log_level: str, hook_workers: int | None,
            hook_timeout: float) -> int:
    """Run the dependency, hook and placement reconcilers of this site until stopped.

    \b
    balsamctl controller-manager                 # logs in <site>/logs/controller-manager.log
    balsamctl controller-manager --lease-ttl 5   # a faster takeover by a standby
    """
    from controllers.__main__ import main

    argv = [*site_flags(get_ctx()), "--lease-ttl", str(lease_ttl), "--log-level", log_level,
            "--hook-timeout", str(hook_timeout)]
    if identity:
        argv += ["--identity", identity]
    if hook_workers is not None:
        argv += ["--hook-workers", str(hook_workers)]
    return main(argv)
