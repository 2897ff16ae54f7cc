"""An etcd-like store with two backends: embedded SQLite (default) and etcd.

``open_store(url)`` picks the backend from the URL:
``sqlite:///abs/path/store.db`` or ``etcd://host:port[,host:port...][?cacert=...&cert=...&key=...]``
(TLS and auth: see ``store/_etcd.py``).
"""

from __future__ import annotations

from ._api import (
    Compacted,
    Compare,
    Conflict,
    Delete,
    Event,
    Forbidden,
    Get,
    KeyValue,
    LeaseNotFound,
    Op,
    Put,
    RangeResult,
    Store,
    StoreError,
    TooLarge,
    TxnResult,
    Unavailable,
    Watch,
    WatchClosed,
)


def open_store(url: str) -> Store:
    """Open the store that ``url`` names. Raises Unavailable with a one-line reason."""
    if url.startswith("sqlite://"):
        from ._sqlite import SQLiteStore

        return SQLiteStore(url)
    if url.startswith("etcd://"):
        from ._etcd import EtcdStore

        return EtcdStore(url)
    raise Unavailable(f"unsupported store URL {url!r} (expected sqlite:///PATH or etcd://HOST:PORT)")


__all__ = [
    "Compacted",
    "Compare",
    "Conflict",
    "Delete",
    "Event",
    "Forbidden",
    "Get",
    "KeyValue",
    "LeaseNotFound",
    "Op",
    "Put",
    "RangeResult",
    "Store",
    "StoreError",
    "TooLarge",
    "TxnResult",
    "Unavailable",
    "Watch",
    "WatchClosed",
    "open_store",
]
