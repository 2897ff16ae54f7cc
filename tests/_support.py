"""Helpers shared by the suites (not fixtures)."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def skip_or_fail(reason: str) -> NoReturn:
    """A real service the test needs is missing: skip here, fail in CI (``CI`` set)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so real services are required)", pytrace=False)
    pytest.skip(reason)
