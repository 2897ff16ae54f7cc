"""What every resource has: apiVersion, kind, metadata, spec, status (Kubernetes' object shape)."""

from __future__ import annotations

import functools
import os
import re
import secrets
import threading
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from ._codec import encode
from ._codec import shallow_copy as shallow_copy  # re-exported: its home was here before apis._codec

API_GROUP = "balsam.io"
API_VERSION = f"{API_GROUP}/v1"

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


M = TypeVar("M", bound=BaseModel)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Model(BaseModel):
    """Base of every API struct: camelCase in YAML/JSON, snake_case in Python,
    unknown fields refused (a typo in a manifest is an error, not a silent no-op)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=False,
    )


def validate_name(name: str, what: str = "metadata.name") -> str:
    if not name or len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
        raise ValueError(
            f'{what}: Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case '
            "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        )
    return name


def validate_label_key(key: str) -> str:
    prefix, _, name = key.rpartition("/")
    if prefix:
        validate_name(prefix, f"label key {key!r} prefix")
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        raise ValueError(
            f"label key {key!r} is invalid: a name of at most 63 characters of alphanumerics, '-', '_' "
            "or '.', starting and ending with an alphanumeric"
        )
    return key


def validate_label_value(key: str, value: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise ValueError(
            f"label {key}={value!r}: a value must be at most 63 characters of alphanumerics, '-', '_' "
            "or '.', starting and ending with an alphanumeric (or empty)"
        )
    return value


# Two base36 digits per divmod, least significant first (what one divmod by 36 per digit gives).
_BASE36_PAIRS = [_BASE36[r % 36] + _BASE36[r // 36] for r in range(36 * 36)]


def _base36(v: int, n: int) -> str:
    out = []
    for _ in range((n + 1) // 2):
        v, r = divmod(v, 1296)
        out.append(_BASE36_PAIRS[r])
    return "".join(out)[:n]


@functools.lru_cache(maxsize=4096)
def _check_label(key: str, value: str) -> None:
    """Both checks of a label; the same few labels recur on every object (and every decode)."""
    validate_label_value(validate_label_key(key), value)


def random_suffix(n: int = 10) -> str:
    """A lowercase base36 suffix for generateName (10 chars: 3.6e15 values, no retry loop needed)."""
    return _base36(int.from_bytes(secrets.token_bytes(8)), n)


# Generated names: a stem of 6 random base36 characters per process, then a counter of 4
# written most significant first, so that the names one process generates sort in the order
# it made them. A store's b-trees (SQLite's kv and idx: the object key and every index key
# end with the name) then take a bulk create's keys as appends next to each other, not as
# inserts spread over every page: at 10^6 jobs, 7.5k → 21k jobs/s in the raw SQL model
# (docs/design.md, "SQLite bulk_create"). Still 10 base36 characters. Two processes collide
# only if they draw the same stem (1 in 2.2e9 per pair) and reach the same counts; the
# create then fails AlreadyExists, as a random collision would.
_SERIAL_SPAN = 36**4  # names per stem; then a new stem
_BASE36_MSB = [_BASE36[r // 36] + _BASE36[r % 36] for r in range(36 * 36)]
_serial_lock = threading.Lock()
_serial: list[Any] = ["", _SERIAL_SPAN]  # [stem, next count]: a stem is drawn on first use


def _new_serial() -> None:
    _serial[0] = _base36(int.from_bytes(secrets.token_bytes(4)) & 0x7FFFFFFF, 6)
    _serial[1] = 0


os.register_at_fork(after_in_child=lambda: _serial.__setitem__(1, _SERIAL_SPAN))  # a child draws its own


def serial_suffix() -> str:
    """The next generated-name suffix of this process (10 base36 characters, see above)."""
    with _serial_lock:
        n = _serial[1]
        if n >= _SERIAL_SPAN:
            _new_serial()
            n = 0
        _serial[1] = n + 1
        stem = _serial[0]
    hi, lo = divmod(n, 1296)
    return f"{stem}{_BASE36_MSB[hi]}{_BASE36_MSB[lo]}"


def serial_suffixes(n: int) -> list[str]:
    """The next ``n`` generated-name suffixes of this process (``serial_suffix`` ``n`` times,
    under one lock: a bulk create takes its batch's names at once)."""
    out: list[str] = []
    with _serial_lock:
        while len(out) < n:
            c = _serial[1]
            if c >= _SERIAL_SPAN:
                _new_serial()
                c = 0
            end = min(_SERIAL_SPAN, c + n - len(out))
            stem, msb = _serial[0], _BASE36_MSB
            out.extend([f"{stem}{msb[k // 1296]}{msb[k % 1296]}" for k in range(c, end)])
            _serial[1] = end
    return out


_UUID_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def uuid4_strs(n: int) -> list[str]:
    """``n`` random uuid4 strings from one ``os.urandom`` call (as ``_uuid4_str``: the version
    nibble 4, the variant bits 10)."""
    x, v = os.urandom(16 * n).hex(), _UUID_VARIANT
    return [f"{x[i:i + 8]}-{x[i + 8:i + 12]}-4{x[i + 13:i + 16]}-{v[x[i + 16]]}{x[i + 17:i + 20]}-{x[i + 20:i + 32]}"
            for i in range(0, 32 * n, 32)]


def _uuid4_str(b: bytes) -> str:
    """``str(uuid.UUID(bytes=b, version=4))`` for 16 random bytes, without the UUID object."""
    h = bytearray(b)
    h[6] = (h[6] & 0x0F) | 0x40
    h[8] = (h[8] & 0x3F) | 0x80
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


@functools.lru_cache(maxsize=1024)
def _generated_names_valid(prefix: str) -> bool:
    """Whether ``prefix`` + any 10 base36 characters is a valid name (it depends on the prefix only)."""
    try:
        validate_name(prefix + "0" * 10)
    except ValueError:
        return False
    return True


def generated_name(prefix: str, suffix: str) -> str:
    """``prefix + suffix`` as a generated name, validated unless every such name is valid."""
    name = prefix + suffix
    return name if _generated_names_valid(prefix) else validate_name(name)


def set_field(m: BaseModel, name: str, value: Any) -> None:
    """``m.name = value`` for a plain field of a model without validate_assignment, as pydantic
    does it (the value in ``__dict__``, the name in the fields set) minus its per-assignment
    dispatch, which costs more than the rest of a write's model work."""
    m.__dict__[name] = value
    m.__pydantic_fields_set__.add(name)


def identity(md: ObjectMeta, now: datetime | None = None) -> dict[str, Any]:
    """What the server assigns on create, as field values for ``md``: name (from
    generateName, when there is no name), uid, creationTimestamp and generation (kept where set).
    (A batch draws its suffixes and uids at once: ``Registry._prepare_creates``.)"""
    out: dict[str, Any] = {}
    if not md.name:
        prefix = md.generate_name
        if not prefix:
            raise ValueError("metadata.name: Required value: name or generateName is required")
        out["name"] = generated_name(prefix, serial_suffix())
    out["uid"] = md.uid or _uuid4_str(os.urandom(16))
    out["creation_timestamp"] = md.creation_timestamp or now or utcnow()
    out["generation"] = md.generation or 1
    return out


class OwnerReference(Model):
    api_version: str = API_VERSION
    kind: str
    name: str
    uid: str
    controller: bool | None = None


class ObjectMeta(Model):
    name: str | None = None
    generate_name: str | None = None
    namespace: str = "default"
    uid: str | None = None
    resource_version: str | None = None
    generation: int = 0
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    owner_references: list[OwnerReference] = Field(default_factory=list)
    finalizers: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return None if v is None else validate_name(v)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        return validate_name(v, "metadata.namespace")

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, v: Any) -> Any:
        if isinstance(v, dict):
            out = {}
            for k, val in v.items():
                k = str(k)
                sval = "" if val is None else val if type(val) is str else str(val)  # Balsam: "even numerical tags are strings"
                _check_label(k, sval)
                out[k] = sval
            return out
        return v

    @field_validator("annotations", mode="before")
    @classmethod
    def _annotations(cls, v: Any) -> Any:
        if isinstance(v, dict):
            total = sum(len(str(k)) + len(str(x)) for k, x in v.items())
            if total > 256 * 1024:
                raise ValueError(f"metadata.annotations: Too long: must have at most 262144 bytes (got {total})")
            return {str(k): str(x) for k, x in v.items()}
        return v


