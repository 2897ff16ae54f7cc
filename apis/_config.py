"""Where the site is and which store it uses.

A site directory (made by ``balsamctl init``) holds ``settings.yml`` (site name, store URL,
namespace), ``data/`` (job workdirs), ``logs/`` and ``apps/``. Every surface finds it the way
Balsam does: ``--site DIR``, else ``BALSAM_SITE_PATH``, else the current directory and its
parents. ``--store URL`` / ``BALSAM_STORE`` override the store.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ruamel.yaml import YAML

import store as st

from ._context import set_process_default
from ._errors import Forbidden, SiteNotFound, StoreUnavailable
from ._modes import SHARING, modes_for
from ._registry import Registry

T = TypeVar("T")

SETTINGS_FILE = "settings.yml"


@dataclass
class SiteConfig:
    path: Path
    name: str
    store_url: str
    namespace: str = "default"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def data_path(self) -> Path:
        return self.path / "data"

    @property
    def logs_path(self) -> Path:
        return self.path / "logs"

    @property
    def apps_path(self) -> Path:
        return self.path / "apps"

    @property
    def sharing(self) -> str:
        """``private`` (default) or ``group``: who may read the site (see apis._modes)."""
        return str(self.extra.get("sharing", "private"))

    @property
    def agents_acquire(self) -> bool:
        """Whether this site's node agents take single-node jobs themselves while placement
        lends them their node (``agents_acquire: true`` in settings.yml; docs/design.md
        "Eighth round: agents acquire"). Off by default: with claims on, a job whose App has a
        preprocess hook or transfers waited unreleased, and the DAG hop is slower (session 7)."""
        return bool(self.extra.get("agents_acquire", False))

    def save(self) -> None:
        doc = {"name": self.name, "store": self.store_url, "namespace": self.namespace, **self.extra}
        y = YAML()
        y.default_flow_style = False
        fd = os.open(self.path / SETTINGS_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, modes_for(self.sharing).file)
        with open(fd, "w") as f:
            y.dump(doc, f)


def find_site_path(site: str | os.PathLike[str] | None = None) -> Path | None:
    if site:
        return Path(site).resolve()
    env = os.environ.get("BALSAM_SITE_PATH")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if (d / SETTINGS_FILE).is_file():
            return d
    return None


def load_site_config(site: str | os.PathLike[str] | None = None) -> SiteConfig:
    path = find_site_path(site)
    if path is None:
        raise SiteNotFound(
            "no site found: pass --site DIR, set BALSAM_SITE_PATH, or run inside a directory made by "
            "'balsamctl init'"
        )
    f = path / SETTINGS_FILE
    if not f.is_file():
        raise SiteNotFound(f"{path} is not a site directory (no {SETTINGS_FILE}); run 'balsamctl init {path}'")
    doc = YAML(typ="safe").load(f.read_text()) or {}
    name = str(doc.pop("name", path.name))
    url = str(doc.pop("store", f"sqlite:///{path / 'store.db'}"))
    ns = str(doc.pop("namespace", "default"))
    if str(doc.get("sharing", "private")) not in SHARING:
        raise SiteNotFound(f"{f}: sharing: {doc['sharing']!r} is not one of {', '.join(SHARING)}")
    return SiteConfig(path=path, name=name, store_url=_with_sqlite_options(url, doc), namespace=ns, extra=doc)


SQLITE_OPTIONS = ("synchronous", "history")


def _with_sqlite_options(url: str, doc: dict[str, Any]) -> str:
    """settings.yml's ``synchronous:`` / ``history:`` as the SQLite URL's query (an option
    already in the URL wins); they mean nothing to etcd."""
    if not url.startswith("sqlite://"):
        return url
    base, _, query = url.partition("?")
    have = urllib.parse.parse_qs(query)
    extra = {k: str(doc[k]) for k in SQLITE_OPTIONS if k in doc and k not in have}
    if not extra:
        return url
    return f"{base}?{'&'.join(p for p in (query, urllib.parse.urlencode(extra)) if p)}"


def resolve_store_url(store_url: str | None = None, site: str | os.PathLike[str] | None = None) -> str:
    if store_url:
        return store_url
    env = os.environ.get("BALSAM_STORE")
    if env:
        return env
    return load_site_config(site).store_url


_lock = threading.Lock()
#: Open registries by store URL: a connection cache (one store connection and poller per URL),
#: not configuration: which store a client uses is the client's (``apis._client.Client``).
_registries: dict[str, Registry] = {}
_site_namespaces: dict[tuple[str, str], str] = {}  # (BALSAM_SITE_PATH, cwd) -> the site's namespace


def open_registry(url: str) -> Registry:
    """A Registry on ``url``, shared per process (one store connection and poller per URL)."""
    with _lock:
        reg = _registries.get(url)
        if reg is None:
            try:
                reg = Registry(st.open_store(url))
            except st.Unavailable as e:
                raise StoreUnavailable(str(e)) from None
            except st.Forbidden as e:
                raise Forbidden(str(e)) from None
            _registries[url] = reg
        return reg


#: Waits between tries of a store that does not answer at start-up: 0.1 s, doubling, at most this.
STORE_WAIT_MAX = 2.0


def retry_while_store_unavailable(fn: Callable[[], T], *, say: Callable[[str], None],
                                  give_up: Callable[[], str] = lambda: "", doing: str = "",
                                  unavailable: tuple[type[BaseException], ...] = (StoreUnavailable,)) -> T | None:
    """``fn()``, tried again with backoff (0.1 s doubling to :data:`STORE_WAIT_MAX`) while it
    raises one of ``unavailable``: a component started during a store outage (an agent an
    allocation starts then, a manager ``up`` restarts) waits for the store instead of exiting,
    as it would ride the outage out had it started before. ``say`` gets one line when the wait
    begins and one when it ends (``doing`` ends both: "; registering node n1"). Returns None
    when ``give_up()`` gives a reason (said too): a stop asked for, a supervisor gone. Other
    errors (refused credentials, a bad URL) are raised at once."""
    delay = 0.1
    waited = False
    while True:
        try:
            result = fn()
        except unavailable as e:
            if not waited:
                say(f"store unavailable ({e}); waiting for it{doing}")
                waited = True
            why = give_up()
            if why:
                say(why)
                return None
            time.sleep(delay)
            delay = min(STORE_WAIT_MAX, delay * 2)
            continue
        if waited:
            say(f"store reachable again{doing}")
        return result


def open_registry_waiting(url: str, *, say: Callable[[str], None],
                          give_up: Callable[[], str] = lambda: "") -> Registry | None:
    """:func:`open_registry`, waiting while the store does not answer
    (:func:`retry_while_store_unavailable`)."""
    return retry_while_store_unavailable(lambda: open_registry(url), say=say, give_up=give_up)


def default_namespace() -> str:
    """The namespace a client reads and writes when none is named: ``BALSAM_NAMESPACE``, else
    the site's ``namespace:`` (settings.yml of the site found as the CLI finds it), else
    ``default``. A client that ignored the site's namespace would read another site's jobs
    and write where the site never looks. (``apis.use(namespace=...)`` and
    ``apis.using(..., namespace=...)`` name one for their client.)"""
    env = os.environ.get("BALSAM_NAMESPACE")
    if env:
        return env
    key = (os.environ.get("BALSAM_SITE_PATH", ""), os.getcwd())
    ns = _site_namespaces.get(key)
    if ns is None:
        try:
            ns = load_site_config().namespace
        except SiteNotFound:
            ns = "default"
        _site_namespaces[key] = ns
    return ns


def reset() -> None:
    """Close every open store and forget ``apis.use(...)`` (tests; forked children)."""
    set_process_default(None)
    with _lock:
        for reg in _registries.values():
            try:
                reg.store.close()
            except Exception:  # noqa: BLE001 - closing best effort
                pass
        _registries.clear()
        _site_namespaces.clear()


class _SiteConfigProxy:
    """``from apis import site_config``: the current site's config, loaded on first use."""

    _cfg: SiteConfig | None = None

    def _load(self) -> SiteConfig:
        if self._cfg is None or (
            os.environ.get("BALSAM_SITE_PATH") and Path(os.environ["BALSAM_SITE_PATH"]).resolve() != self._cfg.path
        ):
            self._cfg = load_site_config()
        return self._cfg

    def __getattr__(self, name: str) -> Any:
        return getattr(self._load(), name)

    def __repr__(self) -> str:
        try:
            return f"<site_config {self._load().path}>"
        except SiteNotFound:
            return "<site_config (no site)>"


site_config: Any = _SiteConfigProxy()
