"""Transfer providers (plug-ins): ``file://``, ``http(s)://`` and ``globus://``.

:class:`Providers` makes each one on first use, per site directory (Globus keeps the site's
sign-in there); tests pass their own factories.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .base import (
    AuthRequired,
    ItemError,
    ItemFailed,
    LocalProvider,
    ProviderStatus,
    TransferProvider,
    TransferProviderError,
)

Factory = Callable[[str], TransferProvider]  # site directory -> provider


def _file(site: str) -> TransferProvider:
    from .local import FileProvider

    return FileProvider()


def _http(site: str) -> TransferProvider:
    from .http import HttpProvider

    return HttpProvider()


def _globus(site: str) -> TransferProvider:
    from .globus import GlobusProvider

    return GlobusProvider(site)


DEFAULT_FACTORIES: dict[str, Factory] = {"file": _file, "http": _http, "globus": _globus}


class Providers:
    def __init__(self, factories: dict[str, Factory] | None = None) -> None:
        self.factories = {**DEFAULT_FACTORIES, **(factories or {})}
        self._made: dict[tuple[str, str], TransferProvider] = {}
        self._lock = threading.Lock()

    def get(self, name: str, site_path: str) -> TransferProvider:
        with self._lock:
            key = (name, site_path)
            p = self._made.get(key)
            if p is None:
                factory = self.factories.get(name)
                if factory is None:
                    raise TransferProviderError(f"no transfer provider for {name}://")
                p = self._made[key] = factory(site_path)
            return p

    def close(self) -> None:
        with self._lock:
            for p in self._made.values():
                p.close()
            self._made.clear()


__all__ = [
    "AuthRequired",
    "DEFAULT_FACTORIES",
    "Factory",
    "ItemError",
    "ItemFailed",
    "LocalProvider",
    "ProviderStatus",
    "Providers",
    "TransferProvider",
    "TransferProviderError",
]
