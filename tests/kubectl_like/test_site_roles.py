"""Least privilege on a shared etcd (TLS, client certificates, auth): the roles that
``balsamctl admin`` makes. A site's role writes its own namespace's keys only; a user's role
creates and reads jobs of the sites it may use; a dashboard's role reads only. Every key a
role may not touch is tried (docs/design.md, "Sites on a shared etcd")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import store as st
from apis import KINDS, App, BatchJob, Forbidden, Job, Node, ObjectMeta, Site
from apis._kinds import Placement
from apis._registry import Registry, object_key
from apis._roles import SITE_INDEXES
from apis._states import JobState
from kubectl_like.cli import cli
from store.testing import EtcdCluster
from tests._deadline import DEADLINE

from .conftest import Run

pytestmark = pytest.mark.etcd
SITES = ("polaris", "aurora")


def balsamctl(*args: str, store: str) -> Run:
    r = CliRunner().invoke(cli, [*args, "--store", store], env={"BALSAM_SITE_PATH": None, "BALSAM_STORE": None},
                           catch_exceptions=False)
    return Run(r.exit_code, r.stdout, r.stderr)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One etcd with auth, two sites (one namespace each) and the roles of balsamctl admin."""
    root = tmp_path_factory.mktemp("sites")
    with EtcdCluster.start(1, auth=True, timeout=DEADLINE) as cluster:
        for name in SITES:
            r = balsamctl("init", str(root / name), "--name", name, "-n", name, store=cluster.url)
            assert r.exit_code == 0, r.stderr
            r = balsamctl("admin", "site-role", name, store=cluster.url)
            assert r.exit_code == 0 and f"user site-{name}" in r.stdout, r.stderr
        reg = Registry(st.open_store(cluster.url))
        for name in SITES:
            reg.create(App(metadata={"name": "hello", "namespace": name}, spec={"command": "/bin/true"}))
        reg.store.close()
        assert balsamctl("admin", "user-role", "alice", "--allow", "polaris", store=cluster.url).exit_code == 0
        assert balsamctl("admin", "dashboard-role", "viewer", store=cluster.url).exit_code == 0
        yield cluster


@pytest.fixture
def as_user(shared: EtcdCluster) -> Iterator[callable]:  # type: ignore[valid-type]
    opened: list[Registry] = []

    def open_as(user: str) -> Registry:
        reg = Registry(st.open_store(shared.url_for(user)))
        opened.append(reg)
        return reg

    yield open_as
    for reg in opened:
        reg.store.close()


def _forbidden_everywhere(reg: Registry, namespace: str) -> None:
    """Every kind's key and every index of ``namespace``: writing is refused."""
    for kind in KINDS:
        with pytest.raises(st.Forbidden):
            reg.store.put(object_key(kind, namespace, "x"), b"{}")
        for index in SITE_INDEXES:
            with pytest.raises(st.Forbidden):
                reg.store.put(f"/index/{kind.PLURAL}/{index}/{namespace}/v/x", b"")
    with pytest.raises(st.Forbidden):
        reg.store.put(f"/leases/controller-manager/{namespace}", b"me")
    with pytest.raises(st.Forbidden):
        reg.store.put("/somewhere/else", b"")


