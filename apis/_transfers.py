"""Data transfers in the resource model: what a Job's ``transfers`` mean, checked when it is
written, and planned into transfer items for the transfer reconcilers.

A Job fills its App's transfer slots with ``{slot: "alias:/absolute/path"}``; the alias is a
key of its Site's ``transferLocations`` (``globus://<uuid>``, ``file://``, ``http(s)://host``).
A stage-in item copies ``alias:/path`` to ``<site>/data/<workdir>/<slot.localPath>``; a
stage-out item copies that local path to ``alias:/path``.

:func:`admit_jobs` is the registry's admission check (every surface writes through it): the
slot exists on the App, the alias on the Site, every ``required`` slot is filled, the local
path stays inside the workdir, and HTTP is used for stage-in only. One error, nothing written.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from ._errors import Invalid
from ._kinds import App, Job, Site, created_jobs
from ._locations import SCHEMES, check_location, provider_of
from ._meta import Resource
from ._registry import ADMISSION_CHECKS, Registry

__all__ = ["SCHEMES", "check_location", "provider_of"]  # re-exported (defined with the model)

Direction = Literal["in", "out"]

def split_transfer(value: str) -> tuple[str, str]:
    """``"alias:/abs/path"`` → (alias, path)."""
    alias, _, path = value.partition(":")
    return alias, path


def job_local_path(site_path: str, workdir: str, local_path: str) -> str:
    """The absolute path of a slot's file in the job's workdir."""
    return posixpath.normpath(posixpath.join(site_path, "data", workdir, local_path))


def site_name_for(job: Job, app: App | None, site_names: Iterable[str]) -> str | None:
    """The Site whose aliases a job's transfers use: ``spec.site``, else its App's, else the
    namespace's only Site (None when that is ambiguous or there is none)."""
    if job.spec.site:
        return job.spec.site
    if app is not None and app.spec.site:
        return app.spec.site
    names = list(dict.fromkeys(site_names))
    return names[0] if len(names) == 1 else None


@dataclass(frozen=True, slots=True)
class PlannedItem:
    """One filled slot of one job, resolved against its App and Site."""

    job: str
    job_uid: str | None
    slot: str
    direction: Direction
    location: str  # the alias's URL
    remote_path: str
    local_path: str  # absolute, inside the job's workdir
    recursive: bool

    @property
    def source(self) -> str:
        return self.remote_path if self.direction == "in" else self.local_path

    @property
    def destination(self) -> str:
        return self.local_path if self.direction == "in" else self.remote_path


def plan_items(job: Job, app: App, site: Site, direction: Direction) -> list[PlannedItem]:
    """The transfer items of ``job``'s filled slots of one direction (slots or aliases that
    do not resolve are left out: admission refused them when the job was written)."""
    out: list[PlannedItem] = []
    locations = site.spec.transfer_locations
    for slot_name, value in job.spec.transfers.items():
        slot = app.spec.transfers.get(slot_name)
        if slot is None or slot.direction != direction:
            continue
        alias, path = split_transfer(value)
        location = locations.get(alias)
        if location is None:
            continue
        out.append(PlannedItem(job.name, job.metadata.uid, slot_name, direction, location, path,
                               job_local_path(site.spec.path, job.spec.workdir, slot.local_path), slot.recursive))
    return out


# --- admission ---------------------------------------------------------------------------


def _invalid(job: Job, detail: str) -> Invalid:
    name = job.metadata.name or f"{job.metadata.generate_name or ''}*"
    return Invalid(f'{Job.resource_name()} "{name}" is invalid: {detail}')


