"""The current client, as the model layer sees it: a context variable and nothing else.

The model (``_meta``, ``_kinds``, ``_balsam``, ...) knows no store. ``Job.objects``,
``job.save()`` and ``job.result()`` ask :func:`current` for the client to work through: the
client that loaded the object (:func:`bound_client`), else the one set for this context with
``with apis.using(...)``, else the process's default, which the client layer
(``apis._client``) installs with :func:`set_default_factory` when it is imported. This
module imports nothing of ours but the errors, so every other layer may import it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ._errors import DoesNotExist, MultipleObjectsReturned


class ClientPort(Protocol):
    """What the model needs of a client (``apis._client.Client`` is the implementation)."""

    @property
    def registry(self) -> Any: ...

    @property
    def namespace(self) -> str: ...

    def manager(self, model: type[Any]) -> Any: ...

    def save(self, obj: Any) -> None: ...

    def delete(self, obj: Any) -> None: ...

    def refresh(self, obj: Any) -> None: ...

    def wait_one(self, job: Any, timeout: float | None) -> None: ...


_current: contextvars.ContextVar[ClientPort | None] = contextvars.ContextVar("balsam_client", default=None)
_factory: list[Callable[[], ClientPort]] = []  # installed once by apis._client (dependency inversion)
_process: list[ClientPort] = []  # apis.use(...): the client of every context that set none


def set_process_default(client: ClientPort | None) -> None:
    """``apis.use(...)``: the client of every thread and context that sets none itself."""
    _process[:] = [] if client is None else [client]


def set_default_factory(factory: Callable[[], ClientPort]) -> None:
    """Install how the process's default client is found (done by ``apis._client`` on import)."""
    _factory[:] = [factory]


def current() -> ClientPort:
    """The client of this context: the one ``apis.using(...)`` set, else the one ``apis.use(...)``
    set for the process, else the site's (found as every surface finds it)."""
    c = _current.get()
    if c is not None:
        return c
    if _process:
        return _process[0]
    if not _factory:
        raise RuntimeError("no client layer: import apis, not apis._kinds alone")
    return _factory[0]()


def set_current(client: ClientPort | None) -> contextvars.Token[ClientPort | None]:
    return _current.set(client)


def reset_current(token: contextvars.Token[ClientPort | None]) -> None:
    _current.reset(token)


class ClientRef:
    """The client an object was loaded or saved through, kept in the object's private state.

    It is not part of the object's value: copies share it (a deep copy does not copy a store
    connection), it compares equal to any other reference (two equal jobs loaded through two
    clients are equal), and it is dropped when the object is pickled."""

    __slots__ = ("client",)

    def __init__(self, client: ClientPort | None = None) -> None:
        self.client = client

    def __eq__(self, other: object) -> bool:
        return other is None or isinstance(other, ClientRef)

    def __hash__(self) -> int:
        return 0

    def __copy__(self) -> ClientRef:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> ClientRef:
        return self

    def __reduce__(self) -> tuple[type[ClientRef], tuple[()]]:
        return (ClientRef, ())

    def __repr__(self) -> str:
        return "ClientRef()" if self.client is None else f"ClientRef({self.client!r})"


def bind(obj: Any, client: ClientPort) -> Any:
    """Remember ``client`` as the one ``obj`` came through; returns ``obj``."""
    priv = obj.__pydantic_private__
    if priv is not None:
        priv["_client"] = ClientRef(client)
    return obj


def bind_all(objs: Iterable[Any], client: ClientPort) -> None:
    """``bind(o, client)`` for each of ``objs``, with one reference for them all (it is
    immutable; copies share theirs too)."""
    ref = ClientRef(client)
    for o in objs:
        priv = o.__pydantic_private__
        if priv is not None:
            priv["_client"] = ref


def bound_client(obj: Any) -> ClientPort | None:
    priv = getattr(obj, "__pydantic_private__", None)
    ref = priv.get("_client") if priv else None
    return ref.client if isinstance(ref, ClientRef) else None


def client_of(obj: Any) -> ClientPort:
    """The client to write ``obj`` through: the one that loaded it, else the current one."""
    return bound_client(obj) or current()


class _ObjectsDescriptor:
    """``Kind.objects``: the current client's manager of the kind."""

    def __get__(self, obj: Any, owner: type) -> Any:
        return current().manager(owner)


class ClientMixin:
    """``Kind.objects``, ``save()``, ``delete()`` and ``refresh_from_db()`` on a resource, each
    through the client that loaded the object, else the current one (:func:`current`)."""

    objects: ClassVar[Any] = _ObjectsDescriptor()
    DoesNotExist = DoesNotExist
    MultipleObjectsReturned = MultipleObjectsReturned

    if TYPE_CHECKING:
        metadata: Any
        __pydantic_private__: Any

    def _pending_fields(self) -> dict[str, Any]:
        priv = getattr(self, "__pydantic_private__", None) or {}
        pending: dict[str, Any] = priv.get("_pending") or {}
        return pending

    def _adopt(self, other: Any) -> None:
        """Take ``other``'s content in place (the caller keeps its reference)."""
        for name in type(self).model_fields:  # type: ignore[attr-defined]
            object.__setattr__(self, name, getattr(other, name))
        self._pending_fields().clear()

    def save(self) -> None:
        """Create the object (when it has no resourceVersion yet), or write the fields assigned
        since it was read, re-applied on the latest copy after a conflict. Refused with one
        ``apis.ApiError`` (Invalid, Conflict, NotFound...) and nothing written when it cannot be."""
        client_of(self).save(self)

    def delete(self) -> None:
        """Delete the object from the store (NotFound when it is gone already)."""
        client_of(self).delete(self)

    def refresh_from_db(self) -> None:
        """Re-read the object in place (every field, the resourceVersion included)."""
        client_of(self).refresh(self)
