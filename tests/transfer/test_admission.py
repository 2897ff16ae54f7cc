"""Creation-time validation of transfers: every surface refuses bad input with one clear error,
and nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from ruamel.yaml import YAML

import store as st
from apis import App, Invalid, Job, Registry, Site
from kubectl_like.cli import cli

from .conftest import make_site

IN = {"direction": "in", "localPath": "in.dat", "description": "the input deck"}
OUT = {"direction": "out", "localPath": "result.json", "required": False}


@pytest.fixture
def world(registry: Registry, site) -> Registry:
    make_site(registry, site, web="https://data.example.org")
    registry.create(App(metadata={"name": "sim"}, spec={  # type: ignore[arg-type]
        "command": "sim in.dat", "transfers": {"inp": IN, "result": OUT}}))
    return registry


def job(transfers: dict[str, str], **spec: object) -> Job:
    return Job(metadata={"name": "j"}, spec={"app": "sim", "workdir": "w/j", "transfers": transfers,  # type: ignore[arg-type]
                                           **spec})


BAD = [
    ({"inp": "local:/x", "nosuch": "local:/y"}, 'App "sim" has no transfer slot "nosuch" (slots: inp, result)'),
    ({"inp": "mars:/x"}, 'Site "testsite" has no transfer location "mars" (locations: local, web)'),
    ({"inp": "local:relative/x"}, 'expected "alias:/absolute/path"'),
    ({"result": "local:/out.json"}, 'Required value: App "sim" requires stage-in slot "inp" (the input deck)'),
    ({"inp": "web:/in.dat", "result": "web:/r.json"}, "stage-out over https:// is not supported"),
]


@pytest.mark.parametrize(("transfers", "message"), BAD, ids=["slot", "alias", "relative", "required", "http-out"])
def test_registry_refuses_with_one_clear_error_and_writes_nothing(world, transfers, message):
    before = world.store.current_revision()
    with pytest.raises(Exception) as e:  # Invalid from admission, ValidationError from the model
        world.create(job(transfers))
    assert message in str(e.value)
    assert world.store.current_revision() == before


def test_a_good_job_is_admitted(world):
    before = world.store.current_revision()
    created = world.create(job({"inp": "web:/decks/in.dat", "result": "local:/tmp/out.json"}))
    stored = world.get(Job, "j")
    assert stored.spec.transfers == {"inp": "web:/decks/in.dat", "result": "local:/tmp/out.json"}
    assert stored.spec.app == "sim" and stored.spec.workdir == "w/j"
    assert stored.metadata.uid == created.metadata.uid
    assert int(stored.metadata.resource_version) > before
    assert world.count(Job) == 1


def test_an_app_slot_that_escapes_the_workdir_is_refused(world):
    with pytest.raises(ValueError, match=r"localPath \"../../etc/passwd\" must stay inside the job's workdir"):
        App(metadata={"name": "evil"}, spec={"command": "x", "transfers": {  # type: ignore[arg-type]
            "inp": {"direction": "in", "localPath": "../../etc/passwd"}}})


def test_updating_transfers_is_checked_too(world):
    j = world.create(job({"inp": "local:/x"}))
    bad = j.model_copy(deep=True)
    bad.spec.transfers = {"inp": "mars:/x"}
    with pytest.raises(Invalid, match="no transfer location"):
        world.update(j, bad)


def test_globus_needs_the_sites_own_endpoint(registry, site):
    registry.create(Site(metadata={"name": site.name}, spec={  # type: ignore[arg-type]
        "path": str(site.path), "transferLocations": {"lap": "globus://aaaaaaaa-0000-4000-8000-000000000001"}}))
    registry.create(App(metadata={"name": "sim"}, spec={"command": "x", "transfers": {"inp": IN}}))  # type: ignore[arg-type]
    with pytest.raises(Invalid, match="has no spec.globusEndpointId"):
        registry.create(job({"inp": "lap:/x"}))


def test_site_locations_are_checked(registry, site):
    with pytest.raises(ValueError, match="a Globus location is globus://<endpoint-uuid>"):
        Site(metadata={"name": "s"}, spec={"path": "/s", "transferLocations": {"g": "globus://nope"}})  # type: ignore[arg-type]


def test_python_client_refuses_too(world, site):
    import apis
    from apis import _config

    apis.use(site.store_url)
    try:
        with pytest.raises(Invalid, match='no transfer slot "nosuch"'):
            Job.objects.create(name="py", app="sim", workdir="w/py", transfers={"inp": "local:/x", "nosuch": "local:/y"})
        with pytest.raises(Invalid, match="requires stage-in slot"):
            Job.objects.bulk_create([Job(name=f"b{i}", app="sim", workdir=f"w/b{i}") for i in range(3)])
        assert Job.objects.count() == 0
    finally:
        _config.reset()


def test_balsamctl_apply_prints_one_error_line_and_writes_nothing(world, site, tmp_path: Path):
    doc = {"apiVersion": "balsam.io/v1", "kind": "Job", "metadata": {"name": "cli"},
           "spec": {"app": "sim", "workdir": "w/cli", "transfers": {"inp": "mars:/x"}}}
    f = tmp_path / "job.yaml"
    with open(f, "w") as fh:
        YAML().dump(doc, fh)
    s = st.open_store(site.store_url)
    before = s.current_revision()
    r = CliRunner().invoke(cli, ["--store", site.store_url, "apply", "-f", str(f)])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 1 and len(lines) == 1, r.output
    assert lines[0].startswith("Error from server (Invalid): ") and 'no transfer location "mars"' in lines[0]
    assert s.current_revision() == before
    s.close()


def test_a_site_updated_in_the_same_write_is_the_one_checked(world, site):
    old = world.get(Site, site.name)
    new = old.model_copy(deep=True)
    new.spec.transfer_locations["mars"] = "file://"
    world.write(creates=[job({"inp": "mars:/x"})], updates=[(old, new)])
    assert world.get(Job, "j").spec.transfers == {"inp": "mars:/x"}
