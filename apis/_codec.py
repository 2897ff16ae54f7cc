"""The one codec of stored objects: encoding (``encode``), decoding (``decode``) and copying
(``shallow_copy``, ``deep_copy``). Every surface (the registry, the informers through
``store.reflector``, watches, the CLI) goes through these, so the wire form and the copy rules
live in one place. It imports nothing of ours but ``store``; it was tested on pydantic 2.14
(pyproject pins the minor range: ``shallow_copy`` and the generated encoders read pydantic's
instance dicts).

Encoding: the stored JSON of a model (camelCase, ``None`` and defaults left out) without
pydantic's ``exclude_defaults`` pass.

``model_dump_json(exclude_defaults=True)`` builds the default of every field to compare it
with the value: for a Job that is three model constructions (``ObjectMeta()``,
``JobResources()``, ``JobStatus()``) and three pydantic ``__eq__`` calls in Python, two thirds
of the cost of serializing it (bench bulk-split). Here each model class gets a function,
generated once from its fields, that compares each value with a constant (the default, or what
the default factory returns), recurses into nested models and drops a nested model whose
fields are all left out when its default is its class's defaults; pydantic-core then writes
that tree of dicts (datetimes, enums and ``Any`` values as a model would write them, models
inside ``Any`` with their defaults left out too). The bytes are pydantic's own: orjson writes
the tree when it can (the same bytes, ~10x faster: issue 19), pydantic-core otherwise.

A class it cannot mirror exactly (custom serializers, computed or extra fields, a field type
it does not know) and a value of another type than its model field's (assigned without
validation) are left to pydantic: ``store_json`` returns None.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, TypeAdapter
from pydantic_core import PydanticUndefined

import store as st

M = TypeVar("M", bound=BaseModel)


class _Refused(Exception):
    """This value (or class) is left to pydantic."""


_Encoder = Callable[[Any], dict[str, Any]]
_encoders: dict[type, _Encoder | None] = {}
# Any: values are written by their runtime type, as pydantic writes an ``Any`` field; the flags
# reach models found inside ``Any`` values, as they do from ``model_dump_json``.
_ANY = TypeAdapter(Any)
_TO_JSON = _ANY.serializer.to_json  # TypeAdapter.dump_json's own call, without its wrapper
_ORJSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


def _refuse(*_: Any) -> Any:
    raise _Refused


def _strip_optional(ann: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(ann)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
        return typing.Union[tuple(args)], True  # noqa: UP007
    return ann, False


_PLAIN_SCALARS = (str, int, float, bool)


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def _plain(t: Any) -> bool:
    """A type whose values ``json`` writes as pydantic does (scalars, Literal, Any, and lists
    and dicts of those)."""
    if t is Any or t in _PLAIN_SCALARS:
        return True
    origin = typing.get_origin(t)
    if origin is typing.Literal:
        return all(type(a) in _PLAIN_SCALARS for a in typing.get_args(t))
    if origin is typing.Union or origin is types.UnionType:
        return all(a is type(None) or _plain(a) for a in typing.get_args(t))
    if origin is list:
        (a,) = typing.get_args(t) or (Any,)
        return _plain(a)
    if origin is dict:
        k, a = typing.get_args(t) or (str, Any)
        return k is str and _plain(a)
    return False


def _generate(cls: type[BaseModel]) -> _Encoder | None:
    """Source of ``enc(m) -> dict`` for ``cls``; None when the class is left to pydantic."""
    decorators = cls.__pydantic_decorators__
    if (decorators.field_serializers or decorators.model_serializers or cls.model_computed_fields
            or cls.model_config.get("extra") == "allow"):
        return None
    consts: dict[str, Any] = {"_Refused": _Refused, "_cls": cls, "_enc": _encoder}
    lines = ["def enc(m):", "    if type(m) is not _cls: raise _Refused", "    d = m.__dict__", "    out = {}"]

    def const(v: Any) -> str:
        name = f"_c{len(consts)}"
        consts[name] = v
        return name

    for name, f in cls.model_fields.items():
        if f.exclude:
            continue
        if getattr(f, "exclude_if", None) is not None:
            return None
        alias = f.serialization_alias or f.alias or name
        t, _ = _strip_optional(f.annotation)
        if f.default_factory is not None:
            try:
                default = f.default_factory()  # type: ignore[call-arg]
            except TypeError:  # a factory that takes the validated data
                return None
            has_default = True
        else:
            default = f.default
            has_default = default is not PydanticUndefined
        a = const(alias)
        lines.append(f"    v = d[{name!r}]")
        lines.append("    if v is not None:")
        if _is_model(t):
            if has_default and default is not None:
                try:
                    if type(default) is not t or _encoder(t)(default):
                        return None  # a default that is not the class's own defaults
                except _Refused:
                    return None
                # Every field at its default: the field itself is (as pydantic would drop it).
                lines += [f"        s = _enc({const(t)})(v)", "        if s:", f"            out[{a}] = s"]
            else:
                lines.append(f"        out[{a}] = _enc({const(t)})(v)")
            continue
        origin, args = typing.get_origin(t), typing.get_args(t)
        if origin in (list, dict) and args and _is_model(args[-1]):
            if origin is dict and args[0] is not str:
                return None
            e = const(args[-1])
            cmp = f" and v != {const(default)}" if has_default and default is not None else ""
            body = (f"[_enc({e})(x) for x in v]" if origin is list
                    else f"{{k: _enc({e})(x) for k, x in v.items()}}")
            lines.append(f"        if type(v) is not {'list' if origin is list else 'dict'}: raise _Refused")
            lines.append(f"        if True{cmp}: out[{a}] = {body}")
            continue
        if not (t is datetime or (isinstance(t, type) and issubclass(t, enum.Enum)) or _plain(t)):
            return None
        cmp = f" and v != {const(default)}" if has_default and default is not None else ""
        lines.append(f"        if True{cmp}: out[{a}] = v")
    lines.append("    return out")
    exec("\n".join(lines), consts)  # noqa: S102
    fn: _Encoder = consts["enc"]
    return fn


def _encoder(cls: type[BaseModel]) -> _Encoder:
    """The generated encoder of ``cls`` (one that refuses every value when it cannot be made)."""
    try:
        return _encoders[cls] or _refuse
    except KeyError:
        pass
    _encoders[cls] = None  # while generating: a recursive model refuses itself
    fn = _generate(cls)
    _encoders[cls] = fn
    return fn or _refuse


def store_json(obj: BaseModel) -> bytes | None:
    """``obj.model_dump_json(by_alias=True, exclude_none=True, exclude_defaults=True)`` as
    bytes, or None when this object is left to pydantic."""
    try:
        tree = _encoder(type(obj))(obj)
    except (_Refused, KeyError):
        return None
    try:
        # orjson writes this tree of plain values byte for byte as pydantic does (tested:
        # datetimes, floats, escapes, enums) in ~1/10 of the time (a finished Job: 6.5 vs
        # 73 µs); what it does not take (sets, bytes, models or subclasses inside ``Any``,
        # ints past 64 bits, non-str keys) raises and goes to pydantic.
        return orjson.dumps(tree, option=_ORJSON_OPTIONS)
    except TypeError:
        return _TO_JSON(tree, by_alias=True, exclude_none=True, exclude_defaults=True)


def encode(obj: BaseModel) -> bytes:
    """The stored form of ``obj``: camelCase, without None and defaults."""
    out = store_json(obj)
    if out is None:
        out = obj.model_dump_json(by_alias=True, exclude_none=True, exclude_defaults=True).encode()
    return out


def encode_stored(obj: BaseModel) -> bytes:
    """``encode(obj)`` with ``metadata.resourceVersion`` left out: what a write stores for a
    cached object whose version the store's revision will give (the registry's patch path
    writes a new status over a cached object without copying its metadata to clear it)."""
    try:
        tree = _encoder(type(obj))(obj)
    except (_Refused, KeyError):
        return obj.model_dump_json(by_alias=True, exclude_none=True, exclude_defaults=True,
                                   exclude={"metadata": {"resource_version"}}).encode()
    md = tree.get("metadata")
    if md is not None:
        md.pop("resourceVersion", None)
    try:
        return orjson.dumps(tree, option=_ORJSON_OPTIONS)  # as store_json: ~1/10 of pydantic's time
    except TypeError:
        return _TO_JSON(tree, by_alias=True, exclude_none=True, exclude_defaults=True)


def decode(kind: type[M], kv: st.KeyValue) -> M:
    """The object stored in ``kv``, its ``metadata.resourceVersion`` the key's mod revision."""
    obj = kind.model_validate_json(kv.value)
    obj.metadata.resource_version = str(kv.mod_revision)  # type: ignore[attr-defined]
    return obj


