"""Objects in the store: keys, secondary indexes, admission, CAS updates, watches.

Layout (ARCHITECTURE.md §2):

* ``/registry/<plural>/<namespace>/<name>`` → the object as JSON; its mod revision is
  the ``resourceVersion``.
* ``/index/<plural>/<index>/<namespace>/<value>/<name>`` → ``b""``, written in the same
  transaction as the object, so a query by state, label, app or parent reads only the
  index range (``Store.count`` / ``Store.range(keys_only=True)``), never every object.

Index values are percent-quoted so ``/`` and ``=`` in label keys cannot split a key.
"""

from __future__ import annotations

import builtins
import functools
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote, unquote

from pydantic import BaseModel, ValidationError

import store as st

from ._codec import copier, decode_value, encode_stored, shallow_copy
from ._codec import decode as _decode
from ._errors import AlreadyExists, Conflict, Forbidden, Invalid, NotFound, StoreUnavailable
from ._meta import (
    API_VERSION,
    ObjectMeta,
    Resource,
    generated_name,
    identity,
    serial_suffixes,
    set_field,
    utcnow,
    uuid4_strs,
)

R = TypeVar("R", bound=Resource)
T = TypeVar("T", bound=Resource)
F = TypeVar("F")

REGISTRY = "/registry/"
INDEX = "/index/"


# ``quote(value, safe="")`` for ASCII text as one str.translate: every ASCII character but
# letters, digits and "_.-~" becomes %XX (uppercase hex), exactly as quote() writes it.
_QUOTE_ASCII = {c: f"%{c:02X}" for c in range(128)
                if not (chr(c).isalnum() or chr(c) in "_.-~")}


def q(value: str) -> str:
    """An index value percent-quoted (``urllib.parse.quote(value, safe="")``): no ``/`` or ``=``
    left to split a key. Every job has a value of its own (its workdir), so a cache of quoted
    values missed on nearly every call of a bulk create; ASCII takes a translate table."""
    if value.isascii():
        return value.translate(_QUOTE_ASCII)
    return quote(value, safe="")


def object_key(kind: type[Resource], namespace: str, name: str) -> str:
    return f"{REGISTRY}{kind.PLURAL}/{namespace}/{name}"


def kind_prefix(kind: type[Resource], namespace: str | None = None) -> str:
    base = f"{REGISTRY}{kind.PLURAL}/"
    return base if namespace is None else f"{base}{namespace}/"


@functools.lru_cache(maxsize=65536)
def index_prefix(kind: type[Resource], index: str, namespace: str, value: str | None = None) -> str:
    base = _index_bases(kind.PLURAL, namespace)[index]
    return base if value is None else f"{base}{q(value)}/"


def index_schema_key(kind: type[Resource]) -> str:
    """Where the store records which of ``kind.INDEXES_SINCE`` its objects all have (``@``
    sorts before every index name, and no index is named with it)."""
    return f"{INDEX}{kind.PLURAL}/@schema"


def label_value(key: str, value: str) -> str:
    return f"{key}={value}"


@functools.lru_cache(maxsize=256)
def _has_field(cls: type[BaseModel], name: str) -> bool:
    return name in cls.model_fields


def index_entries(obj: Resource) -> set[tuple[str, str]]:
    """(index, value) pairs under which ``obj`` is findable: what its kind declares."""
    return obj.index_entries()


class _IndexBases(dict[str, str]):
    """``index -> /index/<plural>/<index>/<namespace>/`` of one kind and namespace, each made
    the first time it is asked for: the one place an index key's shape is spelled."""

    def __init__(self, plural: str, namespace: str) -> None:
        super().__init__()
        self.plural, self.namespace = plural, namespace

    def __missing__(self, index: str) -> str:
        base = self[index] = f"{INDEX}{self.plural}/{index}/{self.namespace}/"
        return base


@functools.lru_cache(maxsize=1024)
def _index_bases(plural: str, namespace: str) -> _IndexBases:
    return _IndexBases(plural, namespace)


def index_keys(obj: Resource) -> set[str]:
    md = obj.metadata
    name = md.name or ""
    bases = _index_bases(obj.PLURAL, md.namespace)
    return {f"{bases[i]}{q(v)}/{name}" for i, v in index_entries(obj)}


