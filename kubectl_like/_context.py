"""What every command needs: where the site and the store are, which namespace, and a
place to report errors that do not stop the command (kubectl prints those and exits 1)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import click

import store as st

from ._errors import render_error

if TYPE_CHECKING:
    from apis import Registry, SiteConfig

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Ctx:
    """Per-invocation state, in ``click.Context.obj``. The registry is opened on first use
    (so ``--help`` and ``init`` need no store) and closed when the command ends."""

    site: str | None = None
    store_url: str | None = None
    namespace_flag: str | None = None
    exit_code: int = 0
    _site_config: SiteConfig | None = None
    _site_looked_up: bool = False
    _registry: Registry | None = None
    _closers: list[Callable[[], None]] = field(default_factory=list)

    # --- site, store, namespace ---------------------------------------------------

    def site_config(self, required: bool = True) -> SiteConfig | None:
        # ``apis`` (pydantic and every model: ~0.2 s) is imported when a command first needs
        # the site or the store, so ``balsamctl --version`` and ``--help`` never pay for it.
        from apis import SiteNotFound, load_site_config
        from apis._modes import apply_umask

        if not self._site_looked_up:
            self._site_looked_up = True
            try:
                self._site_config = load_site_config(self.site)
                # what this command and the processes it starts (up) make in the site is private
                apply_umask(self._site_config.sharing)
            except SiteNotFound:
                if required:
                    raise
                self._site_config = None
        elif self._site_config is None and required:
            load_site_config(self.site)  # raises the same SiteNotFound again
        return self._site_config

    def resolved_store_url(self) -> str:
        if self.store_url:
            return self.store_url
        env = os.environ.get("BALSAM_STORE")
        if env:
            return env
        cfg = self.site_config(required=True)
        assert cfg is not None
        return cfg.store_url

    @property
    def namespace(self) -> str:
        if self.namespace_flag:
            return self.namespace_flag
        env = os.environ.get("BALSAM_NAMESPACE")
        if env:
            return env
        cfg = self.site_config(required=False)
        return cfg.namespace if cfg is not None else "default"

    @property
    def registry(self) -> Registry:
        """A registry of our own (not the process-wide cache of ``apis.open_registry``), so
        a command leaves no store open behind it."""
        if self._registry is None:
            from apis import Registry, StoreUnavailable  # on first use (see site_config)

            url = self.resolved_store_url()
            try:
                store = st.open_store(url)
            except st.Unavailable as e:
                raise StoreUnavailable(str(e)) from None
            self._registry = Registry(store)
            self._closers.append(store.close)
        return self._registry

    def close(self) -> None:
        while self._closers:
            fn = self._closers.pop()
            try:
                fn()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        self._registry = None

    # --- errors that do not stop the command -----------------------------------------

    def report(self, err: BaseException) -> None:
        """Print ``err`` as kubectl would (one line on stderr) and remember to exit 1."""
        click.echo(render_error(err), err=True)
        self.exit_code = 1

    def warn(self, message: str) -> None:
        click.echo(f"Warning: {message}", err=True)


def get_ctx() -> Ctx:
    return click.get_current_context().ensure_object(Ctx)


def _setter(attr: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def cb(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        if value is not None:
            setattr(ctx.ensure_object(Ctx), attr, value)
        return value

    return cb


def common_options(fn: F) -> F:
    """``--site``, ``--store`` and ``-n`` on the group and on every command, so that both
    ``balsamctl -n x get jobs`` and ``balsamctl get jobs -n x`` work (kubectl's habit)."""
    opts = [
        click.option("--site", "site", metavar="DIR", default=None, expose_value=False, is_eager=True,
                     callback=_setter("site"), help="Site directory (else BALSAM_SITE_PATH, else cwd and parents)."),
        click.option("--store", "store_url", metavar="URL", default=None, expose_value=False, is_eager=True,
                     callback=_setter("store_url"),
                     help="Store URL: sqlite:///PATH or etcd://HOST:PORT (else BALSAM_STORE, else the site's)."),
        click.option("-n", "--namespace", "namespace_flag", metavar="NS", default=None, expose_value=False,
                     is_eager=True, callback=_setter("namespace_flag"),
                     help="Namespace (else the site's, else 'default')."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn
