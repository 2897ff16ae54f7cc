"""Balsam's ``Session`` and ``TransferItem`` as views of balsamctl's resources.

* A Balsam **Session** is a launcher's lease on jobs, with a heartbeat. Here the node agents
  hold that role: each registers a ``Node`` on a store lease and beats on it, so a Session is
  a Node seen through Balsam's names (``id``, ``batch_job_id``, ``heartbeat``, ``site_id``) and
  ``session.delete()`` removes it (its jobs are then recovered as for any lost node).
* A Balsam **TransferItem** is one file or directory to stage for one job. Here the transfer
  reconcilers group items into ``TransferTask`` resources (one per provider, direction and
  location); a TransferItem is one item of a task, with the task's state as Balsam names
  states (``pending``, ``active``, ``done``, ``error``).

Both are read through the current client (``apis.using``) or the one given to ``using``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

from ._client import Client, as_client
from ._errors import BadRequest, DoesNotExist, MultipleObjectsReturned
from ._kinds import Node, TransferDirection, TransferTask
from ._query import _as_list
from ._registry import Registry

V = TypeVar("V")


class _ViewManager(Generic[V]):
    """A read-only, filterable list of views (``objects.filter(...)``, ``get``, ``count``)."""

    FILTERS: tuple[str, ...] = ()

    def __init__(self, client: Client | Registry | str | None = None, filters: dict[str, Any] | None = None) -> None:
        self._client = client
        self._filters = dict(filters or {})

    @property
    def client(self) -> Client:
        """The client the views are read through."""
        return as_client(self._client)

    def using(self, target: Client | Registry | str) -> _ViewManager[V]:
        """The same query on another store."""
        return type(self)(target, self._filters)

    def all(self) -> _ViewManager[V]:
        """Every view (no filter)."""
        return type(self)(self._client, {})

    def filter(self, **kw: Any) -> _ViewManager[V]:
        """Views whose attributes equal the keywords (a list: any of its values)."""
        for k in kw:
            if k not in self.FILTERS:
                raise BadRequest(f"unknown filter {k!r} (known: {', '.join(self.FILTERS)})")
        return type(self)(self._client, {**self._filters, **kw})

    def _views(self) -> list[V]:
        raise NotImplementedError

    def _fetch(self) -> list[V]:
        want = {k: {str(x) for x in _as_list(v)} for k, v in self._filters.items()}
        return [v for v in self._views() if all(str(getattr(v, k)) in vals for k, vals in want.items())]

    def __iter__(self) -> Iterator[V]:
        """The matching views."""
        return iter(self._fetch())

    def __len__(self) -> int:
        """How many views match."""
        return len(self._fetch())

    def count(self) -> int:
        """How many views match."""
        return len(self._fetch())

    def first(self) -> V | None:
        """The first match, or None."""
        found = self._fetch()
        return found[0] if found else None

    def get(self, **kw: Any) -> V:
        """The one view matching ``kw`` (DoesNotExist / MultipleObjectsReturned otherwise)."""
        found = self.filter(**kw)._fetch()
        if not found:
            raise DoesNotExist(f"nothing matches {kw or self._filters}")
        if len(found) > 1:
            raise MultipleObjectsReturned(f"{len(found)} match {kw}")
        return found[0]


@dataclass
class Session:
    """A node agent's registration, under Balsam's Session names."""

    id: str
    site_id: str
    batch_job_id: str | None
    heartbeat: datetime | None
    node: Node
    _client: Client

    objects: ClassVar[Any]  # SessionManager of the current client (set below)

    def delete(self) -> None:
        """Remove the session (its Node); its jobs are recovered as for a lost node."""
        self._client.registry.delete(Node, self.node.name, self.node.namespace)


class SessionManager(_ViewManager[Session]):
    """``Session.objects``: the node agents of the client's namespace."""

    FILTERS = ("id", "site_id", "batch_job_id")

    def _views(self) -> list[Session]:
        c = self.client
        nodes, _ = c.registry.list(Node, c.namespace)
        return [Session(n.name, n.namespace, n.spec.batch_job, n.status.heartbeat, n, c) for n in nodes]


class _SessionObjects:
    def __get__(self, obj: Any, owner: type) -> SessionManager:
        return SessionManager()


Session.objects = _SessionObjects()

_ITEM_STATES = {"Pending": "pending", "Active": "active", "Succeeded": "done", "Failed": "error"}


@dataclass
class TransferItem:
    """One item of a TransferTask, under Balsam's TransferItem names."""

    id: str
    job_id: str
    direction: TransferDirection
    local_path: str
    remote_path: str
    location: str
    recursive: bool
    state: str
    task_id: str
    transfer_info: dict[str, Any]

    objects: ClassVar[Any]  # TransferItemManager of the current client (set below)


class TransferItemManager(_ViewManager[TransferItem]):
    """``TransferItem.objects``: the items of the client's namespace's TransferTasks."""

    FILTERS = ("id", "job_id", "direction", "state", "task_id")

    def _views(self) -> list[TransferItem]:
        c = self.client
        tasks, _ = c.registry.list(TransferTask, c.namespace)
        out = []
        for t in tasks:
            failed = {f.index: f for f in t.status.failed_items}
            for i, item in enumerate(t.spec.items):
                state = _ITEM_STATES[t.status.state]
                if state == "error" and i not in failed:
                    state = "done"  # the task failed on other items; this one arrived
                d = TransferDirection(t.spec.direction)
                local, remote = (item.destination, item.source) if d is TransferDirection.stage_in \
                    else (item.source, item.destination)
                info: dict[str, Any] = {"task": t.name}
                if i in failed:
                    info["error"] = failed[i].message
                out.append(TransferItem(f"{t.name}/{i}", item.job, d, local, remote, t.spec.location, item.recursive,
                                        state, t.status.provider_task_id or "", info))
        return out


class _TransferItemObjects:
    def __get__(self, obj: Any, owner: type) -> TransferItemManager:
        return TransferItemManager()


TransferItem.objects = _TransferItemObjects()
