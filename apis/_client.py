"""The Python resource client (Balsam's API): a :class:`Client` bound to a registry, its
managers (``Kind.objects``), query sets, futures and watches.

Layers, importing one way: the model (``_meta``, ``_kinds``, ``_balsam``, ``_states``...; no
I/O) → the registry (``_registry``: typed store access that knows no concrete kind) → the
client (this module, ``_query``, ``_futures``, ``_watch``, ``_sites``, ``_appdef``). The model
reaches its client through ``apis._context`` only: the client that loaded the object, else the
one of ``with apis.using(...)``, else the process's (``apis.use(...)``, else the site's).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import store as st

from . import _context
from ._balsam import apply_fields
from ._config import default_namespace as site_namespace_default
from ._config import load_site_config, open_registry, resolve_store_url
from ._context import ClientMixin, bind, bind_all
from ._errors import Conflict, DoesNotExist, MultipleObjectsReturned
from ._futures import as_completed, wait, wait_one
from ._query import QuerySet
from ._registry import Registry
from ._sites import SiteManager, place_jobs

if TYPE_CHECKING:
    import os

    from ._futures import WaitResult
    from ._meta import Resource

R = TypeVar("R", bound="Resource")

__all__ = ["BULK_BATCH", "Client", "ClientMixin", "DoesNotExist", "Manager", "MultipleObjectsReturned",
           "current_client", "default_namespace", "default_registry", "set_create_interceptor", "use", "using"]

BULK_BATCH = 10_000  # objects per store transaction in bulk_create

# Per registry: the most objects per create txn its store accepted once it refused more.
_fits: weakref.WeakKeyDictionary[Registry, int] = weakref.WeakKeyDictionary()

#: Set in a hook's process (apis._pyexec): Jobs created there are handed to it instead of
#: being written, so that the hook reconciler creates them in the same write as the hook's step.
#: It returns the objects as created (named), or None to write them as usual.
_create_interceptor: Callable[[list[Any]], list[Any] | None] | None = None


def set_create_interceptor(fn: Callable[[list[Any]], list[Any] | None] | None) -> None:
    global _create_interceptor
    _create_interceptor = fn


class Client:
    """A registry and a namespace: what ``Kind.objects``, ``save()`` and the futures of the
    objects it loads work through.

    ``Client(registry)``, ``Client("sqlite:///site/store.db")`` (opened once per process and
    URL) or ``Client()`` (the store of ``BALSAM_STORE`` or of the site, found when first used).
    ``namespace`` None: ``apis.default_namespace()``, read when used."""

    def __init__(self, target: Registry | str | None = None, namespace: str | None = None) -> None:
        self._registry = target if isinstance(target, Registry) else None
        self._url = target if isinstance(target, str) else None
        self._namespace = namespace

    @property
    def registry(self) -> Registry:
        """The registry this client reads and writes (opened on first use)."""
        if self._registry is not None:
            return self._registry
        return open_registry(self._url or resolve_store_url())

    @property
    def namespace(self) -> str:
        """The namespace new objects go to and queries read, when they name none."""
        return self._namespace if self._namespace is not None else site_namespace_default()

    def __repr__(self) -> str:
        where = self._url or (f"registry {id(self._registry):#x}" if self._registry is not None else "the site's store")
        return f"<Client {where} namespace={self._namespace or '(default)'}>"

    # --- what the model asks of its client (apis._context.ClientPort) -------------------

    def manager(self, model: type[Any]) -> Any:
        """``model.objects`` on this client (``Site.objects``: the Sites of every namespace)."""
        if getattr(model, "KIND", None) == "Site":
            return SiteManager(self)
        return Manager(model, self, explicit=False)

    def save(self, obj: Any) -> None:
        """Create ``obj`` or write the fields assigned since it was read (see ``ClientMixin.save``)."""
        kind = type(obj)
        if not obj.metadata.resource_version:
            self.in_namespace(obj)
            captured = _create_interceptor([obj]) if _create_interceptor is not None else None
            if captured is not None:  # in a hook's process: created with the hook's step
                obj._adopt(captured[0])
                return
            reg = self.registry
            if kind.KIND == "Job":
                place_jobs(reg, [obj])  # a job naming its site goes to that Site's namespace
            obj._adopt(reg.create(obj))
            bind(obj, self)
            return
        reg = self.registry
        pending = dict(obj._pending_fields())
        if pending:
            obj._adopt(reg.mutate(kind, obj.metadata.name, lambda j: apply_fields(j, pending), obj.metadata.namespace))
            bind(obj, self)
            return
        cur = reg.get(kind, obj.metadata.name, obj.metadata.namespace)
        if cur.metadata.resource_version != obj.metadata.resource_version:
            raise Conflict(kind.resource_name(), obj.metadata.name)
        obj._adopt(reg.update(cur, obj))
        bind(obj, self)

    def delete(self, obj: Any) -> None:
        """Delete ``obj`` by name (NotFound when it is gone)."""
        self.registry.delete(type(obj), obj.metadata.name, obj.metadata.namespace)

    def refresh(self, obj: Any) -> None:
        """Re-read ``obj`` in place."""
        obj._adopt(self.registry.get(type(obj), obj.metadata.name, obj.metadata.namespace))
        bind(obj, self)

    def wait_one(self, job: Any, timeout: float | None) -> None:
        """Block until ``job`` is terminal (updated in place); TimeoutError past ``timeout``."""
        wait_one(job, timeout, registry=self.registry)

    def in_namespace(self, obj: Any) -> None:
        """A new object whose namespace nobody named goes to this client's namespace (the
        site's), not to ``default``: the site would never look there."""
        meta = obj.metadata
        if "namespace" not in meta.model_fields_set:
            ns = self.namespace
            if ns != meta.namespace:
                meta.namespace = ns


