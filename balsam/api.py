"""Balsam's ``balsam.api`` names, backed by balsamctl's resource client (:mod:`apis`).

    from balsam.api import ApplicationDefinition, Job, site_config

    class Adder(ApplicationDefinition):
        site = "laptop"

        def run(self, x, y):
            return x + y

    job = Adder.submit("test/123", x=3, y=7)
    assert job.result() == 10

The store is found the way every balsamctl surface finds it: ``BALSAM_STORE``, else the site
of ``BALSAM_SITE_PATH`` or of the current directory (``apis.use(...)`` to choose another).
"""

from __future__ import annotations

from apis import (
    App,
    ApplicationDefinition,
    BatchJob,
    Job,
    JobFailed,
    NoResult,
    Site,
    TransferTask,
    site_config,
    use,
)
from apis.analytics import EventLogQuery


class EventLog:
    """Balsam's ``EventLog``: ``EventLog.objects.filter(tags=..., to_state=...)`` yields the
    state changes recorded in the jobs' ``status.history`` (see ``balsam.analytics``)."""

    objects = EventLogQuery()

__all__ = [
    "App",
    "ApplicationDefinition",
    "BatchJob",
    "EventLog",
    "Job",
    "JobFailed",
    "NoResult",
    "Site",
    "TransferTask",
    "site_config",
    "use",
]
