"""The one deadline every positive wait in the tests uses.

A test polls for a state it expects (a job RUNNING, a process gone, a line printed) until
``DEADLINE`` seconds have passed. The deadline only bounds how long a broken run takes to
fail: a passing run returns as soon as the state is reached, so a generous value costs
nothing, and a short one makes the outcome depend on how loaded the machine is (the lead's
suites failed at load 40-60 on 2 cores with 20-30 s waits). ``BALSAM_TEST_DEADLINE``
overrides it (seconds). Negative checks ("no line within 0.5 s") do not use it.
"""

from __future__ import annotations

import os

DEADLINE = float(os.environ.get("BALSAM_TEST_DEADLINE", "180"))