def test_a_sites_role_writes_its_own_site_only(as_user) -> None:  # type: ignore[no-untyped-def]
    polaris = as_user("site-polaris")
    # Its own site: objects, every index they write, its leader lease.
    bj = polaris.create(BatchJob(metadata=ObjectMeta(name="bj1", namespace="polaris"), spec={"site": "polaris"}))
    node = polaris.create(Node(metadata=ObjectMeta(name="n1", namespace="polaris"),
                               spec={"batch_job": bj.name, "hostname": "h", "cpus": 2}))
    parent = polaris.create(Job(app_id="hello", workdir="a/0", site_name="polaris", namespace="polaris"))
    job = polaris.create(Job(app_id="hello", workdir="a/1", site_name="polaris", namespace="polaris",
                             parent_ids=[parent.id], tags={"exp": "x"}))

    def place(j: Job) -> Job:
        j.status.state = JobState.PREPROCESSED
        j.status.placement = Placement(batch_job=bj.name, nodes=[node.name], cpus=[0])
        return j

    placed = polaris.mutate(Job, job.name, place, "polaris")
    assert placed.status.placement.nodes == ["n1"]
    polaris.store.put("/leases/controller-manager/polaris", b"me")
    assert polaris.list(Job, "polaris")[0] and Site.objects.using(polaris).get(name="aurora").id == "aurora"
    # The other site: nothing, read or written.
    _forbidden_everywhere(polaris, "aurora")
    with pytest.raises(Forbidden):
        polaris.list(Job, "aurora")
    with pytest.raises(Forbidden):
        polaris.create(Job(app_id="hello", workdir="b/0", site_name="aurora", namespace="aurora"))


def test_a_users_role_creates_and_reads_jobs_of_its_sites(as_user) -> None:  # type: ignore[no-untyped-def]
    alice = as_user("alice")
    jobs = Job.objects.using(alice)
    made = jobs.bulk_create([Job(app_id="hello", workdir=f"u/{i}", site_name="polaris") for i in range(3)])
    assert {j.metadata.namespace for j in made} == {"polaris"}
    assert jobs.filter(site_id="polaris").count() >= 3
    with pytest.raises(Forbidden):  # not one of its sites
        jobs.bulk_create([Job(app_id="hello", workdir="u/x", site_name="aurora")])
    with pytest.raises(Forbidden):  # Apps, Sites, BatchJobs of its own site: read only
        alice.create(App(metadata={"name": "evil", "namespace": "polaris"}, spec={"command": "/bin/sh"}))
    with pytest.raises(Forbidden):
        alice.create(BatchJob(metadata=ObjectMeta(name="bj-alice", namespace="polaris"), spec={}))
    _forbidden_everywhere_but_jobs(alice)


def _forbidden_everywhere_but_jobs(reg: Registry) -> None:
    for kind in KINDS:
        if kind is not Job:
            with pytest.raises(st.Forbidden):
                reg.store.put(object_key(kind, "polaris", "x"), b"{}")
        with pytest.raises(st.Forbidden):
            reg.store.put(object_key(kind, "aurora", "x"), b"{}")


def test_a_dashboards_role_reads_everything_and_writes_nothing(as_user) -> None:  # type: ignore[no-untyped-def]
    viewer = as_user("viewer")
    assert {s.id for s in Site.objects.using(viewer)} == set(SITES)
    viewer.list(Job, "aurora")
    viewer.list(Job, "polaris")
    for ns in SITES:
        _forbidden_everywhere(viewer, ns)


def test_a_denied_write_is_one_forbidden_line(shared: EtcdCluster, tmp_path: Path) -> None:
    manifest = tmp_path / "job.yaml"
    manifest.write_text("apiVersion: balsam.io/v1\nkind: Job\nmetadata: {name: sneaky, namespace: polaris}\n"
                        "spec: {app: hello, workdir: s/0}\n")
    line = balsamctl("create", "-f", str(manifest), store=shared.url_for("site-aurora")).one_error()
    assert line.startswith("Error from server (Forbidden): ") and "permission denied" in line
    assert "root.key" not in line and ".key" not in line


def test_an_unknown_site_is_one_invalid_line(shared: EtcdCluster, tmp_path: Path) -> None:
    manifest = tmp_path / "job.yaml"
    manifest.write_text("apiVersion: balsam.io/v1\nkind: Job\nmetadata: {name: lost, namespace: polaris}\n"
                        "spec: {app: hello, workdir: l/0, site: nowhere}\n")
    line = balsamctl("create", "-f", str(manifest), store=shared.url).one_error()
    assert line.startswith("Error from server (Invalid): ") and 'spec.site: Not found: "nowhere"' in line
    reg = Registry(st.open_store(shared.url))
    try:
        assert reg.try_get(Job, "lost", "polaris") is None
    finally:
        reg.store.close()