def decode_value(kind: type[M], value: bytes, revision: int | None = None) -> M:
    """The object in ``value``; its resourceVersion set to ``revision`` when given."""
    obj = kind.model_validate_json(value)
    if revision is not None:
        obj.metadata.resource_version = str(revision)  # type: ignore[attr-defined]
    return obj


_setattr = object.__setattr__
_new = object.__new__  # what a model class's __new__ is (BaseModel defines none)
_PRIVATE: dict[type, bool] = {}


def _has_private(cls: type) -> bool:
    """Whether ``cls`` declares private attributes (a class that has none has no
    ``__pydantic_private__`` slot value to read)."""
    has = _PRIVATE.get(cls)
    if has is None:
        has = _PRIVATE[cls] = bool(getattr(cls, "__private_attributes__", None))
    return has


def shallow_copy(m: M, assign: dict[str, Any] | None = None) -> M:
    """``m.model_copy()`` (pydantic's ``__copy__``: a shallow copy of the fields, the fields set,
    extra and private attributes) without its generic ``copy.copy`` calls; then the plain
    fields in ``assign`` assigned as ``set_field`` does."""
    cls = type(m)
    new = _new(cls)
    fields = m.__dict__.copy()
    if assign:
        fields.update(assign)
        fields_set = m.__pydantic_fields_set__ | assign.keys()
    else:
        fields_set = m.__pydantic_fields_set__.copy()
    _setattr(new, "__dict__", fields)
    extra = m.__pydantic_extra__
    _setattr(new, "__pydantic_extra__", extra if extra is None else extra.copy())
    _setattr(new, "__pydantic_fields_set__", fields_set)
    priv = m.__pydantic_private__ if _has_private(cls) else None
    _setattr(new, "__pydantic_private__",
             None if priv is None else {k: v for k, v in priv.items() if v is not PydanticUndefined})
    return new