def as_client(target: Client | Registry | str | None, namespace: str | None = None) -> Client:
    """A Client from a Client, a Registry, a store URL, or None (the current client)."""
    if isinstance(target, Client):
        if namespace is None or namespace == target._namespace:
            return target
        return Client(target._registry or target._url, namespace)
    if target is None:
        cur = current_client()
        return cur if namespace is None else Client(cur._registry or cur._url, namespace)
    return Client(target, namespace)


def current_client() -> Client:
    """The client ``Kind.objects`` uses here (see ``apis._context.current``)."""
    c = _context.current()
    assert isinstance(c, Client)
    return c


def _site_default() -> Client:
    return _SITE_CLIENT


_SITE_CLIENT = Client()  # holds no state: its store and namespace are found when used
_context.set_default_factory(_site_default)


@contextlib.contextmanager
def using(target: Client | Registry | str, namespace: str | None = None) -> Iterator[Client]:
    """``with apis.using("etcd://host:2379"):`` (or a Registry, or a Client): ``Kind.objects``,
    ``save()`` and the futures in this block (this thread, this asyncio task) work through that
    store; objects loaded there keep working through it after the block."""
    client = as_client(target, namespace)
    token = _context.set_current(client)
    try:
        yield client
    finally:
        _context.reset_current(token)


def use(
    store_url: str | None = None, site: str | os.PathLike[str] | None = None, namespace: str | None = None
) -> Registry:
    """Point the Python client of the whole process (every thread that set no client with
    ``apis.using``) at a store, and at a namespace: ``namespace``, else the site's ``namespace:``
    from settings.yml when ``site`` is given. Returns the registry."""
    url = resolve_store_url(store_url, site)
    if namespace is None and site is not None:
        namespace = load_site_config(site).namespace
    client = Client(url, namespace)
    reg = client.registry
    _context.set_process_default(client)
    return reg


def default_namespace() -> str:
    """The namespace the current client reads and writes when none is named: the one given to
    ``apis.using``/``apis.use``, else ``BALSAM_NAMESPACE``, else the site's ``namespace:``,
    else ``default``."""
    return current_client().namespace


def default_registry() -> Registry:
    """The registry of the current client."""
    return current_client().registry


