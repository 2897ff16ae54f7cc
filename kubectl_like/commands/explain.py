"""``balsamctl explain KIND[.FIELD...]``: what a kind's fields mean (kubectl explain)."""

from __future__ import annotations

import click

from ..completion import complete_explain
from ..explain import explain


@click.command("explain")
@click.argument("target", metavar="KIND[.FIELD...]", shell_complete=complete_explain)
def command(target: str) -> None:
    """Document a kind and its fields, from the same schema as the CRDs.

    \b
    balsamctl explain job
    balsamctl explain job.spec.resources
    balsamctl explain batchjob.spec
    """
    click.echo(explain(target), nl=False)
