"""Admission of Apps: a command template whose placeholder the shell would not read as one
bare word (inside quotes, ``$( )`` or backticks) is refused when the App is created or its
command changed, on every surface (apply, create, the Python client), before anything is
written. Apps stored before this check keep running as they are; editing their command
needs the safe form."""

from __future__ import annotations

from collections.abc import Sequence

from ._errors import Invalid
from ._kinds import App
from ._meta import Resource
from ._registry import ADMISSION_CHECKS, Registry
from ._templates import TemplateError, check_placeholder_quoting


def _check(app: App) -> None:
    if not app.spec.command:
        return
    try:
        check_placeholder_quoting(app.spec.command)
    except TemplateError as e:
        raise Invalid(f'{App.resource_name()} "{app.name}" is invalid: spec.command: {e}') from None


def admit_apps(_registry: Registry, creates: Sequence[Resource], pairs: Sequence[tuple[Resource, Resource]]) -> None:
    """The admission check ``Registry.write`` runs on every write (``ADMISSION_CHECKS``)."""
    if App in set(map(type, creates)):
        for obj in creates:
            if type(obj) is App:
                _check(obj)
    for old, new in pairs:
        if type(new) is App and old.spec.command != new.spec.command:  # type: ignore[attr-defined]
            _check(new)


if admit_apps not in ADMISSION_CHECKS:
    ADMISSION_CHECKS.append(admit_apps)
