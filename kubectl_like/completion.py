"""Shell completion (click's protocol: ``_BALSAMCTL_COMPLETE=bash_complete`` and friends,
what ``balsamctl completion bash|zsh|fish`` wires up): kinds, object names read from the
store, job states and label keys.

Each function is a click ``shell_complete`` callback. They never raise: a site or store that
cannot be reached completes nothing (a shell must not print a traceback on TAB).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote

import click
from click.shell_completion import CompletionItem

from apis import ALL_KINDS, JobState, Resource, kind_for
from apis._registry import INDEX, kind_prefix

from ._context import Ctx
from .fieldselector import fields_of

MAX_NAMES = 1000


def kind_words() -> list[str]:
    """The names a user types for kinds: plural, singular and short names."""
    out: list[str] = []
    for k in ALL_KINDS:
        out += [k.PLURAL, k.SINGULAR, *k.SHORT_NAMES]
    return out


def _items(words: Iterable[str], incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(w) for w in sorted(dict.fromkeys(words)) if w.startswith(incomplete)]


def _ctx_obj(ctx: click.Context) -> Ctx:
    obj = ctx.find_object(Ctx)
    return obj if obj is not None else ctx.ensure_object(Ctx)


def object_names(ctx: click.Context, kind: type[Resource], prefix: str = "") -> list[str]:
    """Names of ``kind`` in the namespace, from a keys-only read of the store (at most MAX_NAMES)."""
    obj = _ctx_obj(ctx)
    try:
        reg = obj.registry
        base = kind_prefix(kind, obj.namespace)
        res = reg.store.range(base + prefix, limit=MAX_NAMES, keys_only=True)
        return [kv.key[len(base):] for kv in res.kvs]
    except Exception:  # noqa: BLE001 - completion completes nothing rather than fail
        return []
    finally:
        obj.close()


def label_keys(ctx: click.Context) -> list[str]:
    """Label keys in use on jobs of the namespace, from the label index (keys only)."""
    obj = _ctx_obj(ctx)
    try:
        reg = obj.registry
        base = f"{INDEX}jobs/label/{obj.namespace}/"
        res = reg.store.range(base, limit=20 * MAX_NAMES, keys_only=True)
        keys = []
        for kv in res.kvs:
            value = unquote(kv.key[len(base):].rsplit("/", 1)[0])
            keys.append(value.split("=", 1)[0])
        return sorted(set(keys))
    except Exception:  # noqa: BLE001
        return []
    finally:
        obj.close()


def complete_targets(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """``KIND [NAME...]`` or ``KIND/NAME``: a kind first, then names of that kind."""
    given = [a for a in (ctx.params.get(param.name or "") or ()) if a]
    if "/" in incomplete:
        k, _, prefix = incomplete.partition("/")
        try:
            kind = kind_for(k)
        except Exception:  # noqa: BLE001
            return []
        return [CompletionItem(f"{k}/{n}") for n in object_names(ctx, kind, prefix)]
    if not given:
        return _items(kind_words(), incomplete)
    try:
        kind = kind_for(given[0].partition("/")[0])
    except Exception:  # noqa: BLE001
        return []
    return [CompletionItem(n) for n in object_names(ctx, kind, incomplete) if n not in given[1:]]


def complete_job_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    kind = kind_for("job")
    return [CompletionItem(n) for n in object_names(ctx, kind, incomplete)]


def complete_states(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return _items((s.value for s in JobState), incomplete.upper())


def complete_label_keys(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """A selector or ``--tag``: label keys (``key=``), after what is already typed (``a=1,``)."""
    head, sep, last = incomplete.rpartition(",")
    lead = head + sep
    if "=" in last or "!" in last:
        return []
    return [CompletionItem(f"{lead}{k}=") for k in label_keys(ctx) if k.startswith(last)]


def complete_explain(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """``explain``: a kind, then its field paths one level at a time."""
    if "." not in incomplete:
        return _items(kind_words(), incomplete)
    head, _, last = incomplete.rpartition(".")
    kind_name, _, path = head.partition(".")
    from .explain import _children, _schema  # only shell completion of fields needs the schemas

    try:
        node = _schema(kind_for(kind_name))
        for part in [p for p in path.split(".") if p]:
            node = (_children(node) or {})[part]
    except Exception:  # noqa: BLE001
        return []
    return [CompletionItem(f"{head}.{f}") for f in (_children(node) or {}) if f.startswith(last)]


def complete_field_selector(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """``--field-selector``: the fields of the kind being listed (``status.state=``), after what is
    already typed (``spec.app=hello,``); job states after ``status.state=``."""
    head, sep, last = incomplete.rpartition(",")
    lead = head + sep
    # While an option's value is completed, click leaves the positional words in ctx.args.
    args = [a for a in (ctx.params.get("args") or ctx.args or ()) if a and not a.startswith("-")]
    try:
        kind = kind_for(args[0].partition("/")[0]) if args else kind_for("job")
    except Exception:  # noqa: BLE001 - `retry NAME`: no kind given, the names are jobs'
        kind = kind_for("job")
    path, eq, value = last.partition("=")
    if eq:
        if path.rstrip("!=") == "status.state" and kind.KIND == "Job":
            op = "!=" if path.endswith("!") else "="
            base = path.rstrip("!")
            return [CompletionItem(f"{lead}{base}{op}{s.value}") for s in JobState
                    if s.value.startswith(value.lstrip("=").upper())]
        return []
    return [CompletionItem(f"{lead}{f}=") for f in sorted(fields_of(kind)) if f.startswith(path)]
