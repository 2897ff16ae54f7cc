"""Turning manifests into store writes: ``apply``, ``create -f``, ``delete -f`` (and later
``diff``, ``apply --prune``, ``edit``) share this.

1. ``parse_manifests`` validates EVERY document (kind, fields, names, namespaces, duplicates)
   before anything is read from the store; the first bad one raises ManifestError naming
   its file and document.
2. ``plan`` reads the live objects (one ``get_many`` per kind and namespace), checks the
   references jobs make (App, parents: in the batch or in the store) and decides, per
   object, ``created`` / ``configured`` / ``unchanged`` and the object to write.
3. ``execute`` writes every create and update in ONE store transaction (``Registry.write``:
   creates guarded by "absent", updates by CAS on resourceVersion); on a race it plans
   again from fresh reads, a few times.

The merge used for ``configured`` is :func:`merge`: kubectl's client-side three-way merge
(``merge.py``) of the last-applied configuration (annotation ``balsam.io/last-applied-
configuration``, normalized: camelCase, validated values, only the fields the manifest set),
the manifest and the live object. Status and server metadata are never part of it.

``--prune`` (:func:`prune_targets`) deletes, in the same transaction, the objects of the
applied kinds and namespaces that carry the last-applied annotation and match the selector but
are no longer in the files.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from apis import (
    KINDS,
    AlreadyExists,
    ApiError,
    App,
    Conflict,
    Invalid,
    Job,
    NotFound,
    QuerySet,
    Registry,
    Resource,
    Selector,
    describe_validation_error,
    parse_object,
)

from .manifests import Document, ManifestError
from .merge import apply_patch, three_way_patch

LAST_APPLIED = "balsam.io/last-applied-configuration"
LAST_APPLIED_CAP = 262_144
# Fields the server owns: ignored in manifests (so `get -o yaml | apply -f -` works).
SERVER_META = ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp")

Action = Literal["created", "configured", "unchanged"]


@dataclass
class Manifest:
    doc: Document
    obj: Resource  # validated, namespace filled in, without status
    raw: dict[str, Any]  # what the user wrote
    config: dict[str, Any] | None = None  # applied_config(), cached
    config_text: str | None = None  # last_applied(), cached

    @property
    def where(self) -> str:
        return self.doc.where

    @property
    def ident(self) -> tuple[str, str, str]:
        return (self.obj.KIND, self.obj.namespace, self.obj.name)


@dataclass
class Change:
    manifest: Manifest
    action: Action
    live: Resource | None
    desired: Resource


class LocatedError(ApiError):
    """An API error with where it happened and what it means for the batch, same reason."""

    def __init__(self, err: ApiError, prefix: str = "", suffix: str = "") -> None:
        self.reason = err.reason
        self._from_server = err.from_server
        self.cause = err
        super().__init__(f"{prefix}{err}{suffix}")

    @property
    def from_server(self) -> bool:
        return self._from_server


class NothingApplied(ManifestError):
    """A bad manifest: the message says that nothing was written."""

    def __init__(self, where: str, message: str, done: str = "applied") -> None:
        self.bare = message
        super().__init__(where, f"{message} (no objects were {done})")


def _clean(doc: dict[str, Any]) -> dict[str, Any]:
    """The document to validate: no status, no server-owned metadata."""
    d = {k: v for k, v in doc.items() if k != "status"}
    meta = d.get("metadata")
    if isinstance(meta, dict):
        d["metadata"] = {k: v for k, v in meta.items() if k not in SERVER_META}
    return d


def parse_manifests(
    docs: Sequence[Document],
    namespace: str,
    *,
    namespace_explicit: bool = False,
    require_name: bool = True,
    verb: str = "apply",
) -> list[Manifest]:
    """Validate every document; the first bad one raises NothingApplied."""
    out: list[Manifest] = []
    seen: dict[tuple[str, str, str], str] = {}
    for doc in docs:
        d = _clean(doc.data)
        meta = d.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise NothingApplied(doc.where, "metadata: expected an object")
        meta = dict(meta or {})
        doc_ns = meta.get("namespace")
        if doc_ns is not None and namespace_explicit and str(doc_ns) != namespace:
            raise NothingApplied(
                doc.where,
                f'the namespace from the provided object "{doc_ns}" does not match the namespace "{namespace}"; '
                f"pass --namespace={doc_ns} or remove metadata.namespace",
            )
        if doc_ns is None:
            meta["namespace"] = namespace
        d["metadata"] = meta
        if not meta.get("name"):
            if require_name:
                how = "" if meta.get("generateName") is None else (
                    f" (generateName is not supported by {verb}; use 'balsamctl create -f')")
                raise NothingApplied(doc.where, f"metadata.name: Required value{how}")
            if not meta.get("generateName"):
                raise NothingApplied(doc.where, "metadata.name: Required value: name or generateName is required")
        try:
            obj = parse_object(d, KINDS)
        except ApiError as e:
            raise NothingApplied(doc.where, str(e)) from None
        if obj.name:
            ident = (obj.KIND, obj.namespace, obj.name)
            if ident in seen:
                raise NothingApplied(doc.where, f'{obj.resource_name()} "{obj.name}" is also defined at {seen[ident]}')
            seen[ident] = doc.where
        out.append(Manifest(doc, obj, doc.data))
    return out


def applied_config(m: Manifest) -> dict[str, Any]:
    """What the manifest asks for, normalized: the fields it set (camelCase, values as
    validated: numbers in ``parameters`` as strings, workdirs normalized), without status,
    server metadata or the last-applied annotation. Computed once per manifest."""
    if m.config is None:
        d = m.obj.model_dump(mode="json", by_alias=True, exclude_unset=True)
        d.pop("status", None)
        meta = d.get("metadata")
        if isinstance(meta, dict):
            for k in SERVER_META:
                meta.pop(k, None)
            ann = meta.get("annotations")
            if isinstance(ann, dict) and LAST_APPLIED in ann:
                ann = {k: v for k, v in ann.items() if k != LAST_APPLIED}
                if ann:
                    meta["annotations"] = ann
                else:
                    del meta["annotations"]
        m.config = d
    return m.config


def last_applied(m: Manifest) -> str:
    """The last-applied annotation's value: :func:`applied_config` as compact sorted JSON,
    refused above LAST_APPLIED_CAP bytes (kubectl's cap on all annotations together)."""
    if m.config_text is None:
        text = json.dumps(applied_config(m), sort_keys=True, separators=(",", ":"), default=str)
        size = len(text.encode())
        if size > LAST_APPLIED_CAP:
            raise NothingApplied(
                m.where,
                f'{m.obj.resource_name()} "{m.obj.name}" is invalid: metadata.annotations: Too long: '
                f"{LAST_APPLIED} would be {size} bytes, over the {LAST_APPLIED_CAP}-byte cap "
                "(move bulky values out of the manifest, e.g. spec.data into files)",
            )
        m.config_text = text
    return m.config_text


def with_last_applied(m: Manifest) -> Resource:
    """The manifest's object carrying the last-applied annotation (copies only what changes:
    deep copies of 10k objects cost more than the store write)."""
    obj = m.obj.model_copy()
    ann = {k: v for k, v in m.obj.metadata.annotations.items() if k != LAST_APPLIED}
    obj.metadata = m.obj.metadata.model_copy(update={"annotations": {**ann, LAST_APPLIED: last_applied(m)}})
    return obj


def without_last_applied(m: Manifest) -> Resource:
    if LAST_APPLIED not in m.obj.metadata.annotations:
        return m.obj
    obj = m.obj.model_copy()
    obj.metadata = m.obj.metadata.model_copy(
        update={"annotations": {k: v for k, v in m.obj.metadata.annotations.items() if k != LAST_APPLIED}})
    return obj


def previous_config(live: Resource) -> dict[str, Any] | None:
    """The configuration the last apply wrote (None: never applied, or unreadable), without
    anything apply must never delete (status, server metadata)."""
    text = live.metadata.annotations.get(LAST_APPLIED)
    if not text:
        return None
    try:
        prev = json.loads(text)
    except ValueError:
        return None
    if not isinstance(prev, dict):
        return None
    prev.pop("status", None)
    meta = prev.get("metadata")
    if isinstance(meta, dict):
        prev["metadata"] = {k: v for k, v in meta.items() if k not in SERVER_META}
    return prev


def live_config(live: Resource) -> dict[str, Any]:
    """The live object as the merge sees it: JSON without status."""
    return live.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"status"})