def _keys_of(obj: Resource, entries: Iterable[tuple[str, str]]) -> list[str]:
    """The index keys of ``entries`` (a subset of ``obj``'s index entries), as ``index_keys``
    writes them."""
    md = obj.metadata
    name = md.name or ""
    bases = _index_bases(obj.PLURAL, md.namespace)
    return [f"{bases[i]}{q(v)}/{name}" for i, v in entries]


def name_from_index_key(key: str) -> str:
    return key.rsplit("/", 1)[1]


def value_from_index_key(key: str) -> str:
    return unquote(key.rsplit("/", 2)[1])


_KEYS_PAGE = 20000  # keys per keys-only range page
_REINDEX_RETRY_S = 60.0  # a client refused a re-index (its role, an outage) scans this long


#: Checks every write passes before its transaction: ``check(registry, creates, [(old, new)])``
#: raises Invalid to refuse the whole write (nothing is written). ``apis._transfers`` adds one.
AdmissionCheck = Callable[["Registry", Sequence[Resource], Sequence[tuple[Resource, Resource]]], None]
ADMISSION_CHECKS: list[AdmissionCheck] = []


@dataclass(frozen=True, slots=True)
class WatchEvent(Generic[T]):
    type: Literal["ADDED", "MODIFIED", "DELETED"]
    object: T
    revision: int


def _wrap_store_errors(fn: Callable[..., F]) -> Callable[..., F]:
    def inner(*a: Any, **kw: Any) -> F:
        try:
            return fn(*a, **kw)
        except st.Unavailable as e:
            raise StoreUnavailable(str(e)) from None
        except st.Forbidden as e:
            raise Forbidden(str(e)) from None

    inner.__name__ = fn.__name__
    inner.__doc__ = fn.__doc__
    return inner


def _suffix_runs(most: int) -> Iterator[str]:
    """Generated-name suffixes (``serial_suffixes``) for up to ``most`` names, drawn in runs of
    up to 1,024 as they are asked for (one lock per run): a batch whose objects are named
    draws none, and a batch's generated names stay consecutive."""
    while most > 0:
        run = serial_suffixes(min(most, 1024))
        most -= len(run)
        yield from run


