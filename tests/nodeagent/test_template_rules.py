"""Template rules the mutation run found untested (docs/mutation.md): a parameter declared
without ``required`` is required, the rendered command has no trailing newline, every failing
expression is a TemplateError, and the message about undeclared names reads right for one and
for several."""

from __future__ import annotations

import pytest

from apis._templates import TemplateError, render_command, validate_command


def test_a_parameter_declared_without_required_is_required() -> None:
    with pytest.raises(TemplateError, match='missing required parameter "x"'):
        render_command("echo {{ x }}", {"x": {}}, {})
    assert render_command("echo {{ x }}", {"x": {}}, {"x": "1"}) == "echo 1"
    assert render_command("echo {{ x }}", {"x": {"required": False}}, {}) == "echo ''"


def test_the_command_has_no_trailing_newline() -> None:
    assert render_command("echo {{ x }}\n", {"x": {}}, {"x": "a b"}) == "echo 'a b'"


@pytest.mark.parametrize("template", ["echo {{ 1 // 0 }}", "echo {{ x | int // 0 }}", "echo {{ x[5] }}"])
def test_an_expression_that_raises_is_a_template_error(template: str) -> None:
    with pytest.raises(TemplateError, match="^command template: "):
        render_command(template, {"x": {}}, {"x": "7"})


def test_undeclared_names_are_listed_with_the_right_verb() -> None:
    with pytest.raises(TemplateError) as one:
        validate_command("echo {{ a }}", {})
    assert str(one.value) == ('command template uses "a", which is not a declared parameter '
                              "(declare it under spec.parameters)")
    with pytest.raises(TemplateError) as two:
        validate_command("echo {{ b }} {{ a }}", {})
    assert str(two.value) == ('command template uses "a", "b", which are not a declared parameter '
                              "(declare it under spec.parameters)")


def test_a_parameter_the_app_does_not_declare_is_refused_naming_what_it_declares() -> None:
    with pytest.raises(TemplateError) as some:
        render_command("echo {{ x }}", {"x": {}, "a": {"required": False}}, {"x": "1", "zz": "2", "yy": "3"})
    assert str(some.value) == 'parameter "yy", "zz" is not declared by the app (declared: a, x)'
    with pytest.raises(TemplateError) as none:
        render_command("echo hi", {}, {"zz": "2"})
    assert str(none.value) == 'parameter "zz" is not declared by the app (declared: none)'