def merge_patch(live: Resource, m: Manifest) -> dict[str, Any]:
    """The three-way merge patch apply would send for ``m`` over ``live`` (empty: unchanged)."""
    modified = applied_config(m)
    meta = dict(modified.get("metadata") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), LAST_APPLIED: last_applied(m)}
    modified = {**modified, "metadata": meta}
    return three_way_patch(previous_config(live), modified, live_config(live))


def merge(live: Resource, m: Manifest) -> Resource:
    """The object ``apply`` writes over ``live``: kubectl's three-way merge of the last
    applied configuration, the manifest and the live object (``merge.py``). Fields the
    manifest dropped are removed (back to their defaults), fields others set are kept,
    status is ``live``'s. Returns ``live`` itself when nothing changes."""
    patch = merge_patch(live, m)
    if not patch:
        return live
    merged = apply_patch(live_config(live), patch)
    try:
        out = type(live).model_validate(merged)
    except ValidationError as e:
        raise NothingApplied(
            m.where, f'{live.resource_name()} "{live.name}" is invalid: {describe_validation_error(e)}'
        ) from None
    if "status" in type(live).model_fields:
        out.status = live.status  # type: ignore[attr-defined]  # the registry copies before stamping
    return out


def fetch_live(reg: Registry, manifests: Sequence[Manifest]) -> dict[tuple[str, str, str], Resource]:
    """The live objects the manifests name: one ``get_many`` per (kind, namespace)."""
    groups: dict[tuple[type[Resource], str], list[str]] = defaultdict(list)
    for m in manifests:
        if m.obj.name:
            groups[(type(m.obj), m.obj.namespace)].append(m.obj.name)
    live: dict[tuple[str, str, str], Resource] = {}
    for (kind, ns), names in groups.items():
        for obj in reg.get_many(kind, names, ns):
            if obj is not None:
                live[(kind.KIND, ns, obj.name)] = obj
    return live