def check_job_transfers(job: Job, app: App, site: Site | None, site_hint: str) -> None:
    """Raise Invalid with the first thing wrong with ``job``'s transfers against its App and
    Site. ``site`` None: no Site could be resolved (``site_hint`` says why)."""
    slots = app.spec.transfers
    for slot_name, value in job.spec.transfers.items():
        where = f'spec.transfers.{slot_name}: Invalid value: "{value}"'
        slot = slots.get(slot_name)
        if slot is None:
            known = ", ".join(sorted(slots)) or "none"
            raise _invalid(job, f'{where}: App "{app.name}" has no transfer slot "{slot_name}" (slots: {known})')
        local = posixpath.normpath(posixpath.join(job.spec.workdir, slot.local_path))
        if local == ".." or local.startswith("../") or posixpath.isabs(local):
            raise _invalid(job, f'{where}: the slot\'s localPath "{slot.local_path}" leaves the job\'s workdir')
        alias, path = split_transfer(value)
        if "\x00" in path:
            raise _invalid(job, f"{where}: the path contains a NUL byte")
        if site is None:
            raise _invalid(job, site_hint)
        location = site.spec.transfer_locations.get(alias)
        if location is None:
            known = ", ".join(sorted(site.spec.transfer_locations)) or "none"
            raise _invalid(job, f'{where}: Site "{site.name}" has no transfer location "{alias}" '
                                f"(locations: {known})")
        provider = provider_of(location)
        if provider == "http" and slot.direction == "out":
            raise _invalid(job, f"{where}: stage-out over {location.partition('://')[0]}:// is not supported "
                                "(HTTP locations are for stage-in only)")
        if provider == "http" and slot.recursive:
            raise _invalid(job, f"{where}: slot \"{slot_name}\" is recursive (a directory), which HTTP "
                                "cannot list; use a globus:// or file:// location")
        if provider == "globus" and not site.spec.globus_endpoint_id:
            raise _invalid(job, f'{where}: Site "{site.name}" has no spec.globusEndpointId (its own Globus '
                                "collection), needed to stage with globus://")
    for slot_name, slot in slots.items():
        if slot.required and slot_name not in job.spec.transfers:
            what = f" ({slot.description})" if slot.description else ""
            raise _invalid(job, f'spec.transfers.{slot_name}: Required value: App "{app.name}" requires '
                                f"{'stage-in' if slot.direction == 'in' else 'stage-out'} slot "
                                f'"{slot_name}"{what}')


def admit_jobs(registry: Registry, creates: Sequence[Resource],
               updates: Sequence[tuple[Resource, Resource]]) -> None:
    """The registry's admission check for transfers: every created Job, and every updated Job
    whose transfers, app or site changed, against its App and Site (read once per name; the
    same write's own Apps and Sites count). An App that does not exist is left to the
    registry's own "app exists" check."""
    jobs, others = created_jobs(creates)
    for old, new in updates:
        if isinstance(new, Job) and isinstance(old, Job) and new.spec is not old.spec and (
            new.spec.transfers != old.spec.transfers or new.spec.app != old.spec.app
            or new.spec.site != old.spec.site
        ):
            jobs.append(new)
    if not jobs:
        return
    # this write's own Apps and Sites win
    written = [*others, *(n for _, n in updates)]
    batch_apps = {(o.metadata.namespace, o.name): o for o in written if isinstance(o, App)}
    batch_sites = {(o.metadata.namespace, o.name): o for o in written if isinstance(o, Site)}
    apps: dict[tuple[str, str], App | None] = {}
    requires: dict[tuple[str, str], bool] = {}  # the App has a required slot
    sites: dict[tuple[str, str], Site | None] = {}
    site_names: dict[str, list[str]] = {}
    for job in jobs:
        ns = job.metadata.namespace
        akey = (ns, job.spec.app)
        if akey not in apps:
            apps[akey] = app = batch_apps.get(akey) or registry.try_get(App, job.spec.app, ns)  # type: ignore[assignment]
            requires[akey] = app is not None and any(s.required for s in app.spec.transfers.values())
        app = apps[akey]
        if app is None or (not job.spec.transfers and not requires[akey]):
            continue
        site: Site | None = None
        hint = ""
        if job.spec.transfers:
            if ns not in site_names and not (job.spec.site or app.spec.site):
                site_names[ns] = [*registry.names(Site, ns), *(n for (sns, n) in batch_sites if sns == ns)]
            name = site_name_for(job, app, site_names.get(ns, ()))
            if name is None:
                n = len(set(site_names.get(ns, ())))
                hint = (f'spec.site: Required value: transfers need a Site to resolve their aliases, and '
                        f'namespace "{ns}" has ' + ("none" if n == 0 else f"{n}; name one in spec.site"))
            else:
                skey = (ns, name)
                if skey not in sites:
                    sites[skey] = batch_sites.get(skey) or registry.try_get(Site, name, ns)  # type: ignore[assignment]
                site = sites[skey]
                if site is None:
                    hint = f'spec.site: Not found: "{name}"'
        check_job_transfers(job, app, site, hint)


if admit_jobs not in ADMISSION_CHECKS:
    ADMISSION_CHECKS.append(admit_jobs)
