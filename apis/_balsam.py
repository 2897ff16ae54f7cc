"""Balsam's names on ``Job``: the constructor keywords and attributes of the seed.

``Job(app_id="Hello", workdir="test/1", parameters={...}, tags={...}, num_nodes=2)`` builds
the resource; ``job.state``, ``job.workdir``, ``job.data``... read it, and assigning one of
them records the change so that ``job.save()`` writes only the fields that were assigned
(the seed's "reassign job.data" rule), re-applied on the latest copy if the job moved.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._context import client_of
from ._errors import BadRequest
from ._lifecycle import transition
from ._meta import validate_label_key, validate_label_value
from ._outcome import JobFailed, outcome
from ._outcome import NoResult as _NoResult
from ._states import TERMINAL

if TYPE_CHECKING:
    from ._kinds import Job
    from ._query import QuerySet

RESOURCE_FIELDS = (
    "num_nodes",
    "ranks_per_node",
    "threads_per_rank",
    "threads_per_core",
    "gpus_per_rank",
    "node_packing_count",
    "launch_params",
    "wall_time_min",
)
SPEC_FIELDS = {
    "app_id": "app",
    "app_name": "app",
    "app": "app",
    "site_name": "site",
    "site": "site",
    "workdir": "workdir",
    "parameters": "parameters",
    "data": "data",
    "parent_ids": "parents",
    "parents": "parents",
    "transfers": "transfers",
    "priority": "priority",
    "retry": "retry",
    "on_parent_failure": "on_parent_failure",
    "suspend": "suspend",
}
META_FIELDS = {"name", "namespace", "tags", "labels", "annotations", "generate_name"}
_NOT_DNS = re.compile(r"[^a-z0-9-]+")
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_NOT_DNS_DOT = re.compile(r"[^a-z0-9.-]+")


def app_resource_name(class_name: str) -> str:
    """``Adder`` → ``adder``; ``My_App`` → ``my-app`` (a DNS-1123 name, as resources need)."""
    name = _NOT_DNS_DOT.sub("-", class_name.lower()).strip("-.")
    return name or "app"


def app_name_of(app: Any) -> str:
    """An App reference as Balsam users write it: an ApplicationDefinition class, or its class
    name (``"Hello"`` → ``"hello"``), or the App's name itself."""
    if isinstance(app, type) and hasattr(app, "resource_name"):
        return str(app.resource_name())
    name = str(app)
    return name if _DNS_NAME.match(name) else app_resource_name(name)


def _parent_name(p: Any) -> str:
    return p.id if hasattr(p, "id") and not isinstance(p, str) else str(p)


def generate_prefix(app: str) -> str:
    base = _NOT_DNS.sub("-", app.lower()).strip("-")[:40] or "job"
    return f"{base}-"


def from_balsam_kwargs(data: Any) -> Any:
    """Turn Balsam-style keywords into the resource shape (anything else passes through)."""
    if not isinstance(data, dict) or "spec" in data:
        return data
    if not any(k in data for k in (*SPEC_FIELDS, *RESOURCE_FIELDS, "tags")):
        return data
    d = dict(data)
    meta = dict(d.pop("metadata", None) or {})
    for k in ("name", "namespace", "annotations"):
        if k in d:
            meta[k] = d.pop(k)
    if "generate_name" in d:
        meta["generateName"] = d.pop("generate_name")
    labels = {**(d.pop("labels", None) or {}), **(d.pop("tags", None) or {})}
    if labels:
        meta["labels"] = labels
    spec: dict[str, Any] = {}
    resources: dict[str, Any] = {}
    for k in list(d):
        if k in SPEC_FIELDS:
            spec[SPEC_FIELDS[k]] = d.pop(k)
        elif k in RESOURCE_FIELDS:
            resources[k] = d.pop(k)
    if "parents" in spec:
        spec["parents"] = [_parent_name(p) for p in spec["parents"] or []]
    if spec.get("app") is not None:
        spec["app"] = app_name_of(spec["app"])
    if resources:
        spec["resources"] = resources
    if not meta.get("name") and not meta.get("generateName"):
        meta["generateName"] = generate_prefix(str(spec.get("app") or "job"))
    out: dict[str, Any] = {"metadata": meta, "spec": spec}
    for k in ("apiVersion", "api_version", "kind", "status"):
        if k in d:
            out[k] = d.pop(k)
    out.update(d)  # leftovers are unknown fields: pydantic refuses them by name
    return out


