"""``balsamctl crds [-d DIR] [--check]``: Kubernetes CRDs for every balsam.io/v1 kind."""

from __future__ import annotations

from pathlib import Path

import click

from .. import crds as gen
from .._errors import CLIError


@click.command("crds")
@click.option("-d", "--output-dir", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write one file per kind into DIR (e.g. manifests/crds) instead of printing them.")
@click.option("--check", is_flag=True, help="With -d: write nothing, exit 1 when a file in DIR is missing or stale.")
def command(out_dir: Path | None, check: bool) -> None:
    """Print (or write) CustomResourceDefinitions generated from the API models.

    \b
    balsamctl crds | kubectl apply -f -
    balsamctl crds -d manifests/crds          # regenerate the committed files
    balsamctl crds -d manifests/crds --check  # CI: are they up to date?
    """
    files = gen.rendered_files()
    if out_dir is None:
        if check:
            raise CLIError("--check needs -d DIR")
        click.echo("---\n".join(files.values()), nl=False)
        return
    if check:
        stale = [name for name, text in files.items()
                 if not (out_dir / name).is_file() or (out_dir / name).read_text() != text]
        if stale:
            raise CLIError(f"CRDs out of date in {out_dir}: {', '.join(stale)} (run 'balsamctl crds -d {out_dir}')")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = out_dir / name
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            click.echo(f"{path} written")
        else:
            click.echo(f"{path} unchanged")
