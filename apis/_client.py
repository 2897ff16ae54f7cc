"""The Python resource client: ``Kind.objects`` and ``obj.save()/delete()`` (Balsam's API)."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import store as st

from ._errors import ApiError, Conflict
from ._sites import place_jobs

if TYPE_CHECKING:
    from ._meta import Resource
    from ._query import QuerySet
    from ._registry import Registry

R = TypeVar("R", bound="Resource")

BULK_BATCH = 10_000  # objects per store transaction in bulk_create

# Per registry: the most objects per create txn its store accepted once it refused more.
_fits: weakref.WeakKeyDictionary[Registry, int] = weakref.WeakKeyDictionary()


class DoesNotExist(ApiError):
    reason = "NotFound"


class MultipleObjectsReturned(ApiError):
    reason = "Conflict"


#: Set in a hook's process (apis._pyexec): Jobs created there are handed to it instead of
#: being written, so that the hook reconciler creates them in the same write as the hook's step.
#: It returns the objects as created (named), or None to write them as usual.
_create_interceptor: Callable[[list[Any]], list[Any] | None] | None = None


def set_create_interceptor(fn: Callable[[list[Any]], list[Any] | None] | None) -> None:
    global _create_interceptor
    _create_interceptor = fn


def _registry() -> Registry:
    from ._config import default_registry

    return default_registry()


def _in_default_namespace(obj: Any) -> None:
    """A new object whose namespace nobody named goes to the site's (apis.default_namespace),
    not to ``default``: the site would never look there."""
    meta = obj.metadata
    if "namespace" not in meta.model_fields_set:
        from ._config import default_namespace

        ns = default_namespace()
        if ns != meta.namespace:
            meta.namespace = ns


class Manager(Generic[R]):
    """``Kind.objects``: entry point of queries and bulk writes."""

    def __init__(self, model: type[R], registry: Registry | None = None) -> None:
        self.model = model
        self._registry = registry

    @property
    def registry(self) -> Registry:
        return self._registry or _registry()

    def using(self, registry: Registry) -> Manager[R]:
        return Manager(self.model, registry)

    def _qs(self) -> QuerySet[R]:
        from ._query import QuerySet

        return QuerySet(self.model, self._registry)

    def all(self) -> QuerySet[R]:
        return self._qs()

    def filter(self, **kw: Any) -> QuerySet[R]:
        return self._qs().filter(**kw)

    def exclude(self, **kw: Any) -> QuerySet[R]:
        return self._qs().exclude(**kw)

    def order_by(self, *fields: str) -> QuerySet[R]:
        return self._qs().order_by(*fields)

    def get(self, **kw: Any) -> R:
        return self._qs().get(**kw)

    def count(self) -> int:
        return self._qs().count()

    def create(self, **kw: Any) -> R:
        obj = self.model(**kw)
        obj.save()  # type: ignore[attr-defined]
        return obj

    def bulk_create(self, objs: Iterable[R], batch_size: int = BULK_BATCH) -> list[R]:
        """Create many objects: one store transaction per ``batch_size`` (fewer where the store
        refuses a txn that big), in the order given; returns NEW objects (the inputs are left
        untouched, as in Balsam). Each object is created whole with its index keys; when a
        later txn fails, the objects of the earlier ones stay created."""
        items = list(objs)
        if _create_interceptor is not None:
            captured = _create_interceptor(items)
            if captured is not None:
                return captured
        for obj in items:
            _in_default_namespace(obj)
        out: list[R] = []
        reg = self.registry
        if self.model.KIND == "Job":
            place_jobs(reg, items)  # a job naming its site goes to that Site's namespace
        i = 0
        while i < len(items):
            size = min(batch_size, _fits.get(reg, batch_size))
            try:
                out.extend(reg.create_many(items[i : i + size]))
            except st.TooLarge:
                # Over the server's limits (an etcd run with its defaults: 128 ops per txn,
                # 1.5 MiB per request): half as many objects per txn, each object still
                # written with its index keys in one txn (docs/design.md, "bulk create").
                if size == 1:
                    raise
                _fits[reg] = max(1, size // 2)
                continue
            i += size
        return out


    # --- futures (Python App Futures in the seed): they wait on ONE store watch per process

    def wait(self, jobs: Iterable[Any], return_when: str = "ALL_COMPLETED", timeout: float | None = None,
             poll_interval: float | None = None) -> Any:
        """Like ``concurrent.futures.wait``: ``.done`` and ``.not_done`` lists of the jobs.
        ``return_when``: ``FIRST_COMPLETED``, ``FIRST_EXCEPTION`` or ``ALL_COMPLETED``.
        ``poll_interval`` is accepted for Balsam's signature; nothing polls."""
        from ._futures import wait

        return wait(list(jobs), return_when=return_when, timeout=timeout)

    def as_completed(self, jobs: Iterable[Any], timeout: float | None = None) -> Iterator[Any]:
        """Yield each job once, as it reaches JOB_FINISHED or FAILED (in that order);
        ``concurrent.futures.TimeoutError`` past ``timeout`` seconds."""
        from ._futures import as_completed

        return as_completed(list(jobs), timeout=timeout)


class _ManagerDescriptor:
    def __get__(self, obj: Any, owner: type[Resource]) -> Manager[Any]:
        return Manager(owner)


class ClientMixin:
    """``save()``, ``delete()``, ``refresh_from_db()`` and ``Kind.objects`` on a resource."""

    objects: ClassVar[Any] = _ManagerDescriptor()
    DoesNotExist = DoesNotExist
    MultipleObjectsReturned = MultipleObjectsReturned

    if TYPE_CHECKING:
        metadata: Any
        __pydantic_private__: Any

        def model_copy(self, *, update: Any = None, deep: bool = False) -> Any: ...

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
        """Create the object, or write the fields assigned since it was read
        (re-applied on the latest copy after a conflict)."""
        reg = _registry()
        kind = type(self)
        if not self.metadata.resource_version:
            _in_default_namespace(self)
            captured = _create_interceptor([self]) if _create_interceptor is not None else None
            if captured is not None:
                self._adopt(captured[0])
                return
            if kind.KIND == "Job":  # type: ignore[attr-defined]
                place_jobs(reg, [self])  # a job naming its site goes to that Site's namespace
            self._adopt(reg.create(self))  # type: ignore[arg-type, type-var]
            return
        pending = dict(self._pending_fields())
        if pending:
            from ._balsam import apply_fields

            self._adopt(reg.mutate(kind, self.metadata.name, lambda j: apply_fields(j, pending),  # type: ignore[arg-type, return-value, type-var]
                                   self.metadata.namespace))
            return
        cur = reg.get(kind, self.metadata.name, self.metadata.namespace)  # type: ignore[arg-type]
        if cur.metadata.resource_version != self.metadata.resource_version:
            raise Conflict(kind.resource_name(), self.metadata.name)  # type: ignore[attr-defined]
        self._adopt(reg.update(cur, self))  # type: ignore[arg-type]

    def delete(self) -> None:
        reg = _registry()
        reg.delete(type(self), self.metadata.name, self.metadata.namespace)  # type: ignore[arg-type]

    def refresh_from_db(self) -> None:
        reg = _registry()
        self._adopt(reg.get(type(self), self.metadata.name, self.metadata.namespace))  # type: ignore[arg-type]


def names_of(objs: Sequence[Any]) -> list[str]:
    return [o.metadata.name for o in objs]
