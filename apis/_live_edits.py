"""What may change on a live Job (issue 9), checked where every write passes
(``Registry.write``'s admission checks), so apply, edit, the Python client's ``save()``/``update()`` and the
operator all obey the same rule:

* labels, annotations, ``spec.priority``, ``spec.retry``, ``spec.suspend`` and
  ``spec.onParentFailure``: always;
* every other spec field (resources, app, parameters, workdir, data, transfers, parents,
  site): only while the job is not RUNNING. They take effect at the next placement. A write
  that changes them AND moves the job out of RUNNING in the same step (the seed's
  ``job.num_nodes = 16; job.state = "RESTART_READY"; job.save()``) is allowed: the node agent
  kills the running process, and the job is placed again with the new spec.

A refused write raises :class:`Invalid` naming the field (camelCase path) and the state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from ._errors import Invalid
from ._meta import Resource
from ._registry import ADMISSION_CHECKS
from ._states import JobState

#: Job spec fields (Python names) that may change in any state.
ALWAYS_MUTABLE = frozenset({"priority", "retry", "suspend", "on_parent_failure"})


def _alias(model: type[BaseModel], name: str) -> str:
    info = model.model_fields[name]
    return info.alias or name


def first_difference(a: Any, b: Any, path: str) -> str | None:
    """The camelCase path of the first field where ``a`` and ``b`` differ, or None."""
    if a == b:
        return None
    if isinstance(a, BaseModel) and type(a) is type(b):
        for name in type(a).model_fields:
            sub = first_difference(getattr(a, name), getattr(b, name), f"{path}.{_alias(type(a), name)}")
            if sub:
                return sub
        return path
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted({*a, *b}, key=str):
            if a.get(k) != b.get(k):
                return f"{path}.{k}"
    return path


def check_update(old: Resource, new: Resource) -> None:
    """Raise Invalid when ``new`` changes what may not change on ``old`` in its state."""
    if old.KIND != "Job":
        return
    old_spec, new_spec = old.spec, new.spec  # type: ignore[attr-defined]
    if old_spec is new_spec or old_spec == new_spec:
        return
    state = old.status.state  # type: ignore[attr-defined]
    if state != JobState.RUNNING or new.status.state != JobState.RUNNING:  # type: ignore[attr-defined]
        return
    for name in type(old_spec).model_fields:
        if name in ALWAYS_MUTABLE:
            continue
        path = first_difference(getattr(old_spec, name), getattr(new_spec, name),
                                f"spec.{_alias(type(old_spec), name)}")
        if path:
            raise Invalid(
                f'{old.resource_name()} "{old.name}" is invalid: {path}: Forbidden: may not be changed while the '
                f"job is {JobState.RUNNING.value} (labels, annotations, spec.priority, spec.retry and spec.suspend "
                "may; move the job to RESTART_READY in the same write, or change it after the run)"
            )


def admit_updates(_registry: object, _creates: object, pairs: Sequence[tuple[Resource, Resource]]) -> None:
    """The admission check ``Registry.write`` runs on every write (``ADMISSION_CHECKS``)."""
    for old, new in pairs:
        check_update(old, new)


if admit_updates not in ADMISSION_CHECKS:
    ADMISSION_CHECKS.append(admit_updates)
