"""``balsamctl init DIR``: make a site directory and its Site resource."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import click

from apis import ObjectMeta, Site, SiteConfig, SiteNotFound, SiteSpec
from apis._config import SETTINGS_FILE, load_site_config
from apis._meta import validate_name
from apis._modes import SHARING, apply_umask, fix_modes, modes_for
from apis._site_templates import TEMPLATES, site_template

from .._context import common_options, get_ctx
from .._errors import CLIError
from ..printers import object_ref

SUBDIRS = ("data", "logs", "apps")


def site_name_for(path: Path) -> str:
    """The directory's name as a DNS-1123 name: ``My_Site 2`` → ``my-site-2``."""
    name = re.sub(r"[^a-z0-9-]+", "-", path.name.lower())
    name = re.sub(r"-{2,}", "-", name).strip("-")[:63].strip("-")
    return name or "site"


@click.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", default=None, help="Site name (default: the directory's name, made DNS-1123).")
@click.option("--template", default=None, metavar="NAME",
              help=f"Site spec of a known machine: {', '.join(sorted(TEMPLATES))} (scheduler, launcher, "
                   "node size, GPUs, queues, file systems).")
@click.option("--sharing", type=click.Choice(SHARING), default=None,
              help="Who may read the site: private (default: 0700 directories, 0600 files) or group "
                   "(2750/0640, the site directory's group; for a team).")
@common_options
def command(directory: Path, name: str | None, template: str | None, sharing: str | None) -> None:
    """Create a site directory (settings.yml, data/, logs/, apps/) and its Site resource.

    The store defaults to sqlite:///DIR/store.db; --store URL puts it elsewhere (etcd://...).
    --template polaris|aurora fills the Site's spec as Balsam's site templates do.
    On an existing site, it fixes the modes of everything in it (and records --sharing).
    """
    ctx = get_ctx()
    path = directory.expanduser().resolve()
    if (path / SETTINGS_FILE).exists():
        fix_existing(path, name, sharing)
        return
    if path.exists() and not path.is_dir():
        raise CLIError(f"{path} exists and is not a directory")
    site_name = name if name is not None else site_name_for(path)
    try:
        validate_name(site_name, "site name")
        spec = site_template(template, str(path)) if template is not None else SiteSpec(path=str(path))
    except ValueError as e:
        raise CLIError(str(e)) from None
    namespace = ctx.namespace_flag or "default"
    store_url = ctx.store_url or f"sqlite:///{path / 'store.db'}"
    ctx.store_url = store_url  # the registry below opens this store, not BALSAM_STORE's

    sharing = sharing or "private"
    apply_umask(sharing)  # the store, settings and logs made below are private from birth
    made_dir = not path.exists()
    db = path / "store.db"
    own_db = store_url == f"sqlite:///{db}" and not db.exists()
    made: list[Path] = []
    try:
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, modes_for(sharing).directory)
        for sub in SUBDIRS:
            p = path / sub
            if not p.exists():
                p.mkdir()
                made.append(p)
        site = Site(metadata=ObjectMeta(name=site_name, namespace=namespace), spec=spec)
        ctx.registry.create(site)
        extra = {"sharing": sharing} if sharing != "private" else {}
        SiteConfig(path=path, name=site_name, store_url=store_url, namespace=namespace, extra=extra).save()
        fix_modes(path, sharing)
    except BaseException:
        ctx.close()
        if made_dir:
            shutil.rmtree(path, ignore_errors=True)
        else:
            for p in made:
                shutil.rmtree(p, ignore_errors=True)
            if own_db:
                for f in path.glob("store.db*"):
                    f.unlink(missing_ok=True)
        raise
    click.echo(f"{object_ref(site)} created")


def fix_existing(path: Path, name: str | None, sharing: str | None) -> None:
    """``init`` on a site that exists: its settings stay, every mode is set again (a site made
    before modes were private, or one whose sharing changes with --sharing)."""
    try:
        cfg = load_site_config(path)
    except SiteNotFound as e:
        raise CLIError(str(e)) from None
    if name is not None and name != cfg.name:
        raise CLIError(f"{path} is already site {cfg.name!r}; --name cannot rename it")
    if sharing is not None and sharing != cfg.sharing:
        cfg.extra["sharing"] = sharing
        cfg.save()
    apply_umask(cfg.sharing)
    changed = fix_modes(path, cfg.sharing)
    click.echo(f"site {cfg.name} exists at {path}: modes are {cfg.sharing} ({changed} fixed)")
