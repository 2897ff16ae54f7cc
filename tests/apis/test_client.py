"""A client with no globals: ``Kind.objects`` works through the current client (``apis.using``),
objects remember the client that loaded them, ``Job.objects.using(...)`` reaches every write and
wait, and the layers of ``apis`` import one way."""

from __future__ import annotations

import ast
import concurrent.futures
import contextvars
import threading
from pathlib import Path

import pytest

import apis
import store as st
from apis import App, Job, JobState, Registry
from apis._context import bound_client
from tests.apis.conftest import Backend

APIS = Path(apis.__file__).parent
MODEL = {"_meta", "_kinds", "_balsam", "_states", "_selectors", "_lifecycle", "_locations", "_outcome",
         "_context", "_errors", "_codec"}
CLIENT = {"_client", "_query", "_futures", "_watch", "_sites", "_appdef", "_config", "analytics"}


def _imports(module: str) -> set[str]:
    """The ``apis`` modules ``module`` imports at run time (TYPE_CHECKING blocks left out)."""
    tree = ast.parse((APIS / f"{module}.py").read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module)
            else:
                out |= {a.name for a in node.names}
    return out


def test_no_module_of_apis_imports_inside_a_function() -> None:
    offenders = []
    for path in sorted(APIS.glob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_the_model_imports_neither_the_registry_nor_the_client() -> None:
    for module in MODEL:
        bad = _imports(module) & (CLIENT | {"_registry"})
        assert not bad, (module, bad)
    assert not (_imports("_registry") & (CLIENT | {"_kinds", "_balsam"})), "the registry knows no concrete kind"


def test_using_a_registry_routes_create_bulk_create_and_queries(backend: Backend, tmp_path: Path) -> None:
    other = Registry(st.open_store(f"sqlite:///{tmp_path / 'other.db'}"))
    try:
        backend.app()
        ns = backend.namespace
        mgr = Job.objects.using(backend.registry, namespace=ns)
        one = mgr.create(app_id="echo", workdir="w/1", parameters={"x": "1"})
        many = mgr.bulk_create([Job(app_id="echo", workdir=f"w/{i}", parameters={"x": "1"}) for i in range(3)])
        assert backend.registry.count(Job, ns) == 4
        assert other.count(Job, ns) == 0
        assert mgr.count() == 4 and {j.name for j in mgr.all()} == {one.name, *(j.name for j in many)}
        with apis.using(other, namespace=ns):
            assert Job.objects.count() == 0
    finally:
        other.store.close()


def test_an_object_keeps_the_client_that_loaded_it(backend: Backend) -> None:
    backend.app()
    ns = backend.namespace
    with apis.using(backend.registry, namespace=ns) as client:
        Job(app_id="echo", workdir="w/1", parameters={"x": "1"}, name="j1").save()
        job = Job.objects.get(id="j1")
    assert bound_client(job) is client
    # outside the block the job still writes through its store
    job.data = {"seen": True}
    job.save()
    assert backend.registry.get(Job, "j1", ns).spec.data == {"seen": True}
    job.refresh_from_db()
    assert job.metadata.resource_version == backend.registry.get(Job, "j1", ns).metadata.resource_version


def test_using_is_per_context_not_per_process(backend: Backend, tmp_path: Path) -> None:
    backend.app()
    seen: list[str] = []
    with apis.using(backend.registry, namespace=backend.namespace):
        ctx = contextvars.copy_context()
        t = threading.Thread(target=lambda: seen.append(apis.current_client().namespace))
        t.start()
        t.join()
        ctx.run(lambda: seen.append(apis.current_client().namespace))
    # a new thread does not inherit the block's client; a copied context does
    assert seen[1] == backend.namespace
    assert apis.current_client() is not None


def test_futures_wait_on_the_jobs_own_store(backend: Backend) -> None:
    backend.app()
    ns = backend.namespace
    mgr = Job.objects.using(backend.registry, namespace=ns)
    jobs = mgr.bulk_create([Job(app_id="echo", workdir=f"w/{i}", parameters={"x": "1"}) for i in range(2)])

    def finish(name: str) -> None:
        backend.registry.mutate(Job, name, lambda j: apis.advance(j, apis.HAPPY_PATH[1:]), ns)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(finish, jobs[1].name)
        first = next(iter(Job.objects.as_completed(jobs, timeout=120)))
        assert first.name == jobs[1].name and first.state == JobState.JOB_FINISHED
        pool.submit(finish, jobs[0].name)
        res = mgr.wait(jobs, timeout=120)
    assert not res.not_done and len(res.done) == 2


def test_jobs_of_two_stores_cannot_be_waited_together(backend: Backend, tmp_path: Path) -> None:
    other = Registry(st.open_store(f"sqlite:///{tmp_path / 'other.db'}"))
    try:
        ns = backend.namespace
        backend.app()
        other.create(App(metadata={"name": "echo", "namespace": ns}, spec={"command": "echo {{ x }}"}))
        a = Job.objects.using(backend.registry, namespace=ns).create(app_id="echo", workdir="a", parameters={"x": "1"})
        b = Job.objects.using(other, namespace=ns).create(app_id="echo", workdir="b", parameters={"x": "1"})
        with pytest.raises(ValueError, match="several stores"):
            apis.Manager(Job).wait([a, b], timeout=1)
    finally:
        other.store.close()


def test_help_of_the_python_client_shows_docstrings() -> None:
    for fn in (Job.objects.filter, Job.objects.get, Job.objects.order_by, Job.objects.bulk_create,
               Job.objects.all().watch, Job.objects.all().count, Job.objects.all().update, Job.save,
               Job.result, apis.using, apis.ApplicationDefinition.load_by_name):
        assert (fn.__doc__ or "").strip(), fn


def test_using_a_store_url_opens_it_once_per_process(backend: Backend) -> None:
    backend.app()
    backend.registry.create(Job(name="j", namespace=backend.namespace, app_id="echo", workdir="w",
                                parameters={"x": "1"}))
    with apis.using(backend.url, namespace=backend.namespace) as c1:
        assert [j.name for j in Job.objects.all()] == ["j"]
    with apis.using(backend.url, namespace=backend.namespace) as c2:
        assert c2.registry is c1.registry


def test_use_sets_the_process_default_and_reset_forgets_it(backend: Backend) -> None:
    backend.app()
    reg = apis.use(backend.url, namespace=backend.namespace)
    seen: list[str] = []
    t = threading.Thread(target=lambda: seen.append(apis.current_client().namespace))  # another thread too
    t.start()
    t.join()
    assert seen == [backend.namespace] and apis.default_registry() is reg
    apis._config.reset()
    assert apis.current_client().namespace != backend.namespace or backend.namespace == "default"
