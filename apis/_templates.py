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

__all__ = ["TemplateError", "render_command", "template_variables", "validate_command"]


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
    ``declared`` maps names to ``AppParameter`` (or ``{required, default}`` dicts)."""
    _, variables = _compile(template)
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
