"""Several sites on one store (docs/design.md, "Sites on a shared etcd").

* **A site is a namespace.**  Every key of a site's objects has its namespace in a fixed place
  (``/registry/<plural>/<ns>/...``, ``/index/<plural>/<index>/<ns>/...``), so an etcd role made
  of prefix permissions can let a site's controller manager and node agents write their own
  site's keys and nothing else (:func:`apis._roles.site_permissions`).  On a shared cluster each site is made
  with ``balsamctl init DIR --name polaris --namespace polaris``.
* **A job names its site** (``Job(..., site_name="polaris")`` / ``spec.site``): the Python client
  creates it in that Site's namespace (:func:`place_jobs`), and the registry refuses a job whose
  Site does not exist there (an admission compare in the create txn).
* **Balsam's Site API**: ``Site.objects.get(name=..., path=...)``, ``site.id``, ``site.path``
  (:class:`SiteManager`, :class:`SiteMixin`) and ``Job.objects.filter(site_id=...)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ._context import ClientPort, bind
from ._context import current as current_client
from ._errors import BadRequest, DoesNotExist, MultipleObjectsReturned
from ._kinds import Site
from ._registry import Registry

# --- Balsam's Site API ------------------------------------------------------------------------


def _path_matches(site_path: str, want: str) -> bool:
    """``path="my-site"`` matches ``/home/me/my-site``: equal, or its last components."""
    have, w = Path(site_path).parts, Path(want).parts
    return bool(w) and (have == w or have[-len(w):] == w)


class SiteManager:
    """``Site.objects``: the Sites of every namespace (there are few), filtered by ``name``/``id``,
    ``path`` and ``namespace``."""

    def __init__(self, client: ClientPort | Registry | None = None, filters: dict[str, Any] | None = None) -> None:
        self._client = client
        self._filters = dict(filters or {})

    @property
    def registry(self) -> Registry:
        """The registry of the client the Sites are read through."""
        c = self._client
        if isinstance(c, Registry):
            return c
        reg: Registry = (c if c is not None else current_client()).registry
        return reg

    def using(self, target: Any) -> SiteManager:
        """The same query on another store (a Registry or a Client)."""
        return SiteManager(target, self._filters)

    def all(self) -> SiteManager:
        """Every Site of every namespace."""
        return SiteManager(self._client, self._filters)

    def filter(self, **kw: Any) -> SiteManager:
        """Sites by ``name`` (or ``id``), ``path`` (the directory or its last components) and ``namespace``."""
        for k in kw:
            if k not in ("name", "id", "path", "namespace"):
                raise BadRequest(f"unknown filter {k!r} for sites (name, id, path, namespace)")
        return SiteManager(self._client, {**self._filters, **kw})

    def _fetch(self) -> list[Site]:
        f = self._filters
        ns = f.get("namespace")
        sites, _ = self.registry.list(Site, str(ns) if ns is not None else None)
        name = f.get("name", f.get("id"))
        found = [
            s for s in sites
            if (name is None or s.metadata.name == str(name))
            and ("path" not in f or _path_matches(s.spec.path, str(f["path"])))
        ]
        if self._client is not None and not isinstance(self._client, Registry):
            for s in found:
                bind(s, self._client)
        return found

    def __iter__(self) -> Iterator[Site]:
        """The matching Sites."""
        return iter(self._fetch())

    def __len__(self) -> int:
        """How many Sites match."""
        return len(self._fetch())

    def count(self) -> int:
        """How many Sites match."""
        return len(self._fetch())

    def first(self) -> Site | None:
        """The first matching Site, or None."""
        found = self._fetch()
        return found[0] if found else None

    def get(self, **kw: Any) -> Site:
        """The one Site matching ``kw`` (DoesNotExist / MultipleObjectsReturned otherwise)."""
        found = self.filter(**kw)._fetch()
        if not found:
            raise DoesNotExist(f"no Site matches {kw or self._filters}")
        if len(found) > 1:
            where = ", ".join(f"{s.metadata.namespace}/{s.metadata.name}" for s in found)
            raise MultipleObjectsReturned(f"{len(found)} Sites match {kw}: {where}; add namespace=")
        return found[0]


def site_namespace(registry: Registry, site_name: str, prefer: str | None = None) -> str | None:
    """The namespace of the Site named ``site_name``: ``prefer`` when it holds one, else the only
    namespace that does; None when none (or several) do."""
    if prefer is not None and registry.try_get(Site, site_name, prefer) is not None:
        return prefer
    found = {s.metadata.namespace for s in SiteManager(registry).filter(name=site_name)}
    return found.pop() if len(found) == 1 else None


def place_jobs(registry: Registry, jobs: Sequence[Any]) -> None:
    """Put each Job that names a site (``site_name=``) into that Site's namespace, unless its
    own namespace has a Site of that name.  A site that exists nowhere is left for admission to
    refuse."""
    cache: dict[tuple[str, str], str | None] = {}
    for job in jobs:
        site = getattr(getattr(job, "spec", None), "site", None)
        if getattr(job, "KIND", None) != "Job" or not site:
            continue
        ns = job.metadata.namespace
        key = (site, ns)
        if key not in cache:
            cache[key] = site_namespace(registry, site, ns)
        target = cache[key]
        if target is not None and target != ns:
            job.metadata.namespace = target