def job_refs(m: Manifest) -> list[tuple[tuple[str, str, str], str]]:
    """The (kind, namespace, name) a Job manifest names, its App and parents, each with the
    field naming it; none for other kinds."""
    if not isinstance(m.obj, Job):
        return []
    ns = m.obj.namespace
    refs = [(("App", ns, m.obj.spec.app), "spec.app")]
    refs += [(("Job", ns, p), "spec.parents") for p in m.obj.spec.parents]
    return refs


def check_references(reg: Registry, manifests: Sequence[Manifest],
                     live: dict[tuple[str, str, str], Resource]) -> None:
    """Jobs name an App and parents: each must be in this batch or in the store."""
    batch = {m.ident for m in manifests if m.obj.name}
    wanted: dict[tuple[str, str, str], list[tuple[Manifest, str]]] = defaultdict(list)
    for m in manifests:
        for ident, field in job_refs(m):
            if ident not in batch and ident not in live:
                wanted[ident].append((m, field))
    if not wanted:
        return
    found: set[tuple[str, str, str]] = set()
    by_kind: dict[tuple[str, str], list[str]] = defaultdict(list)
    for kind_name, ns, name in wanted:
        by_kind[(kind_name, ns)].append(name)
    for (kind_name, ns), names in by_kind.items():
        kind: type[Resource] = App if kind_name == "App" else Job
        for obj in reg.get_many(kind, names, ns):
            if obj is not None:
                found.add((kind_name, ns, obj.name))
    missing = [(m, field, ident) for ident, uses in wanted.items() if ident not in found for m, field in uses]
    if missing:
        missing.sort(key=lambda t: manifests.index(t[0]))
        m, field, ident = missing[0]
        raise NothingApplied(
            m.where, f'{m.obj.resource_name()} "{m.obj.name}" is invalid: {field}: Not found: "{ident[2]}"'
        )


