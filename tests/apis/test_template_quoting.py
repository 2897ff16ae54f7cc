"""A placeholder the shell would not read as one bare word is refused when the App is made:
inside quotes our shell-quoting becomes literal characters and a value ``$(touch f)`` runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from apis import App, AppSpec, Invalid, ObjectMeta, Registry
from apis._templates import TemplateError, check_placeholder_quoting, render_command

SAFE = [
    "echo {{ x }}",
    "sh -c 'echo \"$0 on $(hostname)\"; sleep 1' {{ x }}",
    "echo \"literal\" {{ x }} 'more'",
    "for i in $(seq 1 3); do echo {{ x }}; done",
    "echo \\\"{{ x }}",
    "{% if x %}echo {{ x }}{% endif %}",
]
UNSAFE = ['echo "{{ x }}"', "echo '{{x}}'", "echo $(cat {{ x }})", "echo `cat {{ x }}`", 'echo "a $(b {{ x }})"',
          "echo $'{{ x }}'", 'echo "{{ x | upper }}"', 'echo "prefix-{{ x }}-suffix"']


@pytest.mark.parametrize("command", SAFE)
def test_bare_placeholders_are_accepted(command: str) -> None:
    check_placeholder_quoting(command)


@pytest.mark.parametrize("command", UNSAFE)
def test_placeholders_in_quotes_or_substitutions_are_refused(command: str) -> None:
    with pytest.raises(TemplateError, match="write it as a bare word"):
        check_placeholder_quoting(command)


def test_the_quoted_form_is_what_would_run_a_parameter(tmp_path: Path) -> None:
    """Why the check exists: rendered inside double quotes, a quoted value is live shell."""
    rendered = render_command('echo "{{ x }}"', {"x": {}}, {"x": "$(touch f)"})
    assert rendered == "echo \"'$(touch f)'\""


def test_the_python_client_is_refused_and_nothing_is_written(registry: Registry) -> None:
    rev = registry.store.current_revision()
    with pytest.raises(Invalid, match=r'apps.balsam.io "q" is invalid: spec.command: .*inside double quotes'):
        registry.create(App(metadata=ObjectMeta(name="q"), spec=AppSpec(command='echo "{{ x }}"')))
    assert registry.store.current_revision() == rev
    ok = registry.create(App(metadata=ObjectMeta(name="q"), spec=AppSpec(command="echo {{ x }}")))
    bad = ok.model_copy(deep=True)
    bad.spec.command = "echo '{{ x }}'"
    with pytest.raises(Invalid, match="inside single quotes"):
        registry.update(ok, bad)
