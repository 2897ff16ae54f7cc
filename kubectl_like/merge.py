"""Client-side three-way merge, as ``kubectl apply`` does it for custom resources.

Three documents (plain JSON: dicts, lists, scalars):

* ``original``: what the previous apply wrote (the last-applied annotation), or None;
* ``modified``: what the manifest asks for now;
* ``current``: the live object (what the store holds, others' changes included).

:func:`three_way_patch` returns a JSON merge patch (RFC 7386: ``None`` deletes a key, a dict
merges, anything else replaces) that

* sets every field of ``modified`` whose value differs from ``current``;
* deletes every field that ``original`` had and ``modified`` no longer has (the user removed
  it from the manifest), and nothing else: fields someone else set (a label added by hand, a
  priority changed with ``edit``) stay, because apply never owned them.

Lists are atomic (replaced whole), as for CRDs in Kubernetes. An empty patch means the
object is unchanged and apply writes nothing.
"""

from __future__ import annotations

from typing import Any

JSONDict = dict[str, Any]

_MISSING = object()


def same(a: Any, b: Any) -> bool:
    """JSON equality that does not take ``True`` for ``1`` (Python's ``==`` does)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(v, b[k]) for k, v in a.items())
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def three_way_patch(original: JSONDict | None, modified: JSONDict, current: JSONDict) -> JSONDict:
    """The merge patch that takes ``current`` to what ``modified`` asks (see module doc)."""
    patch: JSONDict = {}
    if original:
        for k in original:
            if k not in modified and k in current:
                patch[k] = None  # removed from the manifest: remove it from the object
    for k, want in modified.items():
        have = current.get(k, _MISSING)
        if want is None:  # an explicit null in the manifest: the field must be absent
            if have is not _MISSING and have is not None:
                patch[k] = None
            continue
        if isinstance(want, dict) and isinstance(have, dict):
            prev = original.get(k) if original else None
            sub = three_way_patch(prev if isinstance(prev, dict) else None, want, have)
            if sub:
                patch[k] = sub
        elif have is _MISSING or not same(want, have):
            patch[k] = want
    return patch


def apply_patch(target: JSONDict, patch: JSONDict) -> JSONDict:
    """RFC 7386: a new dict; ``target`` is not modified (unchanged branches are shared)."""
    out = dict(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            cur = out.get(k)
            out[k] = apply_patch(cur if isinstance(cur, dict) else {}, v)
        else:
            out[k] = v
    return out


def strip_nulls(doc: Any) -> Any:
    """``doc`` without null-valued keys (at any depth in dicts)."""
    if isinstance(doc, dict):
        return {k: strip_nulls(v) for k, v in doc.items() if v is not None}
    if isinstance(doc, list):
        return [strip_nulls(v) for v in doc]
    return doc
