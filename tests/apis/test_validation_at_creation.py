"""What would make a job FAIL once placed is refused when it is written, with one error and
nothing written: required and undeclared parameters (Python and CLI), unknown ``order_by``
fields; and ``count()`` agrees with iterating the same query."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import apis
from apis import App, BadRequest, Invalid, Job
from kubectl_like.cli import cli
from tests.apis.conftest import Backend


@pytest.fixture
def mgr(backend: Backend) -> apis.Manager[Job]:
    backend.app("echo", "echo {{ x }} {{ y }}", x={"required": True}, y={"required": False, "default": "1"})
    return Job.objects.using(backend.registry, namespace=backend.namespace)


def test_a_missing_required_parameter_is_refused_on_save_create_and_bulk_create(
        backend: Backend, mgr: apis.Manager[Job]) -> None:
    with pytest.raises(Invalid, match=r'spec\.parameters\.x: Required value: App "echo" requires parameter x'):
        mgr.create(app_id="echo", workdir="w", parameters={"y": "2"})
    with apis.using(backend.registry, namespace=backend.namespace), pytest.raises(Invalid, match="requires"):
        Job(app_id="echo", workdir="w").save()
    good = [Job(app_id="echo", workdir=f"w{i}", parameters={"x": "1"}) for i in range(3)]
    with pytest.raises(Invalid, match="requires parameter x"):
        mgr.bulk_create([*good, Job(app_id="echo", workdir="bad")])
    assert backend.registry.count(Job, backend.namespace) == 0  # the whole batch was refused


def test_an_undeclared_parameter_is_refused_naming_the_declared_ones(backend: Backend,
                                                                    mgr: apis.Manager[Job]) -> None:
    with pytest.raises(Invalid, match=r"declares no parameter 'z' \(declared: x, y\)"):
        mgr.create(app_id="echo", workdir="w", parameters={"x": "1", "z": "typo"})
    assert backend.registry.count(Job, backend.namespace) == 0
    ok = mgr.create(app_id="echo", workdir="w", parameters={"x": "1"})  # y has a default
    assert ok.parameters == {"x": "1"}


def test_an_edit_that_drops_a_required_parameter_is_refused(backend: Backend, mgr: apis.Manager[Job]) -> None:
    job = mgr.create(app_id="echo", workdir="w", parameters={"x": "1"})
    job.parameters = {"y": "3"}
    with pytest.raises(Invalid, match="requires parameter x"):
        job.save()
    assert backend.registry.get(Job, job.name, backend.namespace).spec.parameters == {"x": "1"}


def test_a_python_app_accepts_extra_keywords_but_not_missing_ones(backend: Backend) -> None:
    ns = backend.namespace
    backend.registry.create(App(metadata={"name": "adder", "namespace": ns}, spec={
        "python": {"module": "m", "class": "Adder"},
        "parameters": {"x": {"required": True}, "y": {"required": False, "default": "0"}}}))
    mgr = Job.objects.using(backend.registry, namespace=ns)
    mgr.create(app_id="adder", workdir="w1", parameters={"x": "1", "extra": "2"})  # run(**kwargs) may take it
    with pytest.raises(Invalid, match="requires parameter x"):
        mgr.create(app_id="adder", workdir="w2", parameters={"y": "1"})


def _cli(site: Path, *args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, ["--site", str(site), *args], catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for k in ("BALSAM_SITE_PATH", "BALSAM_STORE", "BALSAM_NAMESPACE"):
        monkeypatch.delenv(k, raising=False)
    path = tmp_path / "site"
    assert CliRunner().invoke(cli, ["init", str(path)], catch_exceptions=False).exit_code == 0
    (tmp_path / "app.yaml").write_text(
        "apiVersion: balsam.io/v1\nkind: App\nmetadata: {name: hello}\n"
        "spec: {command: 'echo hello {{ name }}', parameters: {name: {required: true}}}\n")
    assert _cli(path, "apply", "-f", str(tmp_path / "app.yaml"))[0] == 0
    return path


@pytest.mark.parametrize("params", [[], ["-p", "name=w", "-p", "nmae=typo"]])
def test_create_job_refuses_bad_parameters_with_one_error_line(site: Path, params: list[str]) -> None:
    code, out, err = _cli(site, "create", "job", "--app", "hello", "-w", "demo/1", *params)
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith(("error: ", "Error from server (Invalid)")) and "Traceback" not in err
    assert _cli(site, "get", "jobs", "-o", "name")[1] == ""


def test_apply_refuses_a_job_missing_a_parameter_and_writes_nothing(site: Path, tmp_path: Path) -> None:
    f = tmp_path / "jobs.yaml"
    f.write_text("apiVersion: balsam.io/v1\nkind: Job\nmetadata: {name: ok}\n"
                 "spec: {app: hello, workdir: a, parameters: {name: w}}\n---\n"
                 "apiVersion: balsam.io/v1\nkind: Job\nmetadata: {name: bad}\nspec: {app: hello, workdir: b}\n")
    code, _, err = _cli(site, "apply", "-f", str(f))
    assert code != 0 and "requires parameter name" in err and "Traceback" not in err
    assert "bad" not in _cli(site, "get", "jobs", "-o", "name")[1]


def test_order_by_an_unknown_field_is_refused(mgr: apis.Manager[Job]) -> None:
    for bogus in ("bogus", "-bogus", "spec.bogus", "status.state.deeper", ""):
        with pytest.raises(BadRequest, match="order_by"):
            mgr.order_by(bogus)
    for good in ("last_update", "-state", "id", "workdir", "num_nodes", "spec.resources.numNodes",
                 "spec.resources.num_nodes", ".metadata.name", "metadata.labels.anything", "created"):
        mgr.order_by(good)


def test_count_agrees_with_iteration_when_a_filter_value_is_a_list(backend: Backend,
                                                                   mgr: apis.Manager[Job]) -> None:
    p1 = mgr.create(app_id="echo", workdir="p1", parameters={"x": "1"})
    p2 = mgr.create(app_id="echo", workdir="p2", parameters={"x": "1"})
    mgr.create(app_id="echo", workdir="child", parameters={"x": "1"}, parent_ids=[p1.id, p2.id])
    for qs in (mgr.filter(parent_id=[p1.id, p2.id]), mgr.filter(state=["CREATED", "AWAITING_PARENTS", "CREATED"]),
               mgr.filter(id=[p1.id, p1.id]), mgr.filter(app_id=["echo", "nope"]),
               mgr.filter(selector="!nolabel")):
        assert qs.count() == len(list(qs)), qs


def test_get_sort_by_an_unknown_field_is_one_error_line(site: Path) -> None:
    code, out, err = _cli(site, "get", "jobs", "--sort-by", "bogus")
    assert code != 0 and out == "" and err == "error: order_by: unknown field 'bogus' for jobs\n"
    assert _cli(site, "get", "jobs", "--sort-by", ".spec.workdir")[0] == 0
