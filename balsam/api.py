"""Balsam's ``balsam.api`` names, backed by balsamctl's resource client (:mod:`apis`).

    from balsam.api import ApplicationDefinition, Job, site_config

    class Adder(ApplicationDefinition):
        site = "laptop"

        def run(self, x, y):
            return x + y

    job = Adder.submit("test/123", x=3, y=7)
    assert job.result() == 10

The store is found the way every balsamctl surface finds it: ``BALSAM_STORE``, else the site
of ``BALSAM_SITE_PATH`` or of the current directory; ``with apis.using(url_or_registry):``
(or ``apis.use(...)`` for the whole process) chooses another.

Balsam's fifteen names: ``Site``, ``ApplicationDefinition``, ``BatchJob``, ``Job``, ``Session``
(a node agent's registration), ``TransferItem`` (one item of a transfer task), ``EventLog``
(the jobs' state changes), ``JobTransferItem``, ``JobState``, ``AppParameter``,
``TransferDirection``, ``TransferSlot``, ``JobMode``, ``BatchJobPartition`` and ``site_config``.
"""

from __future__ import annotations

from apis import (
    App,
    ApplicationDefinition,
    AppParameter,
    BatchJob,
    Job,
    JobFailed,
    JobState,
    NoResult,
    Site,
    TransferSlot,
    TransferTask,
    site_config,
    use,
    using,
)
from apis._balsam_views import Session, TransferItem
from apis._kinds import BatchJobPartition, JobMode, JobTransferItem, TransferDirection
from apis.analytics import EventLogQuery


class EventLog:
    """Balsam's ``EventLog``: ``EventLog.objects.filter(tags=..., to_state=...)`` yields the
    state changes recorded in the jobs' ``status.history`` (see ``balsam.analytics``)."""

    objects = EventLogQuery()


__all__ = [
    # Balsam's fifteen
    "Site",
    "ApplicationDefinition",
    "BatchJob",
    "Job",
    "Session",
    "TransferItem",
    "EventLog",
    "JobTransferItem",
    "JobState",
    "AppParameter",
    "TransferDirection",
    "TransferSlot",
    "JobMode",
    "BatchJobPartition",
    "site_config",
    # balsamctl's additions
    "App",
    "JobFailed",
    "NoResult",
    "TransferTask",
    "use",
    "using",
]
