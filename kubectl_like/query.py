"""Finding the objects a command names: by name, or by selector/state/tags through the
store's indexes (``apis.QuerySet``), in one namespace or all of them (``-A``).

Filters by state and by label are answered from index keys: the objects read are the
ones that match (plus, for the selector operators no index can answer, ``!=``,
``notin`` and ``!key``, the candidates that the other requirements leave). So are the
``--field-selector`` requirements an index answers (``fieldselector.py``: ``status.state``,
``spec.app``, ``metadata.name``); the others are predicates on those candidates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from apis import Job, NotFound, QuerySet, Registry, Resource, Selector, parse_selector
from apis._query import _sort_key, field_value
from apis._registry import kind_prefix

from ._errors import CLIError
from .fieldselector import FieldSelector


@dataclass
class Filters:
    selector: Selector = field(default_factory=Selector)
    states: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    sort_by: str | None = None
    limit: int | None = None
    predicate: Callable[[Resource], bool] | None = None  # e.g. get events --for job/NAME
    fields: FieldSelector = field(default_factory=FieldSelector)  # --field-selector
    workdir: str | None = None  # get jobs --workdir FRAGMENT (Balsam's `job ls --workdir`: a part of the path)

    def __bool__(self) -> bool:
        return (bool(self.selector) or bool(self.states) or bool(self.tags) or self.predicate is not None
                or bool(self.fields) or self.workdir is not None)

    def and_also(self, predicate: Callable[[Resource], bool]) -> Filters:
        return dataclasses.replace(self, predicate=predicate)

    def matches(self, obj: Resource) -> bool:
        """Whether one object passes the selector, --tag and --state (for streamed events)."""
        labels = obj.metadata.labels
        if self.selector and not self.selector.matches(labels):
            return False
        if any(labels.get(k) != v for k, v in self.tags.items()):
            return False
        if self.predicate is not None and not self.predicate(obj):
            return False
        if self.fields and not self.fields.matches(obj):
            return False
        if self.workdir is not None and self.workdir not in getattr(getattr(obj, "spec", None), "workdir", ""):
            return False
        if self.states:
            state = (_state_of(obj) or "").lower()
            return state in {s.lower() for s in self.states}
        return True

    @classmethod
    def parse(cls, selector: str | None, states: Sequence[str], tags: dict[str, str], sort_by: str | None,
              limit: int | None, fields: FieldSelector | None = None) -> Filters:
        return cls(parse_selector(selector), tuple(states), dict(tags), normalize_sort_key(sort_by), limit,
                   fields=fields or FieldSelector())


def normalize_sort_key(sort_by: str | None) -> str | None:
    """kubectl's ``--sort-by`` (``{.spec.priority}``, ``.metadata.name``) or a Balsam field
    name (``last_update``) → what ``field_value`` takes; a leading ``-`` sorts descending."""
    if not sort_by:
        return None
    s = sort_by.strip()
    desc = s.startswith("-")
    s = s.lstrip("-").strip()
    if s.startswith("{") and s.endswith("}"):
        s = s[1:-1].strip()
    s = s.lstrip("$").lstrip("@").lstrip(".")
    if not s or any(c in s for c in "[]*?()"):
        raise CLIError(f"--sort-by {sort_by!r}: expected a field path like .spec.priority or {{.metadata.name}}")
    return ("-" if desc else "") + s


def namespaces_of(reg: Registry, kind: type[Resource]) -> list[str]:
    """Every namespace that holds an object of ``kind``, by skip-scan: one key-only read of
    one key per namespace, never a read of every object."""
    prefix = kind_prefix(kind)
    out: list[str] = []
    after: str | None = None
    while True:
        res = reg.store.range(prefix, limit=1, start_after=after, keys_only=True)
        if not res.kvs:
            return sorted(out)  # key order puts "a-b/" before "a/": sort by name for people
        ns = res.kvs[0].key[len(prefix):].split("/", 1)[0]
        out.append(ns)
        # Names are DNS-1123 (all below "\x7f"): this sorts after every key of ``ns``.
        after = f"{prefix}{ns}/\x7f"


def _state_of(o: Any) -> str | None:
    status = getattr(o, "status", None)
    st = getattr(status, "state", None)
    return None if st is None else str(getattr(st, "value", st))


def query(reg: Registry, kind: type[Resource], namespaces: Sequence[str], f: Filters) -> list[Resource]:
    """Objects of ``kind`` in ``namespaces`` that pass ``f``, sorted and limited."""
    if f.predicate is not None:
        pred = f.predicate
        objs = [o for o in query(reg, kind, namespaces, dataclasses.replace(f, predicate=None, limit=None)) if pred(o)]
        return objs if f.limit is None else objs[: f.limit]
    post_state: set[str] | None = None
    if f.states and kind is not Job:
        status_field = kind.model_fields.get("status")
        ann = status_field.annotation if status_field is not None else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel) and "state" in ann.model_fields):
            raise CLIError(f"--state does not apply to {kind.PLURAL}")
        post_state = {s.lower() for s in f.states}
    out: list[Resource] = []
    namespaces = f.fields.namespaces(namespaces)
    one_ns = len(namespaces) == 1
    for ns in namespaces:
        qs: QuerySet[Resource] = QuerySet(kind, reg, namespace=ns)
        if f.selector:
            qs = qs.filter(selector=f.selector)
        if f.tags:
            qs = qs.filter(tags=f.tags)
        if f.states and post_state is None:
            qs = qs.filter(state__in=list(f.states))
        if f.workdir is not None:
            if kind is not Job:
                raise CLIError(f"--workdir does not apply to {kind.PLURAL}")
            qs = qs.filter(workdir__contains=f.workdir)
        qs, left = f.fields.narrow(qs)
        if one_ns and post_state is None and not left:
            # One namespace: sort and limit inside the query.
            if f.sort_by:
                qs = qs.order_by(f.sort_by)
            if f.limit is not None:
                qs = qs[: f.limit]
            return list(qs)
        objs = list(qs)
        if post_state is not None:
            objs = [o for o in objs if (_state_of(o) or "").lower() in post_state]
        if left:
            objs = [o for o in objs if all(r.matches(o) for r in left)]
        out.extend(objs)
    if f.sort_by:
        desc = f.sort_by.startswith("-")
        name = f.sort_by.lstrip("-")
        out.sort(key=lambda o: _sort_key(field_value(o, name)), reverse=desc)
    if f.limit is not None:
        out = out[: f.limit]
    return out


def query_names(reg: Registry, kind: type[Resource], namespaces: Sequence[str], f: Filters) -> list[str] | None:
    """The names ``query`` would find, in name order, from index keys alone (no object read:
    ``get -o name`` over a million jobs); None when some filter needs the objects."""
    if (f.predicate is not None or f.workdir is not None or f.sort_by or f.limit is not None
            or len(namespaces) != 1 or (f.states and kind is not Job)):
        return None
    qs: QuerySet[Resource] = QuerySet(kind, reg, namespace=namespaces[0])
    if f.selector:
        qs = qs.filter(selector=f.selector)
    if f.tags:
        qs = qs.filter(tags=f.tags)
    if f.states:
        qs = qs.filter(state__in=list(f.states))
    qs, left = f.fields.narrow(qs)
    if left:
        return None
    return qs.index_names()


def get_named(reg: Registry, kind: type[Resource], names: Sequence[str], namespace: str
              ) -> tuple[list[Resource], list[NotFound]]:
    """The named objects (in the order named, each once) and a NotFound for each missing."""
    unique = list(dict.fromkeys(names))
    found: list[Resource] = []
    missing: list[NotFound] = []
    for name, obj in zip(unique, reg.get_many(kind, unique, namespace), strict=True):
        if obj is None:
            missing.append(NotFound(kind.resource_name(), name))
        else:
            found.append(obj)
    return found, missing
