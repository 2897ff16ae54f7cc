"""The demo campaign's Python apps (scripts/demo copies this file into the site's apps/)."""

from __future__ import annotations

import time

from balsam.api import ApplicationDefinition


class Square(ApplicationDefinition):
    """A Python app: run() returns a value, kept in the job's status.result."""

    def run(self, x):
        time.sleep(0.5)
        return x * x