class Manager(Generic[R]):
    """``Kind.objects``: entry point of queries and bulk writes, on one client."""

    def __init__(self, model: type[R], client: Client | Registry | str | None = None, *,
                 explicit: bool | None = None) -> None:
        self.model = model
        self.client = as_client(client)
        # Chosen with using() (or given): its store wins over the jobs' own in wait/as_completed.
        self._explicit = (client is not None) if explicit is None else explicit

    @property
    def registry(self) -> Registry:
        """The registry this manager works through."""
        return self.client.registry

    def using(self, target: Client | Registry | str, namespace: str | None = None) -> Manager[R]:
        """The same manager on another store (a Registry, a store URL or a Client): queries,
        ``create``, ``bulk_create``, ``wait`` and ``as_completed`` all go there."""
        return Manager(self.model, as_client(target, namespace), explicit=True)

    def _qs(self) -> QuerySet[R]:
        return QuerySet(self.model, self.client)

    def all(self) -> QuerySet[R]:
        """Every object of the kind in the client's namespace, as a lazy query."""
        return self._qs()

    def filter(self, **kw: Any) -> QuerySet[R]:
        """Objects matching every keyword, as a lazy query (nothing is read until it is
        iterated, counted or sliced). Jobs: ``id``, ``state`` (one or a list), ``tags``
        (``{"k": "v"}`` or ``["k:v"]``), ``app_id``, ``parent_id``, ``site_name``, ``site_id``,
        ``workdir``, ``workdir__contains``, ``parameters``, ``last_update__gt/__lt``,
        ``return_code``, ``node``, ``state__ne``; every kind: ``name``, ``labels``,
        ``selector`` (kubectl's ``-l``), ``namespace``. An unknown keyword is refused
        (``apis.BadRequest``)."""
        return self._qs().filter(**kw)

    def exclude(self, **kw: Any) -> QuerySet[R]:
        """Objects matching none of the keywords (the ``filter`` keywords)."""
        return self._qs().exclude(**kw)

    def order_by(self, *fields: str) -> QuerySet[R]:
        """Every object, ordered by ``fields`` (``-field`` descending); an unknown field is refused."""
        return self._qs().order_by(*fields)

    def get(self, **kw: Any) -> R:
        """The one object matching ``kw``: ``Kind.DoesNotExist`` when none does,
        ``Kind.MultipleObjectsReturned`` when several do."""
        return self._qs().get(**kw)

    def count(self) -> int:
        """How many objects of the kind the namespace holds (read from the store's index)."""
        return self._qs().count()

    def first(self) -> R | None:
        """The first object in the default order (None when there is none)."""
        return self._qs().first()

    def create(self, **kw: Any) -> R:
        """Build an object from Balsam's keywords (``Job.objects.create(app_id=..., workdir=...)``),
        validate and save it; returns it. Refused whole (``apis.Invalid``), nothing written."""
        obj = self.model(**kw)
        self.client.save(obj)
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
        client = self.client
        ns = client.namespace
        jobs = self.model.KIND == "Job"
        sited = []  # jobs that name a site
        for obj in items:  # client.in_namespace(obj), the namespace asked once per call
            meta = obj.metadata
            if "namespace" not in meta.__pydantic_fields_set__ and ns != meta.namespace:
                meta.namespace = ns
            if jobs and getattr(getattr(obj, "spec", None), "site", None):
                sited.append(obj)
        out: list[R] = []
        reg = client.registry
        if sited:
            place_jobs(reg, sited)  # a job naming its site goes to that Site's namespace
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
        bind_all(out, client)
        return out

    # --- futures (Python App Futures in the seed), built on the watch of apis._watch

    def wait(self, jobs: Iterable[Any], return_when: str = "ALL_COMPLETED", timeout: float | None = None,
             poll_interval: float | None = None) -> WaitResult:
        """Like ``concurrent.futures.wait``: ``.done`` and ``.not_done`` lists of the jobs.
        ``return_when``: ``FIRST_COMPLETED``, ``FIRST_EXCEPTION`` or ``ALL_COMPLETED``.
        ``poll_interval`` is accepted for Balsam's signature; nothing polls."""
        return wait(list(jobs), return_when=return_when, timeout=timeout, registry=self._jobs_registry(jobs))

    def as_completed(self, jobs: Iterable[Any], timeout: float | None = None) -> Iterator[Any]:
        """Yield each job once, as it reaches JOB_FINISHED or FAILED (in that order);
        ``concurrent.futures.TimeoutError`` past ``timeout`` seconds."""
        return as_completed(list(jobs), timeout=timeout, registry=self._jobs_registry(jobs))

    def _jobs_registry(self, jobs: Iterable[Any]) -> Registry | None:
        """This manager's registry when it was chosen with ``using``; else None (the jobs' own)."""
        return self.client.registry if self._explicit else None


def names_of(objs: Sequence[Any]) -> list[str]:
    return [o.metadata.name for o in objs]
