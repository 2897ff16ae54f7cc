"""The quote scanner behind the placeholder-quoting admission rule, edge by edge (found by
the mutation run, docs/mutation.md): which context a placeholder is reported in, which
placeholder the message names, and the shell syntax that must not be mistaken for a quote."""

from __future__ import annotations

import pytest

from apis._templates import TemplateError, check_placeholder_quoting, validate_command


def refusal(command: str) -> str:
    with pytest.raises(TemplateError) as e:
        check_placeholder_quoting(command)
    return str(e.value)


def test_the_message_names_the_placeholder_its_context_and_the_safe_form() -> None:
    assert refusal('echo "{{ x | upper }}"') == (
        "command template: placeholder {{ x | upper }} is inside double quotes; values are already "
        "shell-quoted, so write it as a bare word, e.g. 'echo {{ x | upper }}' (there a value such as "
        "$(touch f) would run)")


@pytest.mark.parametrize(("command", "where"), [
    ("echo '{{ x }}'", "inside single quotes"),
    ('echo "{{ x }}"', "inside double quotes"),
    ("echo $(cat {{ x }})", "inside $( ... )"),
    ("echo `cat {{ x }}`", "inside backticks"),
    ("echo $({{ x }})", "inside $( ... )"),
    # Quotes count before the substitution around or inside them: they are what breaks.
    ('echo $(cat "{{ x }}")', "inside double quotes"),
    ('echo "$(cat {{ x }})"', "inside double quotes"),
    # A ( ... ) inside a substitution is closed by its own ), not the substitution's.
    ("echo $( (cd /; ls) {{ x }} )", "inside $( ... )"),
    # An escaped quote inside double quotes does not close them.
    ('echo "\\"{{ x }}"', "inside double quotes"),
    # Single quotes end at the next ' and nowhere else (not at a space or another character).
    ("echo 'run {{ x }} now'", "inside single quotes"),
    ("echo 'a{{ x }}'", "inside single quotes"),
    # Double quotes end at the next unescaped " (not at a space).
    ('echo "run {{ x }} now"', "inside double quotes"),
    # The scan starts at the first character: a command that opens with a quote.
    ('"{{ x }}" --flag', "inside double quotes"),
    # Single quotes open inside a substitution too; the scan goes on after closed quotes.
    ("echo $(cat '{{ x }}')", "inside single quotes"),
    ("echo 'a' \"{{ x }}\"", "inside double quotes"),
])
def test_each_context_is_named(command: str, where: str) -> None:
    assert f"is {where};" in refusal(command)


def test_the_first_unsafe_placeholder_is_named_not_a_safe_one_before_it() -> None:
    assert "placeholder {{ b }} is inside double quotes" in refusal('echo {{ a }} "{{ b }}"')
    assert "placeholder {{ b }} is inside double quotes" in refusal('echo \\"{{ a }} "{{ b }}"')
    assert "placeholder {{ a }} is inside double quotes" in refusal("echo \"{{ a }}\" '{{ b }}'")


@pytest.mark.parametrize("command", [
    "echo \"it's\" {{ x }}",          # a ' inside double quotes is a plain character
    "echo {{ a }}'x' {{ b }}",        # a quote right after a placeholder opens and closes
    "echo `date` {{ x }}",            # a backtick pair closes
    "echo $(date) {{ x }}",           # so does $( ... )
    "echo $(cd /; (ls)) {{ x }}",     # and a nested ( ... ) inside it
    "echo 'a' \"b\" {{ x }}",
    "echo 'a b' {{ x }}",
    "echo 'it\"s' {{ x }}",           # a " inside single quotes is a plain character
    "echo $(echo \"a\") {{ x }}",      # quotes inside a substitution close inside it
    "echo \"(a)\" {{ x }}",            # a ) outside a substitution is a plain character
    "case $1 in a) echo {{ x }};; esac",
    "echo \"(\" {{ x }}",              # nor is a ( inside double quotes
    "echo $HOME {{ x }}",              # $ opens a substitution only before (
    "echo $$ {{ x }}",
    "echo \"f(\" {{ x }}",             # and only a $ does
    "echo $(echo 'a)') {{ x }}",       # a ) inside single quotes does not close $( ... )
    "echo `case $1 in a) echo b;; esac` {{ x }}",  # nor does a ) close backticks
    "echo 'abc' {{ x }}",
    "echo {{ x }} \\",                 # a trailing backslash ends the scan
    '{% if x != "$(" %}echo {{ x }}{% endif %}',  # a Jinja block is not shell text
    "echo {# it's #} {{ x }}",        # a Jinja comment is not shell text
    "echo {{ x }}",
    "echo hello",
])
def test_bare_words_after_closed_quotes_and_substitutions_are_accepted(command: str) -> None:
    check_placeholder_quoting(command)


def test_a_syntax_error_is_reported_as_such_before_any_quoting() -> None:
    assert refusal('echo "{{ x ').startswith("command template: syntax error on line 1")


def test_validate_command_applies_the_rule() -> None:
    with pytest.raises(TemplateError, match="inside single quotes"):
        validate_command("echo '{{ x }}'", {"x": {}})
    validate_command("echo {{ x }}", {"x": {}})