def _setter(apply: Callable[[Job, Any], None], attr: str) -> Callable[[Job, Any], None]:
    def set_(self: Job, value: Any) -> None:
        apply(self, value)
        self._pending[attr] = value

    return set_


def _set_spec(field: str) -> Callable[[Job, Any], None]:
    def apply(job: Job, value: Any) -> None:
        if field == "parents":
            value = [_parent_name(p) for p in value]
        if field == "app":
            value = app_name_of(value)
        if field == "parameters" and isinstance(value, dict):
            value = {str(k): str(v) for k, v in value.items()}
        setattr(job.spec, field, value)

    return apply


def _set_resource(field: str) -> Callable[[Job, Any], None]:
    def apply(job: Job, value: Any) -> None:
        setattr(job.spec.resources, field, value)

    return apply


def _set_tags(job: Job, value: Any) -> None:
    job.metadata.labels = {validate_label_key(k): validate_label_value(k, str(v)) for k, v in dict(value).items()}


def _set_state(job: Job, value: Any) -> None:
    if str(value) != str(job.status.state):
        transition(job, str(value), "set by user", by_user=True)


APPLIERS: dict[str, Callable[[Job, Any], None]] = {
    **{k: _set_spec(v) for k, v in SPEC_FIELDS.items()},
    **{k: _set_resource(k) for k in RESOURCE_FIELDS},
    "tags": _set_tags,
    "labels": _set_tags,
    "state": _set_state,
}


def apply_fields(job: Job, fields: dict[str, Any]) -> None:
    """Apply Balsam field assignments (``update(**fields)``, ``save()``) to ``job``."""
    for k, v in fields.items():
        fn = APPLIERS.get(k)
        if fn is None:
            raise BadRequest(f"cannot set unknown Job field {k!r}")
        fn(job, v)


