"""``balsamctl completion bash|zsh|fish``: the shell script that makes TAB complete balsamctl
(click's shell completion; the completions themselves are in ``kubectl_like/completion.py``)."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

COMPLETE_VAR = "_BALSAMCTL_COMPLETE"


@click.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def command(shell: str) -> None:
    """Print the completion script for SHELL.

    \b
    source <(balsamctl completion bash)                 # this shell
    balsamctl completion bash > ~/.balsamctl-complete.bash  # and source it from ~/.bashrc
    balsamctl completion zsh > "${fpath[1]}/_balsamctl"
    balsamctl completion fish > ~/.config/fish/completions/balsamctl.fish
    """
    root = click.get_current_context().find_root().command  # the balsamctl group
    cls = get_completion_class(shell)
    assert cls is not None  # click.Choice admits only shells click knows
    click.echo(cls(root, {}, "balsamctl", COMPLETE_VAR).source())
