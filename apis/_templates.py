"""App command templates: jinja2, sandboxed, strict, every substituted value shell-quoted.

One function renders (the node agent, at launch) and one validates (at App create time), so
what ``apply`` accepts is exactly what an agent can run:

* the template is parsed by a :class:`jinja2.sandbox.SandboxedEnvironment` with
  :class:`jinja2.StrictUndefined` (no attribute tricks, no silent empty strings);
* every variable the template reads must be a declared parameter of the App
  (``spec.parameters``) — a typo is an error, not an empty argument;
* a job must give every required parameter; an optional one falls back to its default
  (``""`` when it has none); a job parameter the App does not declare is an error;
* every ``{{ expression }}`` is passed through :func:`shlex.quote` after its filters ran,
  so a value ``; rm -rf ~`` or ``$(touch pwned)`` reaches the program as one literal
  argument. Do not put quotes around ``{{ x }}`` in a template: the quoting is done for you.
  A placeholder inside quotes (``"{{ x }}"``, ``'{{ x }}'``) or inside a command substitution
  (``$( ... )``, backticks) is refused when the App is created: there the shell would see the
  quotes we add as literal characters (``"'$(touch f)'"`` runs ``touch f``), so the message
  shows the safe form, ``echo {{ x }}``.

Errors are :class:`TemplateError` (a ``ValueError``) whose message names the parameter.
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Mapping
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

__all__ = ["TemplateError", "check_placeholder_quoting", "render_command", "template_variables", "validate_command"]


class TemplateError(ValueError):
    """A command template that cannot be rendered (syntax, undeclared or missing parameter)."""


def _finalize(value: Any) -> str:
    return shlex.quote(value if isinstance(value, str) else str(value))


_env = SandboxedEnvironment(
    undefined=jinja2.StrictUndefined,
    finalize=_finalize,
    autoescape=False,
    keep_trailing_newline=False,
)


@functools.lru_cache(maxsize=512)
def _compile(template: str) -> tuple[jinja2.Template, frozenset[str]]:
    try:
        ast = _env.parse(template)
        variables = frozenset(meta.find_undeclared_variables(ast))
        return _env.from_string(ast), variables
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"command template: syntax error on line {e.lineno}: {e.message}") from None


_MARK = "\x00"  # stands for one {{ ... }} while the shell text around it is scanned


def _shell_text(template: str) -> tuple[str, list[str]]:
    """The template's literal text with every ``{{ ... }}`` replaced by ``_MARK`` (and
    ``{% %}``/``{# #}`` blocks dropped), and the source of each placeholder in order."""
    text: list[str] = []
    sources: list[str] = []
    current: list[str] | None = None
    for _, token, value in _env.lex(template):
        if token == "variable_begin":
            current = [value]
        elif token == "variable_end" and current is not None:
            current.append(value)
            sources.append("".join(current))
            text.append(_MARK)
            current = None
        elif current is not None:
            current.append(value)
        elif token == "data":
            text.append(value)
    return "".join(text), sources


def _unsafe_placeholders(text: str) -> list[tuple[int, str]]:
    """(placeholder index, where) for each ``_MARK`` that the shell would not read as a bare
    word: inside '...', "...", $'...', $( ... ) or `...`. A small POSIX-shell quote scanner:
    enough for command lines, not a parser (a heredoc body is read as plain words)."""
    found: list[tuple[int, str]] = []
    stack: list[str] = []  # open contexts: "'", '"', "$(", "`"
    i, n, mark = 0, len(text), 0
    while i < n:
        c = text[i]
        top = stack[-1] if stack else ""
        if c == _MARK:
            where = next((ctx for ctx in reversed(stack) if ctx in ("'", '"')), None) or (
                next((ctx for ctx in reversed(stack) if ctx in ("$(", "`")), None))
            if where is not None:
                found.append((mark, where))
            mark += 1
            i += 1
            continue
        if top == "'":
            if c == "'":
                stack.pop()
            i += 1
            continue
        if c == "\\":
            i += 2
            continue
        if top == "`" and c == "`":
            stack.pop()
        elif c == "`":
            stack.append("`")
        elif top == '"' and c == '"':
            stack.pop()
        elif c == "$" and text[i + 1 : i + 2] == "(":
            stack.append("$(")
            i += 1
        elif top == "$(" and c == ")":
            stack.pop()
        elif top == "$(" and c == "(":
            stack.append("$(")  # a nested ( ... ) inside a substitution: closed by its own )
        elif top != '"' and c == '"':
            stack.append('"')
        elif top != '"' and c == "'":
            stack.append("'")  # also $'...': the $ before it changes nothing here
        i += 1
    return found


_WHERE = {"'": "inside single quotes", '"': "inside double quotes", "$(": "inside $( ... )",
          "`": "inside backticks"}


def check_placeholder_quoting(template: str) -> None:
    """Raise TemplateError if a ``{{ ... }}`` sits where the shell would not take its quoted
    value as one literal word (see the module docstring)."""
    if "{{" not in template:
        return
    _compile(template)  # syntax errors first, with their own message
    text, sources = _shell_text(template)
    bad = _unsafe_placeholders(text)
    if not bad:
        return
    idx, where = bad[0]
    src = sources[idx] if idx < len(sources) else "{{ ... }}"
    raise TemplateError(
        f"command template: placeholder {src} is {_WHERE[where]}; values are already shell-quoted, so "
        f"write it as a bare word, e.g. 'echo {src}' (there a value such as $(touch f) would run)"
    )


def template_variables(template: str) -> frozenset[str]:
    """The names a template reads (what Balsam infers as an App's parameters)."""
    return _compile(template)[1]


def _param_fields(p: Any) -> tuple[bool, str | None]:
    """(required, default) of an ``AppParameter`` or a plain ``{required, default}`` dict."""
    if isinstance(p, Mapping):
        return bool(p.get("required", True)), p.get("default")
    return bool(getattr(p, "required", True)), getattr(p, "default", None)


def validate_command(template: str, declared: Mapping[str, Any]) -> None:
    """Raise TemplateError unless ``template`` parses and reads only declared parameters.
    ``declared`` maps names to ``AppParameter`` (or ``{required, default}`` dicts), and
    unless every placeholder stands as a bare shell word (check_placeholder_quoting)."""
    _, variables = _compile(template)
    check_placeholder_quoting(template)
    undeclared = sorted(variables - set(declared))
    if undeclared:
        names = ", ".join(f'"{n}"' for n in undeclared)
        raise TemplateError(
            f"command template uses {names}, which {'is' if len(undeclared) == 1 else 'are'} not a declared "
            f"parameter (declare it under spec.parameters)"
        )


def render_command(template: str, declared: Mapping[str, Any], parameters: Mapping[str, str]) -> str:
    """The shell command line of a job: ``template`` with ``parameters`` substituted, each value
    shell-quoted. Raises TemplateError for an undeclared variable, a missing required
    parameter, a parameter the App does not declare, or a failing expression."""
    tmpl, variables = _compile(template)
    undeclared_vars = variables - set(declared)
    if undeclared_vars:
        validate_command(template, declared)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        names = ", ".join(f'"{n}"' for n in unknown)
        raise TemplateError(f"parameter {names} is not declared by the app (declared: "
                            f"{', '.join(sorted(declared)) or 'none'})")
    values: dict[str, Any] = {}
    missing: list[str] = []
    for name, p in declared.items():
        if name in parameters:
            values[name] = parameters[name]
            continue
        required, default = _param_fields(p)
        if required and default is None:
            missing.append(name)
        else:
            values[name] = "" if default is None else default
    if missing:
        names = ", ".join(f'"{n}"' for n in sorted(missing))
        raise TemplateError(f"missing required parameter {names}")
    try:
        return tmpl.render(values)
    except jinja2.TemplateError as e:  # UndefinedError, SecurityError, ...
        raise TemplateError(f"command template: {type(e).__name__}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a filter raising (int("x")) is the template's fault
        raise TemplateError(f"command template: {type(e).__name__}: {e}") from None