def copier(cls: type[M]) -> Callable[[M, dict[str, Any]], M]:
    """``shallow_copy(m, assign)`` for objects of exactly ``cls``, with what depends on the
    class alone (its private attributes) decided once: a bulk create copies three models per
    object (10k objects per call), where the generic function's per-call look-ups were a
    third of the copy."""
    new_obj, setattr_ = _new, _setattr
    undefined = PydanticUndefined

    has_private = _has_private(cls)

    def copy(m: M, assign: dict[str, Any]) -> M:
        new = new_obj(cls)
        fields = m.__dict__.copy()
        fields.update(assign)
        setattr_(new, "__dict__", fields)
        extra = m.__pydantic_extra__
        setattr_(new, "__pydantic_extra__", extra if extra is None else extra.copy())
        setattr_(new, "__pydantic_fields_set__", m.__pydantic_fields_set__ | assign.keys())
        priv = m.__pydantic_private__ if has_private else None
        setattr_(new, "__pydantic_private__",
                 None if priv is None else {k: v for k, v in priv.items() if v is not undefined})
        return new
    return copy


def deep_copy(m: M) -> M:
    """A copy that shares nothing mutable with ``m`` (what a writer edits when ``m`` is a
    cached object)."""
    return m.model_copy(deep=True)


def stored_job_state(value: bytes) -> str | None:
    """A stored Job's ``status.state`` read from its bytes without building the model (a
    plain JSON parse, ~5x cheaper than pydantic's): what a cache that keeps no terminal jobs
    asks of each value at start-up. None when the state is left out (its default)."""
    doc = orjson.loads(value)
    status = doc.get("status") if isinstance(doc, dict) else None
    state = status.get("state") if isinstance(status, dict) else None
    return state if isinstance(state, str) else None


def stored_job_head(value: bytes) -> tuple[str | None, dict[str, Any]]:
    """A stored Job's ``status.state`` (None: left out, its default) and its ``metadata`` as
    plain JSON (camelCase keys, defaults left out), read without building the model: what
    the Job cache asks of a job's last event before the job leaves it."""
    doc = orjson.loads(value)
    if not isinstance(doc, dict):
        return None, {}
    status = doc.get("status")
    state = status.get("state") if isinstance(status, dict) else None
    meta = doc.get("metadata")
    return (state if isinstance(state, str) else None), (meta if isinstance(meta, dict) else {})
