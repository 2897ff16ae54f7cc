"""The seed's `balsam job create --site=laptop --app Hello ...` in our spelling (issue 16, item 4):
``create job --site-name SITE --app Hello``, with the App found as ``Job(app_id="Hello")`` finds it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from apis import App, ApplicationDefinition, Job
from kubectl_like.cli import cli

from .conftest import Site


class Hello(ApplicationDefinition):
    """The seed's Hello app."""

    command_template = "echo hello {{ say_hello_to }}"


@pytest.fixture
def hsite(any_site: Site) -> Site:
    """A site with the App that ``Hello`` registers (what ``Hello.sync()`` writes)."""
    any_site.registry().create(Hello.to_app(any_site.namespace))
    return any_site


def site_name(site: Site) -> str:
    return site.path.name  # balsamctl init names the Site after its directory


def test_app_class_name_resolves_as_in_python(hsite: Site) -> None:
    r = hsite.run("create", "job", "--app", "Hello", "-w", "demo/hello2", "-p", "say_hello_to=world2",
                  "--name", "h2", "-o", "name")
    assert r.exit_code == 0, r.stderr
    job = hsite.registry().get(Job, "h2", hsite.namespace)
    assert job.spec.app == Job(app_id="Hello", workdir="x").spec.app == Hello.to_app().name
    assert hsite.registry().try_get(App, job.spec.app, hsite.namespace) is not None


def test_site_name_like_the_seed(hsite: Site) -> None:
    """`balsam job create --site=laptop --app Hello --workdir demo/hello2 --param say_hello_to="world2"`."""
    r = hsite.run("create", "job", "--site-name", site_name(hsite), "--app", "Hello", "--workdir", "demo/hello2",
                  "--param", "say_hello_to=world2")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("job.balsam.io/hello-") and r.stdout.endswith(" created\n")
    (job,) = hsite.registry().list(Job, hsite.namespace)[0]
    assert job.spec.site == site_name(hsite) and job.spec.parameters == {"say_hello_to": "world2"}
    fs = hsite.run("get", "jobs", "--field-selector", f"spec.site={site_name(hsite)}", "-o", "name")
    assert fs.stdout.strip() == f"job.balsam.io/{job.name}"


def test_site_name_places_the_job_in_that_sites_namespace(hsite: Site, tmp_path: Path) -> None:
    """Another site on the same store (its own namespace): the job goes there, as Job(site_name=) does."""
    other_ns = f"{hsite.namespace}-p"
    r = CliRunner().invoke(cli, ["init", str(tmp_path / "polaris"), "--name", "polaris", "-n", other_ns,
                                 "--store", hsite.store_url], catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    hsite.registry().create(Hello.to_app(other_ns))
    r = hsite.run("create", "job", "--site-name", "polaris", "--app", "Hello", "-w", "x", "--name", "remote",
                  "-p", "say_hello_to=p")
    assert r.exit_code == 0, r.stderr
    job = hsite.registry().get(Job, "remote", other_ns)
    assert job.spec.site == "polaris"
    assert hsite.registry().try_get(Job, "remote", hsite.namespace) is None
    # -n names the namespace: the job stays there, and admission refuses a Site that is not in it
    rev = hsite.revision()
    line = hsite.run("create", "job", "--site-name", "polaris", "--app", "hello", "-w", "x", "-n", hsite.namespace,
                     "-p", "say_hello_to=p").one_error()
    assert 'spec.site: Not found: "polaris"' in line, line
    assert hsite.revision() == rev


@pytest.mark.parametrize("args, expect", [
    (["--site-name", "nowhere"], 'spec.site: Not found: "nowhere"'),
    (["--site-name", ""], "error: --site-name must not be empty"),
    (["--app", "Nope"], 'spec.app: Not found: "nope"'),
])
def test_bad_site_or_app_writes_nothing(hsite: Site, args: list[str], expect: str) -> None:
    base = {"--app": "Hello", "--site-name": None}
    flags: list[str] = ["-w", "w", "-p", "say_hello_to=x"]
    given = dict(zip(args[::2], args[1::2], strict=True))
    for k, v in {**base, **given}.items():
        if v is not None:
            flags += [k, v]
    rev = hsite.revision()
    line = hsite.run("create", "job", *flags).one_error()
    assert expect in line, line
    assert hsite.revision() == rev
