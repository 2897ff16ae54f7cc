"""Batch allocations: the BatchJob reconciler, the elastic queue and the scheduler plugins.

* ``scheduler.py`` — the plugin interface (submit / status of many ids / cancel /
  partitions) and SchedulerError; ``slurm.py``, ``pbs.py`` and ``local.py`` — the plugins.
* ``script.py`` — batch script templates (one per scheduler, overridable per site).
* ``reconciler.py`` — BatchJob: pending_submission → queued → running → finished
  (or submit_failed); delete → pending_deletion → finished (cancelled in the scheduler).
* ``sizing.py`` + ``elastic.py`` — the elastic queue: BatchJobs sized to the runnable backlog.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from apis import BatchJob, Site

from .local import LocalScheduler, state_dir
from .pbs import PBSScheduler
from .scheduler import JobInfo, PartitionInfo, SchedulerError, SchedulerPlugin, SubmitRequest
from .slurm import SlurmScheduler


class UnsupportedScheduler:
    """A scheduler named by a Site that has no plugin: every call says so."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _no(self) -> SchedulerError:
        return SchedulerError("unsupported", f"scheduler {self.name!r} is not supported (use slurm, pbs or local)")

    def submit(self, req: SubmitRequest) -> str:
        raise self._no()

    def status(self, ids: Sequence[str]) -> dict[str, JobInfo]:
        raise self._no()

    def cancel(self, scheduler_id: str) -> None:
        raise self._no()

    def partitions(self) -> list[PartitionInfo]:
        raise self._no()


_lock = threading.Lock()
_plugins: dict[tuple[str, str, str], SchedulerPlugin] = {}


def scheduler_site(bj: BatchJob, site: Site) -> Site:
    """The Site as ``bj``'s scheduler sees it: the BatchJob's ``spec.scheduler``, when set,
    replaces the Site's (``up`` runs its allocation with ``local`` on any site)."""
    if bj.spec.scheduler is None or bj.spec.scheduler == site.spec.scheduler:
        return site
    return site.model_copy(update={"spec": site.spec.model_copy(update={"scheduler": bj.spec.scheduler})})


def plugin_for(site: Site) -> SchedulerPlugin:
    """The plugin of a site's scheduler (one instance per scheduler and site path)."""
    pbs = site.spec.pbs
    key = (site.spec.scheduler, site.spec.path, pbs.model_dump_json() if pbs else "")
    with _lock:
        found = _plugins.get(key)
        if found is not None:
            return found
        plugin: SchedulerPlugin
        if site.spec.scheduler == "slurm":
            plugin = SlurmScheduler()
        elif site.spec.scheduler == "pbs":
            pbs = site.spec.pbs
            plugin = PBSScheduler(pbs.system, pbs.place, pbs.filesystems) if pbs else PBSScheduler()
        elif site.spec.scheduler == "local":
            plugin = LocalScheduler(state_dir(Path(site.spec.path)))
        else:
            plugin = UnsupportedScheduler(site.spec.scheduler)
        _plugins[key] = plugin
        return plugin


__all__ = [
    "JobInfo",
    "LocalScheduler",
    "PBSScheduler",
    "PartitionInfo",
    "SchedulerError",
    "SchedulerPlugin",
    "SlurmScheduler",
    "SubmitRequest",
    "UnsupportedScheduler",
    "plugin_for",
    "scheduler_site",
]
