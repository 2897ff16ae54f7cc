"""App command templates (apis/_templates.py): strict, sandboxed, every value shell-quoted."""

from __future__ import annotations

import shlex

import pytest

from apis import AppParameter
from apis._templates import TemplateError, render_command, template_variables, validate_command


def P(required: bool = True, default: str | None = None) -> AppParameter:
    return AppParameter(required=required, default=default)


@pytest.mark.parametrize("value", ["; rm -rf ~", "$(touch pwned)", "`id`", "a'b\"c", "x > y", "", "*", "~"])
def test_every_value_reaches_the_program_as_one_literal_argument(value: str) -> None:
    cmd = render_command("prog {{ v }} end", {"v": P()}, {"v": value})
    assert shlex.split(cmd) == ["prog", value, "end"]


def test_filters_run_before_quoting() -> None:
    assert render_command("echo {{ n | int + 1 }} {{ s | upper }}", {"n": P(), "s": P()},
                          {"n": "41", "s": "a b"}) == "echo 42 'A B'"


def test_optional_parameters_fall_back_to_their_default() -> None:
    params = {"x": P(required=False, default="7"), "y": P(required=False)}
    assert render_command("run {{ x }} {{ y }}", params, {}) == "run 7 ''"


def test_undeclared_variable_is_an_error_at_create_time_and_at_render_time() -> None:
    with pytest.raises(TemplateError, match='"nmae", which is not a declared parameter'):
        validate_command("echo {{ nmae }}", {"name": P()})
    with pytest.raises(TemplateError, match='"nmae"'):
        render_command("echo {{ nmae }}", {"name": P()}, {"name": "x"})


def test_missing_required_and_undeclared_job_parameters_are_errors() -> None:
    with pytest.raises(TemplateError, match='missing required parameter "x"'):
        render_command("echo {{ x }}", {"x": P()}, {})
    with pytest.raises(TemplateError, match='parameter "z" is not declared'):
        render_command("echo {{ x }}", {"x": P()}, {"x": "1", "z": "2"})


def test_syntax_errors_and_sandbox_escapes_are_template_errors() -> None:
    with pytest.raises(TemplateError, match="syntax error on line 1"):
        validate_command("echo {{ x", {"x": P()})
    with pytest.raises(TemplateError, match="unsafe"):
        render_command("{{ x.__class__.__mro__ }}", {"x": P()}, {"x": "a"})


def test_validation_accepts_plain_dict_parameters_and_loop_variables() -> None:
    validate_command("{% for i in range(3) %}{{ i }} {{ x }}{% endfor %}", {"x": {"required": True}})
    assert template_variables("{{ a }} {% for i in b %}{{ i }}{% endfor %}") == {"a", "b"}