def prune_targets(reg: Registry, manifests: Sequence[Manifest], selector: Selector) -> list[Resource]:
    """``apply --prune``: the live objects of the applied kinds, in the applied namespaces,
    that carry the last-applied annotation (so were created by apply, never by hand), match
    ``selector`` (empty: ``--all``) and are not in ``manifests``. Refused (NothingApplied)
    when an applied Job still uses one of them (its App or a parent)."""
    applied = {m.ident for m in manifests}
    groups: dict[type[Resource], set[str]] = defaultdict(set)
    for m in manifests:
        groups[type(m.obj)].add(m.obj.namespace)
    out: list[Resource] = []
    for kind, namespaces in groups.items():
        for ns in sorted(namespaces):
            qs: QuerySet[Resource] = QuerySet(kind, reg, namespace=ns)
            if selector:
                qs = qs.filter(selector=selector)
            for obj in qs:
                if LAST_APPLIED in obj.metadata.annotations and (kind.KIND, ns, obj.name) not in applied:
                    out.append(obj)
    gone = {(o.KIND, o.namespace, o.name) for o in out}
    for m in manifests:
        for ident, field in job_refs(m):
            if ident in gone:
                raise NothingApplied(
                    m.where, f'{m.obj.resource_name()} "{m.obj.name}" is invalid: {field}: "{ident[2]}" is '
                    "not in the files and --prune would delete it")
    return out


def plan(reg: Registry, manifests: Sequence[Manifest], *, create_only: bool = False) -> list[Change]:
    live = fetch_live(reg, manifests)
    check_references(reg, manifests, live)
    changes: list[Change] = []
    for m in manifests:
        cur = live.get(m.ident) if m.obj.name else None
        if cur is None:
            # ``create -f`` saves no configuration (kubectl's default): what it made is not
            # apply's, so ``apply --prune`` never deletes it.
            desired = without_last_applied(m) if create_only else with_last_applied(m)
            changes.append(Change(m, "created", None, desired))
            continue
        if create_only:
            raise LocatedError(AlreadyExists(cur.resource_name(), cur.name),
                               f'error when creating "{m.doc.source}" (document {m.doc.index}): ',
                               " (no objects were created)")
        desired = merge(cur, m)
        action: Action = "unchanged" if desired is cur else "configured"
        changes.append(Change(m, action, cur, desired))
    return changes


@dataclass
class Outcome:
    results: list[tuple[Change, Resource]]  # in manifest order
    pruned: list[Resource]


def execute(reg: Registry, manifests: Sequence[Manifest], *, create_only: bool = False,
            dry_run: str = "none", attempts: int = 5) -> list[tuple[Change, Resource]]:
    """Plan and write in one transaction, re-planned on a race. Returns (change, result)
    in manifest order; for ``dry_run="client"`` nothing is read from admission or written."""
    return apply_manifests(reg, manifests, create_only=create_only, dry_run=dry_run, attempts=attempts).results


def apply_manifests(reg: Registry, manifests: Sequence[Manifest], *, create_only: bool = False,
                    dry_run: str = "none", prune: Selector | None = None, attempts: int = 5) -> Outcome:
    """:func:`execute`, and with ``prune`` (a selector; empty = ``--all``) the deletes of
    :func:`prune_targets` in the same transaction: all or nothing."""
    for attempt in range(attempts):
        changes = plan(reg, manifests, create_only=create_only)
        pruned = prune_targets(reg, manifests, prune) if prune is not None else []
        if dry_run == "client":
            return Outcome([(c, c.desired) for c in changes], pruned)
        creates = [c.desired for c in changes if c.action == "created"]
        updates = [(c.live, c.desired) for c in changes if c.action == "configured" and c.live is not None]
        try:
            created, updated = reg.write(creates=creates, updates=updates, deletes=pruned,
                                         dry_run=dry_run == "server")
        except (Conflict, AlreadyExists, NotFound):
            if create_only or attempt == attempts - 1:
                raise
            continue
        it_c: Iterator[Resource] = iter(created)
        it_u: Iterator[Resource] = iter(updated)
        out: list[tuple[Change, Resource]] = []
        for c in changes:
            if c.action == "created":
                out.append((c, next(it_c)))
            elif c.action == "configured":
                out.append((c, next(it_u)))
            else:
                out.append((c, c.live or c.desired))
        return Outcome(out, pruned)
    raise Invalid("apply kept conflicting with concurrent writers")  # pragma: no cover - loop returns or raises