class Condition(Model):
    type: str
    status: Literal["True", "False", "Unknown"] = "True"
    reason: str = ""
    message: str = ""
    last_transition_time: datetime | None = None
    observed_generation: int | None = None


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: Literal["True", "False", "Unknown"],
    reason: str = "",
    message: str = "",
    now: datetime | None = None,
) -> bool:
    """Set or replace the condition ``type_``; returns True when anything changed.
    ``lastTransitionTime`` moves only when ``status`` flips (Kubernetes' rule)."""
    now = now or utcnow()
    for i, c in enumerate(conditions):
        if c.type == type_:
            if (c.status, c.reason, c.message) == (status, reason, message):
                return False
            ltt = c.last_transition_time if c.status == status else now
            conditions[i] = Condition(type=type_, status=status, reason=reason, message=message,
                                      last_transition_time=ltt)
            return True
    conditions.append(Condition(type=type_, status=status, reason=reason, message=message,
                                last_transition_time=now))
    return True


def remove_condition(conditions: list[Condition], type_: str) -> bool:
    before = len(conditions)
    conditions[:] = [c for c in conditions if c.type != type_]
    return len(conditions) != before


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


@dataclass(frozen=True, slots=True)
class Reference:
    """Another object that must exist for this one to be written (checked in the same store
    transaction): ``field`` is where the reference is written, for the error message."""

    field: str
    plural: str
    namespace: str
    name: str
    note: str = ""


