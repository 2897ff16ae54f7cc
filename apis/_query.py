"""Lazy, chainable queries (Balsam's Django-like API) answered from the store's indexes.

Filters that an index answers (``id``, ``state``, ``tags``, ``app_id``, ``parent_id``,
``workdir``, ``site_name``, a label selector's equalities) narrow the candidate names with key-only index reads; ``count()`` of a
query made only of such filters never reads an object.  Every other filter is checked on the
fetched objects, so the result is the same either way.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from ._balsam import APPLIERS, apply_fields
from ._config import default_namespace
from ._context import ClientPort, bind
from ._errors import BadRequest, Conflict
from ._registry import Registry, WatchEvent, index_prefix
from ._selectors import Selector, parse_selector
from ._sites import site_namespace
from ._states import JobState, parse_state
from ._watch import watch_query

if TYPE_CHECKING:
    import threading

    from ._meta import Resource

R = TypeVar("R", bound="Resource")

Pred = Callable[[Any], bool]


def _as_list(v: Any) -> list[Any]:
    if isinstance(v, (list, tuple, set, frozenset)):
        return list(v)
    return [v]


def _name_of(v: Any) -> str:
    return v.id if hasattr(v, "id") and not isinstance(v, str) else str(v)


def _tags_arg(v: Any) -> dict[str, str]:
    if isinstance(v, dict):
        return {str(k): str(x) for k, x in v.items()}
    out = {}
    for item in _as_list(v):  # Balsam's CLI form "K:V" / "K=V"
        k, sep, x = str(item).replace(":", "=", 1).partition("=")
        if not sep:
            raise BadRequest(f"tag filter {item!r} must be KEY=VALUE")
        out[k] = x
    return out


def _states(v: Any) -> list[str]:
    try:
        return [parse_state(str(s)).value for s in _as_list(v)]
    except ValueError as e:
        raise BadRequest(str(e)) from None


def _dt(v: Any) -> datetime:
    if isinstance(v, datetime):
        return v
    try:
        return datetime.fromisoformat(str(v))
    except ValueError:
        raise BadRequest(f"invalid time {v!r}") from None


def field_value(obj: Any, field: str) -> Any:
    """A value to order or print by: a Balsam attribute (``last_update``), or a dotted
    path in the object (``spec.resources.numNodes`` / ``metadata.name``)."""
    if "." not in field:
        if field in ("id", "name"):
            return obj.metadata.name
        if field in ("creation_timestamp", "created"):
            return obj.metadata.creation_timestamp
        if hasattr(type(obj), field) or field in getattr(type(obj), "model_fields", {}):
            v = getattr(obj, field)
            return str(v) if hasattr(v, "__fspath__") else v
    cur: Any = obj.to_dict() if hasattr(obj, "to_dict") else obj
    for part in field.lstrip(".").split("."):
        if isinstance(cur, dict):
            cur = cur.get(part)
        else:
            cur = getattr(cur, part, None)
        if cur is None:
            return None
    return cur


#: Indexes under which an object has at most one value (parents, nodes and labels may be several).
_EXCLUSIVE_INDEXES = frozenset({"state", "app", "workdir", "site"})

_PLAIN_ORDER_FIELDS = frozenset({"id", "name", "creation_timestamp", "created"})


def check_order_field(model: type[Any], field: str) -> None:
    """BadRequest unless ``field`` (``-`` for descending) names something ``model`` has: a
    Balsam attribute, ``id``/``name``/``created``, or a path through its fields (camelCase or
    snake_case; any key under a dictionary such as ``metadata.labels``)."""
    name = field[1:] if field.startswith("-") else field
    if not name:
        raise BadRequest("order_by: empty field name")
    if "." not in name:
        if name in _PLAIN_ORDER_FIELDS or name in getattr(model, "model_fields", {}) or (
            hasattr(model, name) and not callable(getattr(model, name, None))
        ) or (getattr(model, "KIND", "") == "Job" and name in APPLIERS):
            return
        raise BadRequest(f"order_by: unknown field {name!r} for {getattr(model, 'PLURAL', model.__name__)}")
    cur: Any = model
    for part in name.lstrip(".").split("."):
        if cur is None:  # under a dictionary: any key
            continue
        fields = getattr(cur, "model_fields", None)
        if fields is None:
            raise BadRequest(f"order_by: unknown field {name!r}: {part!r} is below a plain value")
        info = fields.get(part) or next((f for n, f in fields.items() if f.alias == part
                                         or _camel(n) == part), None)
        if info is None:
            raise BadRequest(f"order_by: unknown field {name!r}: no {part!r} in {cur.__name__}")
        ann = info.annotation
        cur = _model_in(ann)


def _camel(n: str) -> str:
    head, *rest = n.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _model_in(ann: Any) -> Any:
    """The pydantic model a field holds (``X | None`` too); None for a dict or a plain value;
    a dict-like marker is None too (any key below it is accepted)."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for a in getattr(ann, "__args__", ()) or ():
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None if _is_mapping(ann) else _Leaf


