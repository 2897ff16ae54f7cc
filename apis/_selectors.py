"""Kubernetes label selectors: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``,
``k``, ``!k``; a comma means AND."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from ._errors import BadRequest

Op = Literal["=", "!=", "in", "notin", "exists", "!exists"]

_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_VAL = r"[A-Za-z0-9_.-]*"
_TOKEN = re.compile(
    rf"""\s*(?:
      (?P<notkey>!\s*(?P<nk>{_KEY}))
    | (?P<setkey>{_KEY})\s+(?P<setop>in|notin)\s*\(\s*(?P<vals>[^)]*)\)
    | (?P<eqkey>{_KEY})\s*(?P<eqop>==|=|!=)\s*(?P<eqval>{_VAL})
    | (?P<key>{_KEY})
    )\s*(?:,|$)""",
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: Op
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        has = self.key in labels
        if self.op == "exists":
            return has
        if self.op == "!exists":
            return not has
        if self.op == "=":
            return has and labels[self.key] == self.values[0]
        if self.op == "!=":
            return not has or labels[self.key] != self.values[0]
        if self.op == "in":
            return has and labels[self.key] in self.values
        return not has or labels[self.key] not in self.values  # notin


@dataclass(frozen=True, slots=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def __bool__(self) -> bool:
        return bool(self.requirements)

    def equalities(self) -> dict[str, str]:
        """The ``k=v`` requirements (usable with the label index)."""
        return {r.key: r.values[0] for r in self.requirements if r.op == "="}

    def __str__(self) -> str:
        parts = []
        for r in self.requirements:
            if r.op in ("=", "!="):
                parts.append(f"{r.key}{r.op}{r.values[0]}")
            elif r.op in ("in", "notin"):
                parts.append(f"{r.key} {r.op} ({','.join(r.values)})")
            elif r.op == "exists":
                parts.append(r.key)
            else:
                parts.append(f"!{r.key}")
        return ",".join(parts)


def parse_selector(text: str | None) -> Selector:
    """Parse a selector; BadRequest (``unable to parse requirement``) on bad syntax."""
    if text is None or not text.strip():
        return Selector()
    reqs: list[Requirement] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise BadRequest(f"unable to parse requirement: {text[pos:]!r} in selector {text!r}")
        if m.group("notkey"):
            reqs.append(Requirement(m.group("nk"), "!exists"))
        elif m.group("setkey"):
            vals = tuple(v.strip() for v in m.group("vals").split(",") if v.strip())
            if not vals or not all(re.fullmatch(_VAL, v) for v in vals):
                raise BadRequest(f"unable to parse requirement: invalid value list in {text!r}")
            reqs.append(Requirement(m.group("setkey"), m.group("setop"), vals))  # type: ignore[arg-type]
        elif m.group("eqkey"):
            op: Op = "!=" if m.group("eqop") == "!=" else "="
            reqs.append(Requirement(m.group("eqkey"), op, (m.group("eqval"),)))
        else:
            reqs.append(Requirement(m.group("key"), "exists"))
        pos = m.end()
        if text[pos - 1 : pos] == "," and pos == len(text):
            raise BadRequest(f"unable to parse requirement: trailing comma in selector {text!r}")
    return Selector(tuple(reqs))


def selector_from_labels(labels: Mapping[str, str]) -> Selector:
    return Selector(tuple(Requirement(k, "=", (v,)) for k, v in labels.items()))