class BalsamJobMixin:
    """Balsam attribute names on Job (mixed into the pydantic model)."""

    if TYPE_CHECKING:
        _pending: dict[str, Any]
        spec: Any
        status: Any
        metadata: Any

    _from_balsam_kwargs = staticmethod(from_balsam_kwargs)

    # identity
    @property
    def id(self) -> str:
        """Stable identifier (the job's name); usable in ``parent_ids``."""
        return self.metadata.name or ""

    # spec fields
    app_id = property(lambda self: self.spec.app, _setter(_set_spec("app"), "app_id"))
    site_name = property(lambda self: self.spec.site, _setter(_set_spec("site"), "site_name"))
    workdir = property(lambda self: Path(self.spec.workdir), _setter(_set_spec("workdir"), "workdir"))
    parameters = property(lambda self: self.spec.parameters, _setter(_set_spec("parameters"), "parameters"))
    data = property(lambda self: self.spec.data, _setter(_set_spec("data"), "data"))
    parent_ids = property(lambda self: list(self.spec.parents), _setter(_set_spec("parents"), "parent_ids"))
    transfers = property(lambda self: self.spec.transfers, _setter(_set_spec("transfers"), "transfers"))
    priority = property(lambda self: self.spec.priority, _setter(_set_spec("priority"), "priority"))
    tags = property(lambda self: self.metadata.labels, _setter(_set_tags, "tags"))
    num_nodes = property(lambda self: self.spec.resources.num_nodes,
                         _setter(_set_resource("num_nodes"), "num_nodes"))
    ranks_per_node = property(lambda self: self.spec.resources.ranks_per_node,
                              _setter(_set_resource("ranks_per_node"), "ranks_per_node"))
    threads_per_rank = property(lambda self: self.spec.resources.threads_per_rank,
                                _setter(_set_resource("threads_per_rank"), "threads_per_rank"))
    threads_per_core = property(lambda self: self.spec.resources.threads_per_core,
                                _setter(_set_resource("threads_per_core"), "threads_per_core"))
    gpus_per_rank = property(lambda self: self.spec.resources.gpus_per_rank,
                             _setter(_set_resource("gpus_per_rank"), "gpus_per_rank"))
    node_packing_count = property(lambda self: self.spec.resources.node_packing_count,
                                  _setter(_set_resource("node_packing_count"), "node_packing_count"))
    launch_params = property(lambda self: self.spec.resources.launch_params,
                             _setter(_set_resource("launch_params"), "launch_params"))
    wall_time_min = property(lambda self: self.spec.resources.wall_time_min,
                             _setter(_set_resource("wall_time_min"), "wall_time_min"))

    # status fields
    state = property(lambda self: str(self.status.state), _setter(_set_state, "state"))

    @property
    def return_code(self) -> int | None:
        return self.status.return_code  # type: ignore[no-any-return]

    @property
    def last_update(self) -> datetime | None:
        return self.status.last_update  # type: ignore[no-any-return]

    @property
    def batch_job_id(self) -> str | None:
        p = self.status.placement
        return p.batch_job if p is not None else None

    # futures (seed: "Python App Futures"); waiting shares one store watch per process
    Failed = JobFailed
    NoResult = _NoResult

    def result(self, timeout: float | None = None) -> Any:
        """Block until the job is JOB_FINISHED or FAILED; return ``run()``'s value or re-raise
        its exception (``Job.Failed`` for a job that failed otherwise: return code, output
        tail). ``concurrent.futures.TimeoutError`` past ``timeout`` seconds."""
        if self.status.state not in TERMINAL:
            client_of(self).wait_one(self, timeout)
        return outcome(self)  # type: ignore[arg-type]

    def result_nowait(self) -> Any:
        """The result if the job has finished (read once), else raise ``Job.NoResult``."""
        if not self.done():
            raise self.NoResult(f"job {self.id} is {self.state}")
        return outcome(self)  # type: ignore[arg-type]

    def done(self) -> bool:
        """True once the job is JOB_FINISHED or FAILED (one read of the job when not known yet)."""
        if self.status.state not in TERMINAL:
            self.refresh_from_db()  # type: ignore[attr-defined]
        return self.status.state in TERMINAL  # type: ignore[no-any-return]

    # helpers of the seed
    def resolve_workdir(self, data_path: str | Path) -> Path:
        """``data_path / workdir`` (the workdir is validated never to leave ``data/``)."""
        return Path(data_path) / self.spec.workdir

    def parent_query(self) -> QuerySet[Job]:
        """The job's parents, as a lazy query."""
        return type(self).objects.filter(id=list(self.spec.parents))  # type: ignore[attr-defined, no-any-return]


_ATTRIBUTE_DOCS = {
    "app_id": "The App's name (``spec.app``); assign an ApplicationDefinition class, its name or the App's.",
    "site_name": "The Site the job must run at (``spec.site``), or None: its namespace's site.",
    "workdir": "The working directory, relative to the site's ``data/`` (a Path).",
    "parameters": "The App's parameters for this job (strings; a Python App's are encoded values).",
    "data": "Free JSON data of the job; reassign it (``job.data = {...}``) for ``save()`` to write it.",
    "parent_ids": "Names of the jobs that must finish first.",
    "transfers": 'The App\'s transfer slots filled in: ``{slot: "alias:/absolute/path"}``.',
    "priority": "Higher runs first.",
    "tags": "Balsam's tags: the job's labels (``{key: value}`` strings).",
    "num_nodes": "Nodes the job runs on.",
    "ranks_per_node": "MPI ranks per node.",
    "threads_per_rank": "Threads per rank.",
    "threads_per_core": "Threads per core.",
    "gpus_per_rank": "GPUs (or tiles) per rank; fractions share a device.",
    "node_packing_count": "How many such jobs may share a node.",
    "launch_params": "Extra launcher parameters.",
    "wall_time_min": "Wall time limit in minutes (0: none).",
    "state": "The job's state (a JobState value); assigning it moves the job as a user may.",
    "return_code": "The exit code of the last run, or None.",
    "last_update": "When the job was last written.",
    "batch_job_id": "The BatchJob (allocation) the job is placed in, or None.",
}
for _name, _doc in _ATTRIBUTE_DOCS.items():
    _p = vars(BalsamJobMixin)[_name]
    setattr(BalsamJobMixin, _name, property(_p.fget, _p.fset, doc=_doc))
