"""kubectl's JSONPath templates (``-o jsonpath=...``, ``--sort-by``, ``custom-columns``).

The template layer is kubectl's: text outside braces is printed as is; ``{.path}`` prints
what the path finds (several results joined by spaces); ``{range .path}...{end}`` repeats its
body for each result, with paths inside relative to the item; ``{"\\n"}`` prints a quoted
literal (Go escapes). Path evaluation is delegated to ``jsonpath-ng`` (its extended parser:
``[*]``, ``[0]``, ``[-1:]``, ``..name``, ``[?(@.status.state=="FAILED")]``,
``['a','b']``); kubectl's escaped dots (``.metadata.labels.app\\.io/name``) and keys with
``/`` or ``-`` are rewritten into bracket form first.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ._errors import CLIError


class JSONPathError(CLIError):
    pass


@dataclass
class _Text:
    text: str


@dataclass
class _Path:
    expr: str


@dataclass
class _Range:
    expr: str
    body: list[Any] = field(default_factory=list)


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "'": "'", "0": "\0"}


def _unquote(lit: str) -> str:
    q = lit[0]
    inner = lit[1:-1]
    if q == "'":
        return inner
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), inner)


def _split(template: str) -> list[tuple[str, str]]:
    """[('text', s) | ('expr', s)] honoring quotes and brackets inside braces."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(template)
    buf: list[str] = []
    while i < n:
        c = template[i]
        if c != "{":
            buf.append(c)
            i += 1
            continue
        if buf:
            out.append(("text", "".join(buf)))
            buf = []
        j = i + 1
        quote: str | None = None
        depth = 0
        while j < n:
            d = template[j]
            if quote:
                if d == "\\" and quote == '"':
                    j += 2
                    continue
                if d == quote:
                    quote = None
            elif d in "\"'":
                quote = d
            elif d == "[":
                depth += 1
            elif d == "]":
                depth -= 1
            elif d == "}" and depth <= 0:
                break
            j += 1
        if j >= n:
            raise JSONPathError(f"error parsing jsonpath {template}: unclosed action")
        out.append(("expr", template[i + 1 : j].strip()))
        i = j + 1
    if buf:
        out.append(("text", "".join(buf)))
    return out


def _parse_template(template: str) -> list[Any]:
    root: list[Any] = []
    stack: list[list[Any]] = [root]
    for typ, s in _split(template):
        cur = stack[-1]
        if typ == "text":
            cur.append(_Text(s))
        elif s.startswith("range ") or s == "range":
            r = _Range(s[len("range"):].strip())
            if not r.expr:
                raise JSONPathError(f"error parsing jsonpath {template}: range needs a path")
            cur.append(r)
            stack.append(r.body)
        elif s == "end":
            if len(stack) == 1:
                raise JSONPathError(f"error parsing jsonpath {template}: not in range, nothing to end")
            stack.pop()
        elif len(s) >= 2 and s[0] in "\"'" and s[-1] == s[0]:
            cur.append(_Text(_unquote(s)))
        elif not s:
            raise JSONPathError(f"error parsing jsonpath {template}: empty action")
        else:
            _compile(s)  # syntax errors now, not halfway through the output
            cur.append(_Path(s))
    if len(stack) != 1:
        raise JSONPathError(f"error parsing jsonpath {template}: range without end")
    return root


_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$|^\*$")


def _to_ng(expr: str) -> str:
    """kubectl path → jsonpath-ng expression."""
    e = expr.strip()
    if e in ("@", "$", "."):
        return "$"
    if e.startswith("$"):
        e = e[1:]
    elif e.startswith("@"):
        e = e[1:]
    if not e.startswith((".", "[")):
        e = "." + e
    out: list[str] = []
    i, n = 0, len(e)
    while i < n:
        c = e[i]
        if c == "[":  # copy a bracket group verbatim (filters, indexes, quoted keys)
            depth, j, quote = 0, i, None
            while j < n:
                d = e[j]
                if quote:
                    if d == quote:
                        quote = None
                elif d in "\"'":
                    quote = d
                elif d == "[":
                    depth += 1
                elif d == "]":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            out.append(e[i : j + 1])
            i = j + 1
        elif c == ".":
            if e.startswith("..", i):
                out.append("..")
                i += 2
            else:
                i += 1
            seg: list[str] = []
            while i < n and e[i] not in ".[":
                if e[i] == "\\" and i + 1 < n:
                    seg.append(e[i + 1])
                    i += 2
                    continue
                seg.append(e[i])
                i += 1
            name = "".join(seg)
            if not name:
                continue
            if _PLAIN.match(name):
                out.append(name if out and out[-1] == ".." else "." + name)
            else:
                out.append("['" + name.replace("'", "\\'") + "']")
        else:
            raise JSONPathError(f"error parsing jsonpath {{{expr}}}: unexpected {c!r}")
    return "$" + "".join(out)


@lru_cache(maxsize=256)
def _compile(expr: str) -> Any:
    # jsonpath_ng's parser tables cost ~0.08 s to import: only a command that uses a path pays
    from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
    from jsonpath_ng.ext import parse as _jp_parse

    try:
        return _jp_parse(_to_ng(expr))
    except (JsonPathLexerError, JsonPathParserError, Exception) as e:  # noqa: B014 - the library raises plain Exception too
        raise JSONPathError(f"error parsing jsonpath {{{expr}}}: {e}") from None


def find(data: Any, expr: str) -> list[Any]:
    """Every value ``expr`` finds in ``data`` (kubectl path syntax)."""
    return [m.value for m in _compile(expr).find(data)]


def format_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"), default=str)
    return str(v)


class Template:
    """A parsed kubectl JSONPath template; ``render(data)`` returns the text."""

    def __init__(self, template: str) -> None:
        t = template.strip()
        if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":  # -o jsonpath='{...}' quoted twice
            t = t[1:-1]
        if "{" not in t:  # kubectl accepts a bare path: -o jsonpath=.metadata.name
            t = "{" + t + "}"
        self.source = t
        self.nodes = _parse_template(t)

    def render(self, data: Any) -> str:
        out: list[str] = []
        self._walk(self.nodes, data, out)
        return "".join(out)

    def _walk(self, nodes: list[Any], data: Any, out: list[str]) -> None:
        for node in nodes:
            if isinstance(node, _Text):
                out.append(node.text)
            elif isinstance(node, _Path):
                out.append(" ".join(format_value(v) for v in find(data, node.expr)))
            else:
                for item in find(data, node.expr):
                    self._walk(node.body, item, out)