def _is_mapping(ann: Any) -> bool:
    origin = getattr(ann, "__origin__", None)
    return ann is dict or origin is dict or any(_is_mapping(a) for a in getattr(ann, "__args__", ()) or ())


class _Leaf:
    """A plain value: nothing below it can be ordered by."""

    model_fields = None


def _sort_key(v: Any) -> tuple[int, Any]:
    if v is None:
        return (0, 0)
    if isinstance(v, (int, float)):
        return (1, v)
    if isinstance(v, datetime):
        return (2, v.timestamp())
    return (3, str(v))


class _Inexact:
    def __init__(self, entries: list[tuple[str, list[str]]]) -> None:
        self.entries = entries


class QuerySet(Generic[R]):
    """``Kind.objects.filter(...)``: nothing is read until iterated, counted or sliced."""

    def __init__(self, model: type[R], client: ClientPort | Registry, namespace: str | None = None) -> None:
        """A query of ``model`` through ``client`` (an ``apis.Client``; a bare Registry for the
        CLI and controllers: the objects it returns then remember no client)."""
        self.model = model
        if isinstance(client, Registry):
            self.client: ClientPort | None = None
            self._registry: Registry | None = client
            default_ns = default_namespace
        else:
            self.client = client
            self._registry = None
            default_ns = lambda: client.namespace  # noqa: E731
        self.namespace = namespace if namespace is not None else default_ns()
        self._preds: list[Pred] = []
        self._index: list[tuple[str, list[str]]] = []  # (index, values): name must be in the union
        self._only_index = True
        self._order: tuple[str, ...] = ()
        self._slice: slice | None = None
        self._cache: list[R] | None = None

    @property
    def registry(self) -> Registry:
        """The registry of the client this query was made on."""
        if self._registry is not None:
            return self._registry
        reg: Registry = self.client.registry  # type: ignore[union-attr]
        return reg

    def _clone(self) -> QuerySet[R]:
        c = copy.copy(self)
        c._preds = list(self._preds)
        c._index = list(self._index)
        c._cache = None
        return c

    # --- building ----------------------------------------------------------------

    def all(self) -> QuerySet[R]:
        """The same query (a copy: Django's and Balsam's ``all()``)."""
        return self._clone()

    def filter(self, **kw: Any) -> QuerySet[R]:
        """The query narrowed by every keyword (see ``Manager.filter`` for the keywords); an
        unknown keyword is refused (``apis.BadRequest``)."""
        c = self._clone()
        for k, v in kw.items():
            c._add(k, v, negate=False)
        return c

    def exclude(self, **kw: Any) -> QuerySet[R]:
        """The query without the objects matching the keywords."""
        c = self._clone()
        for k, v in kw.items():
            c._add(k, v, negate=True)
        return c

    def in_namespace(self, namespace: str) -> QuerySet[R]:
        """The same query in another namespace."""
        c = self._clone()
        c.namespace = namespace
        return c

    def _add(self, key: str, value: Any, negate: bool) -> None:
        if self._slice is not None:
            raise BadRequest("cannot filter a query once a slice has been taken")
        pred, entries, exact = self._compile(key, value)
        if negate:
            self._preds.append(lambda o, p=pred: not p(o))  # type: ignore[misc]
            self._only_index = False
            return
        self._preds.append(pred)
        self._index.extend(entries)
        if not exact:
            self._only_index = False

    def _compile(self, key: str, value: Any) -> tuple[Pred, list[tuple[str, list[str]]], bool]:
        """(predicate, index entries that narrow candidates, whether the entries alone decide)."""
        pred, index = self._compile_one(key, value)
        if isinstance(index, _Inexact):
            return pred, index.entries, False
        if isinstance(index, list):
            return pred, index, True
        if index is None:
            return pred, [], key in ("namespace",) or (key in ("tags", "labels") and not _tags_arg(value))
        return pred, [index], True

    def _compile_one(self, key: str, value: Any) -> tuple[Pred, Any]:
        is_job = self.model.KIND == "Job"
        if key in ("id", "name", "id__in", "name__in"):
            names = [_name_of(v) for v in _as_list(value)]
            s = set(names)
            return (lambda o: o.metadata.name in s), ("name", names)
        if key in ("tags", "labels"):
            want = _tags_arg(value)
            if not want:
                return (lambda o: True), None
            entries = [("label", [f"{k}={v}"]) for k, v in want.items()]
            return (lambda o: all(o.metadata.labels.get(k) == x for k, x in want.items())), entries
        if key == "selector":
            sel: Selector = value if isinstance(value, Selector) else parse_selector(str(value))
            # ``k=v`` and ``k in (a,b)`` read the label index, ``k`` the label-key index;
            # ``!=``, ``notin`` and ``!k`` (which no index answers) are checked on the
            # objects the others leave.
            sel_entries: list[tuple[str, list[str]]] = []
            exact = True
            for r in sel.requirements:
                if r.op in ("=", "in"):
                    sel_entries.append(("label", [f"{r.key}={v}" for v in r.values]))
                elif r.op == "exists":
                    sel_entries.append(("labelkey", [r.key]))
                else:
                    exact = False
            if not exact:
                return (lambda o: sel.matches(o.metadata.labels)), _Inexact(sel_entries)
            return (lambda o: sel.matches(o.metadata.labels)), sel_entries
        if key == "namespace":
            self.namespace = str(value)
            return (lambda o: True), None
        if not is_job:
            raise BadRequest(f"unknown filter {key!r} for {self.model.PLURAL}")
        if key in ("state", "state__in"):
            states = _states(value)
            ss = set(states)
            return (lambda o: o.status.state.value in ss), ("state", states)
        if key == "state__ne":
            ne = set(_states(value))
            return (lambda o: o.status.state.value not in ne), None
        if key in ("app_id", "app", "app_name"):
            apps = [str(a) for a in _as_list(value)]
            sa = set(apps)
            return (lambda o: o.spec.app in sa), ("app", apps)
        if key in ("parent_id", "parents", "parent"):
            parents = [_name_of(v) for v in _as_list(value)]
            sp = set(parents)
            return (lambda o: bool(sp.intersection(o.spec.parents))), ("parent", parents)
        if key == "site_name":
            # The site index holds only jobs that name a site: ``site_name=None`` is a scan.
            if value is not None and self.registry.index_ready(self.model):
                return (lambda o: o.spec.site == value), ("site", [str(value)])
            return (lambda o: o.spec.site == value), None
        if key == "site_id":
            # Balsam's Site.id: the jobs of that Site, in its namespace (a job that names no site
            # belongs to its namespace's site).
            site = _name_of(value)
            ns = site_namespace(self.registry, site, self.namespace)
            if ns is None:
                raise BadRequest(f"no Site {site!r} (site_id)")
            self.namespace = ns
            return (lambda o: o.spec.site in (None, site)), None
        if key == "workdir__contains":
            frag = str(value)
            return (lambda o: frag in o.spec.workdir), None
        if key == "workdir":
            wd = str(value)
            if self.registry.index_ready(self.model):
                return (lambda o: o.spec.workdir == wd), ("workdir", [wd])
            return (lambda o: o.spec.workdir == wd), None
        if key == "parameters":
            want_p = _tags_arg(value)
            return (lambda o: all(o.spec.parameters.get(k) == x for k, x in want_p.items())), None
        if key in ("last_update__gt", "last_update__lt"):
            t = _dt(value)
            if key.endswith("gt"):
                return (lambda o: o.status.last_update is not None and o.status.last_update > t), None
            return (lambda o: o.status.last_update is not None and o.status.last_update < t), None
        if key == "return_code":
            return (lambda o: o.status.return_code == value), None
        if key == "node":
            n = str(value)
            return (lambda o: o.status.placement is not None and n in o.status.placement.nodes), ("node", [n])
        raise BadRequest(f"unknown filter {key!r} for jobs")

    def order_by(self, *fields: str) -> QuerySet[R]:
        """The same query, ordered by ``fields``: a Balsam attribute (``last_update``, ``state``,
        ``workdir``...), ``id``/``name``, ``created``, or a path in the object
        (``spec.resources.numNodes``); ``-field`` descends. An unknown field is refused
        (``apis.BadRequest``) rather than ignored."""
        for f in fields:
            check_order_field(self.model, f)
        c = self._clone()
        c._order = fields
        return c

    def watch(self, resource_version: int | str | None = None, *, timeout: float | None = None,
              stop: threading.Event | None = None) -> Iterator[WatchEvent[R]]:
        """Follow the query as typed events (``apis.WatchEvent``: ``.type`` is ``ADDED``,
        ``MODIFIED`` or ``DELETED``, ``.object`` the object, ``.revision`` where it happened).

        Without ``resource_version``: the matching objects first (``ADDED`` each), then every
        change. With ``resource_version=N`` (an event's ``revision``): the changes after
        revision ``N`` only, to resume a stream. An object that stops matching is ``DELETED``
        from the stream, one that starts matching ``ADDED``. After a store compaction the
        stream relists and reports the difference. It ends after ``timeout`` seconds, or when
        ``stop`` is set (``None``: never); closing the generator closes the store watch."""
        if self._slice is not None:
            raise BadRequest("cannot watch a sliced query")
        rv: int | None = None
        if resource_version is not None and str(resource_version) != "":
            try:
                rv = int(resource_version)
            except ValueError:
                raise BadRequest(f"invalid resource_version {resource_version!r}: expected a revision") from None
            if rv < 0:
                raise BadRequest(f"invalid resource_version {resource_version!r}: expected a revision")
        names = None
        for index, values in self._index:
            if index == "name":
                names = set(values) if names is None else names & set(values)
        preds = list(self._preds)
        base = self._clone()
        base._order = ()

        def list_matching() -> list[R]:
            q = base._clone()
            return q._fetch()

        client = self.client
        return watch_query(
            self.registry, self.model, self.namespace, lambda o: all(p(o) for p in preds), list_matching,
            names=names, resource_version=rv, timeout=timeout, stop=stop,
            on_bind=None if client is None else (lambda o: bind(o, client)),
        )

    def __getitem__(self, item: int | slice) -> Any:
        """``qs[i]``: one object; ``qs[a:b]``: a lazy slice (no step)."""
        if isinstance(item, int):
            items = self._fetch()
            return items[item]
        if item.step not in (None, 1):
            raise BadRequest("slices with a step are not supported")
        c = self._clone()
        if c._slice is not None:
            base = range(*c._slice.indices(10**12))[item]
            c._slice = slice(base.start, base.stop)
        else:
            c._slice = item
        return c

    # --- evaluation --------------------------------------------------------------

    def _index_names(self, index: str, value: str) -> list[str]:
        if index == "labelkey":  # label key present, any value: a prefix of the label index
            return self.registry.index_names(self.model, "label", f"{value}=", self.namespace, value_prefix=True)
        return self.registry.index_names(self.model, index, value, self.namespace)

    def _index_count(self, index: str, value: str) -> int:
        if index == "labelkey":
            return self.registry.index_count(self.model, "label", f"{value}=", self.namespace, value_prefix=True)
        return self.registry.index_count(self.model, index, value, self.namespace)

    def _candidate_names(self) -> list[str] | None:
        """Names that every index filter allows (None: no index filter). Filters on one index
        value each (``state=X``, ``k=v``) are ANDed by the store (``Store.intersect``), which
        walks the smallest of them and looks the rest up instead of reading every entry."""
        if not self._index:
            return None
        sets: list[list[str]] = []
        single: list[tuple[str, str]] = []  # one-value filters: (index, value)
        for index, values in self._index:
            if index == "name":
                sets.append(values)
                continue
            if index != "labelkey" and len(set(values)) == 1:
                single.append((index, values[0]))
                continue
            names: list[str] = []
            for v in values:
                names.extend(self._index_names(index, v))
            sets.append(names)
        if len(single) == 1:
            sets.append(self._index_names(*single[0]))
        elif single:
            sets.append(self.registry.store.intersect(
                [index_prefix(self.model, i, self.namespace, v) for i, v in single]))
        sets.sort(key=len)
        result = list(dict.fromkeys(sets[0]))
        for other in sets[1:]:
            keep = set(other)
            result = [n for n in result if n in keep]
        return result

    def index_names(self) -> list[str] | None:
        """The matching names in name order, read from index keys alone (no object read or
        decoded): what ``get -o name`` prints. None when the index cannot decide alone (a
        filter it only narrows, no index filter, names given, an order or a slice)."""
        if not (self._index and self._only_index) or self._order or self._slice is not None:
            return None
        if any(i == "name" for i, _ in self._index):
            return None  # names given are not known to exist without a read
        names = self._candidate_names()
        return None if names is None else sorted(set(names))

    def _fetch(self) -> list[R]:
        if self._cache is not None:
            return self._cache
        reg = self.registry
        names = self._candidate_names()
        if names is None:
            objs, _ = reg.list(self.model, self.namespace)
        else:
            objs = [o for o in reg.get_many(self.model, names, self.namespace) if o is not None]
        return self._select(objs)

    def _select(self, objs: list[R]) -> list[R]:
        objs = [o for o in objs if all(p(o) for p in self._preds)]
        if self._order:
            for f in reversed(self._order):
                desc = f.startswith("-")
                name = f.lstrip("-")
                objs.sort(key=lambda o, n=name: _sort_key(field_value(o, n)), reverse=desc)  # type: ignore[misc]
        elif self.model.KIND == "Job":
            objs.sort(key=lambda o: (_sort_key(o.metadata.creation_timestamp), o.metadata.name))
        if self._slice is not None:
            objs = objs[self._slice]
        if self.client is not None:
            for o in objs:
                bind(o, self.client)
        self._cache = objs
        return objs

    def __iter__(self) -> Iterator[R]:
        """The matching objects (read once, then cached)."""
        return iter(self._fetch())

    def __len__(self) -> int:
        """How many objects the query yields (reads them; ``count()`` may not)."""
        return len(self._fetch())

    def __bool__(self) -> bool:
        return bool(self._fetch())

    def __repr__(self) -> str:
        items = self._fetch()
        shown = ", ".join(o.metadata.name or "?" for o in items[:10])
        more = ", ..." if len(items) > 10 else ""
        return f"<{self.model.KIND}Query [{shown}{more}]>"

    def count(self) -> int:
        """How many objects match, answered from the store's indexes when the filters allow
        (always equal to the number iteration yields)."""
        if self._cache is None and self._slice is None and self._only_index:
            if not self._index:
                return self.registry.count(self.model, self.namespace)
            if len(self._index) == 1 and self._index[0][0] in _EXCLUSIVE_INDEXES:
                # An object has one state and one app: the counts of several values add up.
                index, values = self._index[0]
                return sum(self._index_count(index, v) for v in set(values))
            names = self._candidate_names()
            if names is not None and all(i != "name" for i, _ in self._index):
                return len(names)
        return len(self._fetch())

    def exists(self) -> bool:
        """Whether any object matches."""
        return self.count() > 0

    def first(self) -> R | None:
        """The first object in the query's order, or None."""
        items = self._fetch()
        return items[0] if items else None

    def get(self, **kw: Any) -> R:
        """The one object matching the query and ``kw``: ``Kind.DoesNotExist`` when none does,
        ``Kind.MultipleObjectsReturned`` when several do."""
        qs = self.filter(**kw) if kw else self
        items = qs._fetch()
        if not items:
            raise self.model.DoesNotExist(  # type: ignore[attr-defined]
                f"{self.model.KIND} matching query does not exist ({kw or 'all'})"
            )
        if len(items) > 1:
            raise self.model.MultipleObjectsReturned(  # type: ignore[attr-defined]
                f"get() returned {len(items)} {self.model.PLURAL} for {kw or 'all'}; expected exactly one"
            )
        return items[0]

    def update(self, **fields: Any) -> int:
        """Apply Balsam field assignments to every matching object; one transaction per
        chunk with CAS, re-read and retried on conflict. Returns the number updated."""
        reg = self.registry
        targets = [o.metadata.name for o in self._fetch()]
        done = 0
        for i in range(0, len(targets), 5000):
            chunk = targets[i : i + 5000]
            for _attempt in range(20):
                cur = [o for o in reg.get_many(self.model, chunk, self.namespace) if o is not None]
                pairs = []
                for o in cur:
                    n = o.model_copy(deep=True)
                    if self.model.KIND == "Job":
                        apply_fields(n, fields)  # type: ignore[arg-type]
                    else:
                        raise BadRequest(f"update() is only supported for jobs, not {self.model.PLURAL}")
                    if n != o:
                        pairs.append((o, n))
                try:
                    reg.update_many(pairs)
                    done += len(pairs)
                    break
                except Conflict:
                    continue
            else:
                raise Conflict(self.model.resource_name(), chunk[0] or "?", "update kept conflicting")
        self._cache = None
        return done

    def delete(self) -> int:
        """Delete every matching object (5000 per transaction); returns how many."""
        reg = self.registry
        objs = self._fetch()
        n = 0
        for i in range(0, len(objs), 5000):
            n += reg.delete_many(objs[i : i + 5000], expect_current=False)
        self._cache = None
        return n


__all__ = ["QuerySet", "JobState", "field_value"]
