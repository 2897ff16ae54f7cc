"""kubectl's ``--field-selector``: ``FIELD=VALUE``, ``FIELD==VALUE``, ``FIELD!=VALUE``, comma = AND.

Each kind supports a fixed set of fields (kubectl's "field label not supported" for any other):

* every kind: ``metadata.name``, ``metadata.namespace``;
* jobs: ``status.state``, ``spec.app``, ``spec.workdir``, ``spec.site``;
* other kinds with a ``status.state`` (batch jobs, transfer tasks): ``status.state``.

A requirement becomes a filter of the query (``apis.QuerySet``), so what an index can answer is
answered from it: ``metadata.name=`` reads only the named objects, ``status.state=``,
``spec.app=``, ``spec.workdir=`` and ``spec.site=`` read the state, app, workdir and site
indexes (key-only reads), and only the objects those leave are fetched. ``spec.site=`` (empty:
jobs naming no site, which the site index does not hold) and ``!=`` are checked on the fetched
objects, as no index answers them; so are workdir/site on a store this client may not re-index
(``Registry.index_ready``).
``metadata.namespace=`` picks the namespaces read (with ``-A``), never reading the others.

Parsing needs no store, so a bad selector is refused before anything is read or written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from apis import Job, QuerySet, Resource, parse_state

from ._errors import CLIError

Getter = Callable[[Any], str]


@dataclass(frozen=True)
class FieldSpec:
    """One selectable field: how to read it from an object, how to normalize a value typed
    by the user, and the QuerySet filter keyword that answers ``=`` (None: a predicate)."""

    path: str
    get: Getter
    query_key: str | None = None
    normalize: Callable[[str], str] = str


def _state(o: Any) -> str:
    st = getattr(getattr(o, "status", None), "state", None)
    return "" if st is None else str(getattr(st, "value", st))


def _job_state_value(v: str) -> str:
    try:
        return parse_state(v).value
    except ValueError as e:
        raise CLIError(f"invalid field selector value for status.state: {e}") from None


COMMON = [
    FieldSpec("metadata.name", lambda o: o.metadata.name or "", "name"),
    FieldSpec("metadata.namespace", lambda o: o.metadata.namespace),
]

JOB_FIELDS = [
    FieldSpec("status.state", _state, "state", _job_state_value),
    FieldSpec("spec.app", lambda o: o.spec.app, "app"),
    FieldSpec("spec.workdir", lambda o: o.spec.workdir, "workdir"),
    FieldSpec("spec.site", lambda o: o.spec.site or "", None),
]


def _has_status_state(kind: type[Resource]) -> bool:
    status = kind.model_fields.get("status")
    ann = status.annotation if status is not None else None
    return isinstance(ann, type) and issubclass(ann, BaseModel) and "state" in ann.model_fields


def fields_of(kind: type[Resource]) -> dict[str, FieldSpec]:
    """The fields ``--field-selector`` supports for ``kind``."""
    specs = list(COMMON)
    if kind is Job:
        specs += JOB_FIELDS
    elif _has_status_state(kind):
        specs.append(FieldSpec("status.state", _state))
    return {s.path: s for s in specs}


@dataclass(frozen=True)
class FieldRequirement:
    spec: FieldSpec
    op: str  # "=" or "!="
    value: str

    def matches(self, obj: Any) -> bool:
        try:
            have = self.spec.get(obj)
        except AttributeError:
            have = ""
        return (have == self.value) == (self.op == "=")


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = field(default_factory=tuple)

    def __bool__(self) -> bool:
        return bool(self.requirements)

    def matches(self, obj: Any) -> bool:
        return all(r.matches(obj) for r in self.requirements)

    def namespaces(self, namespaces: Sequence[str]) -> list[str]:
        """The namespaces that ``metadata.namespace`` requirements leave (the others are never read)."""
        out = list(namespaces)
        for r in self.requirements:
            if r.spec.path == "metadata.namespace":
                out = [n for n in out if (n == r.value) == (r.op == "=")]
        return out

    def narrow(self, qs: QuerySet[Any]) -> tuple[QuerySet[Any], list[FieldRequirement]]:
        """``qs`` with every requirement it can express as a filter (``=`` on an indexed field
        reads its index), and the requirements left to check on the fetched objects."""
        left: list[FieldRequirement] = []
        for r in self.requirements:
            if r.spec.path == "metadata.namespace":
                continue  # decided by namespaces()
            key = r.spec.query_key
            if key is None and r.spec.path == "spec.site":
                key = "site_name"  # the site index (a predicate for an empty value)
            if key is None:
                left.append(r)  # e.g. status.state of a kind the query cannot filter by state
                continue
            value: Any = r.value or None if r.spec.path == "spec.site" else r.value
            qs = qs.filter(**{key: value}) if r.op == "=" else qs.exclude(**{key: value})
        return qs, left


def parse_field_selector(text: str | None, kind: type[Resource]) -> FieldSelector:
    """``a=b,c!=d`` → FieldSelector; CLIError (one line) for bad syntax or an unknown field."""
    if text is None or not text.strip():
        return FieldSelector()
    supported = fields_of(kind)
    reqs: list[FieldRequirement] = []
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            raise CLIError(f'invalid field selector "{text}": empty requirement')
        for op in ("!=", "==", "="):
            path, sep, value = part.partition(op)
            if sep:
                break
        else:
            raise CLIError(f'invalid field selector "{part}": expected FIELD=VALUE, FIELD==VALUE or FIELD!=VALUE')
        path, value = path.strip(), value.strip()
        if not path:
            raise CLIError(f'invalid field selector "{part}": expected FIELD=VALUE, FIELD==VALUE or FIELD!=VALUE')
        spec = supported.get(path)
        if spec is None:
            raise CLIError(f'field label not supported: "{path}" (supported for {kind.PLURAL}: '
                           f'{", ".join(sorted(supported))})')
        if any(c in value for c in "!=()"):
            raise CLIError(f'invalid field selector "{part}": a value may not contain "!", "=" or parentheses')
        reqs.append(FieldRequirement(spec, "!=" if op == "!=" else "=", spec.normalize(value)))
    return FieldSelector(tuple(reqs))