class Resource(Model):
    """A stored object. Subclasses set ``KIND``/``PLURAL`` and the spec/status types, and
    declare what the registry indexes them by (:meth:`index_entries`) and which objects they
    refer to (:meth:`references`): the registry knows no concrete kind."""

    KIND: ClassVar[str] = ""
    PLURAL: ClassVar[str] = ""
    SINGULAR: ClassVar[str] = ""
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ()
    #: Indexes added to ``index_entries`` after objects of the kind were first stored, by the
    #: index-schema version that added them: a store whose recorded version is older has
    #: objects without those entries, so ``Registry.index_ready`` re-indexes it (or a query
    #: checks those fields on the objects instead). Version 1 is what every kind began with.
    INDEXES_SINCE: ClassVar[dict[int, tuple[str, ...]]] = {}
    #: The status fields ``index_entries`` reads, when the kind can say so: a status patch
    #: that assigns none of them moves no index key, and one that does moves only the entries
    #: of ``status_index_entries`` (``Registry.write_status_patches``). None: any may.
    INDEXED_STATUS: ClassVar[frozenset[str] | None] = None

    api_version: str = API_VERSION
    kind: str = ""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    def index_entries(self) -> set[tuple[str, str]]:
        """(index, value) pairs under which the object is findable: its labels; kinds add theirs."""
        return {("label", f"{k}={v}") for k, v in self.metadata.labels.items()}

    def status_index_entries(self) -> set[tuple[str, str]]:
        """The part of ``index_entries`` that ``INDEXED_STATUS`` decides (kinds that declare it)."""
        return self.index_entries()

    def references(self) -> list[Reference]:
        """Objects that must exist when this one is created (none by default)."""
        return []

    def references_key(self) -> Hashable | None:
        """A value that decides :meth:`references`: objects of one kind with equal keys have
        equal references (a write asks one of them); None: ask each object."""
        return None

    def model_post_init(self, __context: Any) -> None:
        if not self.kind:
            self.kind = self.KIND

    @field_validator("api_version")
    @classmethod
    def _api_version(cls, v: str) -> str:
        if v != API_VERSION:
            raise ValueError(f'apiVersion "{v}" is not supported (expected "{API_VERSION}")')
        return v

    @classmethod
    def resource_name(cls) -> str:
        """kubectl's ``plural.group`` form used in messages: ``jobs.balsam.io``."""
        return f"{cls.PLURAL}.{API_GROUP}"

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    def ensure_identity(self, now: datetime | None = None) -> Self:
        """Fill what the server assigns on create: name from generateName, uid, timestamps."""
        md = self.metadata
        for name, value in identity(md, now).items():
            set_field(md, name, value)
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_json(self) -> bytes:
        """The stored form: camelCase, without None and defaults (``apis._codec``)."""
        return encode(self)