class Registry:
    """The typed layer over a :class:`store.Store` that every surface (CLI, Python
    client, controllers, node agents) writes through."""

    def __init__(self, store: st.Store) -> None:
        self.store = store
        self._indexed: set[str] = set()  # plurals whose index schema is known current
        self._unindexed: dict[str, float] = {}  # plural -> when a re-index was last refused

    # --- index schema --------------------------------------------------------------

    def index_ready(self, kind: type[Resource]) -> bool:
        """Whether every stored object of ``kind`` has the entries of every index the kind
        declares (``kind.INDEXES_SINCE``). A store last written before an index existed is
        re-indexed here, once (``reindex``); where this client may not write (a read-only
        role) or the store is out, False: the caller checks those fields on the objects."""
        if not kind.INDEXES_SINCE or kind.PLURAL in self._indexed:
            return True
        refused = self._unindexed.get(kind.PLURAL)
        if refused is not None and time.monotonic() - refused < _REINDEX_RETRY_S:
            return False
        try:
            if self.index_schema(kind) < max(kind.INDEXES_SINCE):
                self.reindex(kind)
        except (st.StoreError, StoreUnavailable, Forbidden):
            self._unindexed[kind.PLURAL] = time.monotonic()  # not tried again on every query
            return False
        self._indexed.add(kind.PLURAL)
        return True

    def index_schema(self, kind: type[Resource]) -> int:
        """The index-schema version recorded in the store for ``kind`` (1: none recorded)."""
        kv = self.store.get(index_schema_key(kind))
        return int(kv.value) if kv is not None and kv.value.isdigit() else 1

    def reindex(self, kind: type[Resource], page: int = 500) -> int:
        """Add the entries of the indexes newer than the store's recorded schema to every
        object of ``kind`` (all namespaces), then record the kind's schema. Each page's keys
        are written in one txn conditioned on the objects' revisions, so an object changed
        meanwhile (which its writer indexed whole) is never given a stale entry. Returns how
        many objects were given entries. Only the new indexes are written: rewriting the
        others would wake their watchers (node agents watch ``boundnode``)."""
        have = self.index_schema(kind)
        target = max(kind.INDEXES_SINCE)
        new = {i for v, names in kind.INDEXES_SINCE.items() if v > have for i in names}
        done = 0
        after: str | None = None
        while new:
            res = self.store.range(kind_prefix(kind), limit=page, start_after=after)
            batch: list[tuple[st.KeyValue, list[st.Op]]] = []
            for kv in res.kvs:
                try:
                    obj = _decode(kind, kv)
                except ValueError:  # not an object of the kind at all: findable under nothing
                    continue
                ns, name = obj.metadata.namespace, obj.metadata.name or ""
                ops: list[st.Op] = [
                    st.Put(f"{index_prefix(kind, i, ns, v)}{name}", b"", kv.lease)
                    for i, v in obj.index_entries() if i in new]
                if ops:
                    batch.append((kv, ops))
            if batch and not self.store.txn([st.Compare.mod(kv.key, "==", kv.mod_revision) for kv, _ in batch],
                                            [op for _, ops in batch for op in ops]).succeeded:
                for kv, ops in batch:  # one changed: each on its own (a changed one is skipped)
                    self.store.txn([st.Compare.mod(kv.key, "==", kv.mod_revision)], ops)
            done += len(batch)
            if not res.more:
                break
            after = res.continue_key
        self.store.put(index_schema_key(kind), str(target).encode())
        return done

    # --- decoding ------------------------------------------------------------------

    @staticmethod
    def decode(kind: type[R], kv: st.KeyValue) -> R:
        return _decode(kind, kv)

    # --- reads ---------------------------------------------------------------------

    @_wrap_store_errors
    def get(self, kind: type[R], name: str, namespace: str = "default") -> R:
        kv = self.store.get(object_key(kind, namespace, name))
        if kv is None:
            raise NotFound(kind.resource_name(), name)
        return self.decode(kind, kv)

    @_wrap_store_errors
    def try_get(self, kind: type[R], name: str, namespace: str = "default") -> R | None:
        kv = self.store.get(object_key(kind, namespace, name))
        return None if kv is None else self.decode(kind, kv)

    @_wrap_store_errors
    def get_many(self, kind: type[R], names: Sequence[str], namespace: str = "default") -> list[R | None]:
        kvs = self.store.get_many([object_key(kind, namespace, n) for n in names])
        return [None if kv is None else _decode(kind, kv) for kv in kvs]

    @_wrap_store_errors
    def list(self, kind: type[R], namespace: str | None = "default") -> tuple[builtins.list[R], int]:
        """Every object of a kind (paged reads), and the revision to watch from."""
        prefix = kind_prefix(kind, namespace)
        out: list[R] = []
        after: str | None = None
        revision = 0
        while True:
            res = self.store.range(prefix, limit=5000, start_after=after)
            revision = revision or res.revision
            out.extend(_decode(kind, kv) for kv in res.kvs)
            if not res.more:
                return out, revision
            after = res.continue_key

    @_wrap_store_errors
    def index_names(self, kind: type[Resource], index: str, value: str, namespace: str = "default",
                    *, value_prefix: bool = False) -> builtins.list[str]:
        """Names under ``value`` in an index; with ``value_prefix``, under every value that
        starts with ``value`` (``("label", "k=")``: every object that has label ``k``)."""
        prefix = index_prefix(kind, index, namespace) + q(value) if value_prefix else \
            index_prefix(kind, index, namespace, value)
        names: list[str] = []
        after: str | None = None
        while True:
            res = self.store.range(prefix, limit=_KEYS_PAGE, start_after=after, keys_only=True)
            names.extend(name_from_index_key(kv.key) for kv in res.kvs)
            if not res.more:
                return names
            after = res.continue_key

    @_wrap_store_errors
    def index_count(self, kind: type[Resource], index: str, value: str, namespace: str = "default",
                    *, value_prefix: bool = False) -> int:
        if value_prefix:
            return self.store.count(index_prefix(kind, index, namespace) + q(value))
        return self.store.count(index_prefix(kind, index, namespace, value))

    @_wrap_store_errors
    def count(self, kind: type[Resource], namespace: str = "default") -> int:
        return self.store.count(kind_prefix(kind, namespace))

    @_wrap_store_errors
    def names(self, kind: type[Resource], namespace: str = "default") -> builtins.list[str]:
        prefix = kind_prefix(kind, namespace)
        out: list[str] = []
        after: str | None = None
        while True:
            res = self.store.range(prefix, limit=_KEYS_PAGE, start_after=after, keys_only=True)
            out.extend(kv.key[len(prefix):] for kv in res.kvs)
            if not res.more:
                return out
            after = res.continue_key

    # --- writes --------------------------------------------------------------------

    @staticmethod
    def _stamp(obj: Resource, now: datetime) -> None:
        status = getattr(obj, "status", None)
        if isinstance(status, BaseModel) and _has_field(type(status), "last_update"):
            set_field(status, "last_update", now)

    def _admission(self, objs: Sequence[Resource]) -> builtins.list[st.Compare]:
        """References that must exist when the write lands (checked inside the txn), as each
        kind declares them (``Resource.references``).

        One compare per distinct referenced key: a bulk create of 10k jobs of one app needs
        one "app exists" compare, not 10k identical ones for the store to evaluate."""
        refs: dict[str, None] = {}  # ordered set of keys that must exist
        # Objects whose references_key() is equal have equal references: a batch of jobs of one
        # App in one namespace asks references() once, not once per job.
        seen: set[Any] = set()
        for o in objs:
            rk = o.references_key()
            if rk is not None:
                if rk in seen:
                    continue
                seen.add(rk)
            for r in o.references():
                refs[f"{REGISTRY}{r.plural}/{r.namespace}/{r.name}"] = None
        # What this write creates itself need not exist before (only a kind it creates can be).
        kinds = tuple(kind_prefix(t) for t in {type(o) for o in objs})
        if any(k.startswith(kinds) for k in refs):
            for o in objs:
                refs.pop(object_key(type(o), o.metadata.namespace, o.name), None)
        return [st.Compare(k, "create", ">", 0) for k in refs]

    def _explain_failed_create(self, objs: Sequence[Resource]) -> Exception:
        keys = [object_key(type(o), o.metadata.namespace, o.name) for o in objs]
        for o, kv in zip(objs, self.store.get_many(keys), strict=True):
            if kv is not None:
                return AlreadyExists(type(o).resource_name(), o.name)
        batch = {(type(o).PLURAL, o.metadata.namespace, o.metadata.name) for o in objs}
        for o in objs:
            for r in o.references():
                if (r.plural, r.namespace, r.name) in batch:
                    continue
                if self.store.get(f"{REGISTRY}{r.plural}/{r.namespace}/{r.name}") is None:
                    return Invalid(f'{type(o).resource_name()} "{o.name}" is invalid: {r.field}: Not found: '
                                   f'"{r.name}"{r.note}')
        return Conflict("objects", ",".join(o.name for o in objs[:3]), "concurrent write")

    def _prepare_creates(self, objs: Sequence[R], now: datetime, lease: int, compares: builtins.list[st.Compare],
                         ops: builtins.list[st.Op], entries: builtins.list[str]) -> builtins.list[R]:
        """A copy of each object, its metadata and status (the caller's are not touched), with
        the identity the server assigns (as ``identity``: name from generateName, uid,
        creationTimestamp; generation 1) and status.lastUpdate; each model copied once with its
        new fields by a copier made once per class (``apis._codec.copier``).

        In the same pass over the objects (each copy is encoded while it is still
        in the CPU's caches: a batch of 10k jobs is larger than them, and every further pass
        over it reads memory again), what creates them: per object an "absent" compare and a
        put of its JSON into ``compares``/``ops``, then every object's index keys (as
        ``index_keys`` writes them) into ``entries`` (``Store.txn_with_entries``: key strings,
        not one ``Put`` each), grouped by index value: each value is quoted once per
        batch, not once per object (a bulk create repeats a handful of states, apps and
        labels), and the keys come out in key order when the names do (generated ones do),
        which the store's sort of the entries then finds done."""
        out: list[R] = []
        seen: set[str] = set()  # object keys: one object twice in one request is refused
        # The batch's generated-name suffixes (in runs: no pass over the objects to count the
        # names to make) and uids (one urandom call) drawn together.
        suffixes = _suffix_runs(len(objs))
        uids = uuid4_strs(len(objs))
        copiers: dict[type, Callable[[Any, dict[str, Any]], Any]] = {}
        stamps: dict[type, dict[str, Any] | None] = {}  # status class -> its stamp
        Put, Compare = st.Put, st.Compare
        groups: dict[tuple[type[Resource], str], dict[tuple[str, str], builtins.list[str]]] = {}
        g: dict[tuple[str, str], builtins.list[str]] = {}
        g_of: tuple[type[Resource], str] | None = None
        for o, uid in zip(objs, uids, strict=True):
            md0 = o.metadata
            d = md0.__dict__
            name = d["name"]
            if not name:
                prefix = d["generate_name"]
                if not prefix:
                    identity(md0)  # raises: name or generateName is required
                name = generated_name(prefix, next(suffixes))
                fill = {"name": name, "uid": d["uid"] or uid, "creation_timestamp": d["creation_timestamp"] or now,
                        "generation": 1, "resource_version": None}
            else:
                fill = {"uid": d["uid"] or uid, "creation_timestamp": d["creation_timestamp"] or now,
                        "generation": 1, "resource_version": None}
            t: type = type(md0)
            if (copy := copiers.get(t)) is None:
                copy = copiers[t] = copier(t)
            md = copy(md0, fill)
            assign: dict[str, Any] = {"metadata": md}
            status = getattr(o, "status", None)
            if isinstance(status, BaseModel):
                t = type(status)
                if (copy := copiers.get(t)) is None:
                    copy = copiers[t] = copier(t)
                    stamps[t] = {"last_update": now} if _has_field(t, "last_update") else None
                stamp = stamps[t]
                assign["status"] = copy(status, stamp) if stamp is not None else shallow_copy(status)
            t = type(o)
            if (copy := copiers.get(t)) is None:
                copy = copiers[t] = copier(t)
            n = copy(o, assign)
            plural, ns = n.PLURAL, d["namespace"]
            key = f"{REGISTRY}{plural}/{ns}/{name}"
            if key in seen:
                raise Invalid(f'{n.resource_name()} "{n.name}" appears twice in one request')
            seen.add(key)
            out.append(n)
            compares.append(Compare(key, "create", "==", 0))  # absent
            ops.append(Put(key, n.to_json(), lease))
            if g_of != (t, ns):
                g_of = (t, ns)
                g = groups.setdefault(g_of, {})
            for e in n.index_entries():
                names = g.get(e)
                if names is None:
                    g[e] = [name]
                else:
                    names.append(name)
        prefixed = sorted((index_prefix(kind, i, ns, v), names)
                          for (kind, ns), g in groups.items() for (i, v), names in g.items())
        for prefix, names in prefixed:
            entries.extend([prefix + n for n in names])
        return out

    @staticmethod
    def _copy_for_write(o: R) -> R:
        """A copy whose metadata and status we may stamp without touching the caller's
        object (a deep copy costs more than the whole store write)."""
        n = shallow_copy(o)
        set_field(n, "metadata", shallow_copy(o.metadata))
        status = getattr(o, "status", None)
        if isinstance(status, BaseModel):
            set_field(n, "status", shallow_copy(status))
        return n

    def _prepare_update(self, old: R, new: R, now: datetime, stamp: bool) -> R:
        if int(old.metadata.resource_version or 0) <= 0:
            raise Conflict(old.resource_name(), old.name, "no resourceVersion")
        n = self._copy_for_write(new)
        md = n.metadata
        md.uid, md.creation_timestamp, md.name = old.metadata.uid, old.metadata.creation_timestamp, old.name
        md.generation = old.metadata.generation
        md.deletion_timestamp = old.metadata.deletion_timestamp or md.deletion_timestamp  # never undone
        if getattr(new, "spec", None) != getattr(old, "spec", None):
            md.generation += 1
        md.resource_version = None
        n.metadata = md
        if stamp:
            self._stamp(n, now)
        return n

    @_wrap_store_errors
    def write(
        self,
        creates: Sequence[Resource] = (),
        updates: Sequence[tuple[Resource, Resource]] = (),
        deletes: Sequence[Resource] = (),
        *,
        stamp: bool = True,
        dry_run: bool = False,
        check_deletes: bool = True,
        lease: int = 0,
    ) -> tuple[builtins.list[Resource], builtins.list[Resource]]:
        """Creates, CAS updates and CAS deletes in ONE store transaction: all or nothing.

        Returns (created, updated) as new objects with their resourceVersion; the inputs
        are not touched. Creates fail with AlreadyExists or Invalid (a missing parent or
        app), updates and deletes with Conflict/NotFound when the object moved meanwhile.
        ``generation`` is bumped on every spec change.

        ``lease``: the created and updated objects (and their index keys) are attached to this
        store lease and vanish when it expires. As in etcd, a put without the lease detaches a
        key from it, so every write of a leased object (a Node) must pass its lease."""
        return self._write(creates, updates, deletes, stamp=stamp, dry_run=dry_run,
                           check_deletes=check_deletes, lease=lease)

    def _write(
        self,
        creates: Sequence[Resource],
        updates: Sequence[tuple[Resource, Resource]],
        deletes: Sequence[Resource],
        *,
        stamp: bool,
        dry_run: bool,
        check_deletes: bool,
        lease: int,
    ) -> tuple[builtins.list[Resource], builtins.list[Resource]]:
        now = utcnow()
        compares: list[st.Compare] = []
        ops: list[st.Op] = []
        entries: list[str] = []  # the creates' index keys, put with an empty value after ops
        # The creates' copies and their ops in one pass (the checks below only read them).
        created = self._prepare_creates(creates, now, lease, compares, ops, entries)
        updated = [self._prepare_update(o, n, now, stamp) for o, n in updates]
        for check in ADMISSION_CHECKS:
            check(self, created, [(o, n) for (o, _), n in zip(updates, updated, strict=True)])
        compares += self._admission(created)
        finalized: set[int] = set()
        for (old, _), n in zip(updates, updated, strict=True):
            key = object_key(type(n), n.metadata.namespace, n.name)
            compares.append(st.Compare.mod(key, "==", int(old.metadata.resource_version or 0)))
            if n.metadata.deletion_timestamp is not None and not n.metadata.finalizers:
                # Kubernetes' finalizers: a deleted object goes once its last finalizer is removed.
                finalized.add(id(n))
                ops.append(st.Delete(key))
                ops.extend(st.Delete(k) for k in index_keys(old))
                continue
            ops.append(st.Put(key, n.to_json(), lease))
            old_idx, new_idx = index_keys(old), index_keys(n)
            ops.extend(st.Delete(k) for k in old_idx - new_idx)
            # Under a lease every index key is re-put, so all of them hang on that lease.
            ops.extend(st.Put(k, b"", lease) for k in (new_idx if lease else new_idx - old_idx))
        for o in deletes:
            key = object_key(type(o), o.metadata.namespace, o.name)
            if check_deletes and o.metadata.resource_version:
                compares.append(st.Compare.mod(key, "==", int(o.metadata.resource_version)))
            if o.metadata.finalizers:
                # Only marked (deletionTimestamp); whoever owns each finalizer cleans up and removes it.
                if o.metadata.deletion_timestamp is None:
                    marked = self._copy_for_write(o)
                    marked.metadata.deletion_timestamp = now
                    marked.metadata.resource_version = None
                    ops.append(st.Put(key, marked.to_json()))
                continue
            ops.append(st.Delete(key))
            ops.extend(st.Delete(k) for k in index_keys(o))
        if not ops:
            return [], []
        if dry_run:
            ok = self.store.txn(compares, [], []).succeeded
            revision = 0
        else:
            res = self.store.txn_with_entries(compares, ops, entries, lease) if entries else self.store.txn(compares, ops)
            ok, revision = res.succeeded, res.revision
        if not ok:
            self._explain_failure(created, [*updates, *((o, o) for o in deletes if check_deletes)])
        if not dry_run:
            rv = str(revision)
            for o in created:  # resourceVersion is in each created metadata's fields set already
                o.metadata.__dict__["resource_version"] = rv
            for o in updated:
                set_field(o.metadata, "resource_version", rv)
        return created, [u for u in updated if id(u) not in finalized]

    def _explain_failure(self, created: Sequence[Resource], pairs: Sequence[tuple[Resource, Resource]]) -> None:
        if created:
            err = self._explain_failed_create(created)
            if not isinstance(err, Conflict) or not pairs:
                raise err
        self._raise_conflict(pairs)

    def create_many(self, objs: Sequence[R], *, dry_run: bool = False, lease: int = 0) -> builtins.list[R]:
        """Create every object in ONE store transaction: all or nothing. Returns new
        objects (identity filled in, resourceVersion set); the inputs are not touched."""
        created, _ = self.write(creates=objs, dry_run=dry_run, lease=lease)
        return created  # type: ignore[return-value]

    def create(self, obj: R, *, dry_run: bool = False, lease: int = 0) -> R:
        return self.create_many([obj], dry_run=dry_run, lease=lease)[0]

    def update_many(self, pairs: Sequence[tuple[R, R]], *, stamp: bool = True, lease: int = 0) -> builtins.list[R]:
        """Write ``new`` over ``old`` for each pair, in ONE transaction, each with a CAS
        on ``old``'s resourceVersion. Raises Conflict (nothing written) if any moved."""
        _, updated = self.write(updates=pairs, stamp=stamp, lease=lease)
        return updated  # type: ignore[return-value]

    @_wrap_store_errors
    def write_status_patches(self, patches: Sequence[tuple[Resource, dict[str, Any]]], *,
                             stamp: bool = True, written: builtins.list[Any] | None = None,
                             compares: Sequence[st.Compare] = ()) -> int:
        """Status edits of cached objects in ONE transaction, each a compare-and-swap on its
        object's resourceVersion: ``(old, {status field: value})`` stores ``old`` with those
        status fields assigned (its spec, metadata and other status fields as they are, so
        ``generation`` does not move). The caller's objects are not touched and no object is
        returned: a controller that follows the store sees the result in its watch (the
        placement scheduler's bindings; kube-scheduler's shape). Per patch this builds one
        status and one object copy and encodes it, where ``update_many`` with a built new
        object costs six copies. Returns the revision written (0: nothing given); raises
        Conflict / NotFound (nothing written) when one of them moved. ``written``, when given,
        receives the objects as stored, with their new resourceVersion (an informer told to
        expect them takes them instead of decoding their watch events: issue 19). ``compares``:
        more conditions of the transaction (a node agent's claim: its window still open); when
        one fails, Conflict is raised as for a moved object."""
        if not patches:
            return 0
        now = utcnow()
        conds: list[st.Compare] = [*compares]
        ops: list[st.Op] = []
        news: builtins.list[Any] = []
        Put, Delete, Compare = st.Put, st.Delete, st.Compare
        for old, fields in patches:
            cls = type(old)
            status: BaseModel = old.status  # type: ignore[attr-defined]
            if stamp and _has_field(type(status), "last_update"):
                fields = {**fields, "last_update": now}
            md = old.metadata
            assign: dict[str, Any] = {"status": shallow_copy(status, fields)}
            if written is not None:
                # The object handed back gets its own metadata now (its resourceVersion is
                # set in place once the revision is known): three copies a patch, not four.
                md = assign["metadata"] = shallow_copy(md)
            new = shallow_copy(old, assign)
            if written is not None:
                news.append(new)
            key = f"{REGISTRY}{cls.PLURAL}/{md.namespace}/{md.name}"  # object_key, inlined
            conds.append(Compare(key, "mod", "==", int(md.resource_version or 0)))
            ops.append(Put(key, encode_stored(new)))
            # Index keys moved by the difference of the index entries: only the entries that
            # changed are quoted and formatted (a binding: node and boundnode; the labels,
            # app, workdir and parents of a status patch never move). A kind that names the
            # status fields its entries read (INDEXED_STATUS) is compared on those entries
            # alone, and not at all when the patch assigns none of them (a condition).
            indexed = cls.INDEXED_STATUS  # type: ignore[attr-defined]
            if indexed is None:
                old_e, new_e = old.index_entries(), new.index_entries()  # type: ignore[attr-defined]
            elif indexed.isdisjoint(fields):
                continue
            else:
                old_e, new_e = old.status_index_entries(), new.status_index_entries()  # type: ignore[attr-defined]
            if old_e != new_e:
                ops.extend(Delete(k) for k in _keys_of(old, old_e - new_e))
                ops.extend(Put(k, b"") for k in _keys_of(new, new_e - old_e))
        res = self.store.txn(conds, ops)
        if not res.succeeded:
            self._raise_conflict([(o, o) for o, _ in patches])
        if written is not None:
            rv = str(res.revision)
            for n in news:  # its own metadata copy (above), unseen by anyone so far
                set_field(n.metadata, "resource_version", rv)
            written.extend(news)
        return res.revision

    def _raise_conflict(self, pairs: Sequence[tuple[Resource, Resource]]) -> Any:
        keys = [object_key(type(o), o.metadata.namespace, o.name) for o, _ in pairs]
        for (old, _), kv in zip(pairs, self.store.get_many(keys), strict=True):
            if kv is None:
                raise NotFound(old.resource_name(), old.name)
            if str(kv.mod_revision) != old.metadata.resource_version:
                raise Conflict(old.resource_name(), old.name)
        if pairs:
            raise Conflict(pairs[0][0].resource_name(), pairs[0][0].name)
        raise Conflict("objects", "?", "concurrent write")

    def update(self, old: R, new: R) -> R:
        """Write ``new`` over ``old`` (CAS on ``old``'s resourceVersion). An update that removes
        the last finalizer of an object marked deleted deletes it (Kubernetes' contract): then
        ``new`` is returned as written last, as the API server answers such an update."""
        updated = self.update_many([(old, new)])
        return updated[0] if updated else new

    def mutate(self, kind: type[R], name: str, fn: Callable[[R], R | None], namespace: str = "default",
               retries: int = 50) -> R:
        """Read-modify-write with CAS, retried on conflict. ``fn`` edits a copy (or returns
        a new object); returning the object unchanged writes nothing."""
        for _ in range(retries):
            cur = self.get(kind, name, namespace)
            work = cur.model_copy(deep=True)
            res = fn(work)
            new = work if res is None else res
            if new == cur:
                return cur
            try:
                return self.update(cur, new)
            except Conflict:
                continue
        raise Conflict(kind.resource_name(), name, f"gave up after {retries} retries")

    def delete_many(self, objs: Sequence[Resource], *, expect_current: bool = True) -> int:
        """Delete objects and their index keys in one txn; CAS on their resourceVersion."""
        self.write(deletes=objs, check_deletes=expect_current)
        return len(objs)

    def delete(self, kind: type[Resource], name: str, namespace: str = "default") -> Resource:
        """Delete by name (retried on conflict). Raises NotFound."""
        for _ in range(50):
            cur = self.get(kind, name, namespace)
            try:
                self.delete_many([cur])
                return cur
            except Conflict:
                continue
        raise Conflict(kind.resource_name(), name, "gave up")

    # --- watch ---------------------------------------------------------------------

    @_wrap_store_errors
    def watch(self, kind: type[R], namespace: str | None = "default",
              start_revision: int | None = None) -> TypedWatch[R]:
        return TypedWatch(kind, self.store.watch(kind_prefix(kind, namespace), start_revision))


class TypedWatch(Generic[T]):
    """A store watch decoded into ADDED/MODIFIED/DELETED events of one kind."""

    def __init__(self, kind: type[T], watch: st.Watch) -> None:
        self.kind = kind
        self.raw = watch

    def decode(self, ev: st.Event) -> WatchEvent[T]:
        if ev.type == "DELETE":
            prev = ev.prev
            if prev is not None and prev.value:
                obj = decode_value(self.kind, prev.value)
            else:
                ns_name = ev.kv.key.rsplit("/", 2)
                obj = self.kind.model_construct(metadata=_meta_only(ns_name[-2], ns_name[-1]))
            obj.metadata.resource_version = str(ev.revision)
            return WatchEvent("DELETED", obj, ev.revision)
        obj = _decode(self.kind, ev.kv)
        typ: Literal["ADDED", "MODIFIED"] = "ADDED" if ev.kv.version == 1 else "MODIFIED"
        return WatchEvent(typ, obj, ev.revision)

    def poll(self, timeout: float | None = None) -> list[WatchEvent[T]]:
        return [self.decode(e) for e in self.raw.poll(timeout)]

    def __iter__(self) -> Iterator[WatchEvent[T]]:
        for e in self.raw:
            yield self.decode(e)

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> TypedWatch[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _meta_only(namespace: str, name: str) -> Any:
    return ObjectMeta(name=name, namespace=namespace)


def parse_object(doc: dict[str, Any], kinds: Iterable[type[Resource]]) -> Resource:
    """A manifest document → a resource of its kind; Invalid with pydantic's first error in words."""
    kind_name = doc.get("kind")
    if not isinstance(kind_name, str) or not kind_name:
        raise Invalid("Object 'Kind' is missing")
    api_version = doc.get("apiVersion")
    if api_version != API_VERSION:
        raise Invalid(f'no matches for kind "{kind_name}" in version "{api_version}"')
    for k in kinds:
        if k.KIND == kind_name:
            try:
                return k.model_validate(doc)
            except ValidationError as e:
                raw_meta = doc.get("metadata")
                meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
                name = meta.get("name") or (f"{meta['generateName']}*" if meta.get("generateName") else "?")
                raise Invalid(f'{k.resource_name()} "{name}" is invalid: {describe_validation_error(e)}') from None
    raise Invalid(f'no matches for kind "{kind_name}" in version "{api_version}"')


def describe_validation_error(e: ValidationError) -> str:
    """pydantic's first error as one kubectl-like phrase: ``spec.workdir: Required value``."""
    parts = []
    for err in e.errors()[:3]:
        loc = ".".join(str(x) for x in err["loc"] if not str(x).startswith("function-"))
        msg = err["msg"]
        if err["type"] == "missing":
            msg = "Required value"
        elif err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        parts.append(f"{loc}: {msg}" if loc and not msg.startswith(loc) else msg)
    return "; ".join(parts)


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))
