"""``balsam.api``: Balsam's fifteen public names behaving as Balsam documents them, and
``ApplicationDefinition.load_by_name / load_by_site / load_by_id`` and ``sync(rename_from=)``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import ValidationError

import apis
import balsam.api as bapi
from apis import AlreadyExists, App, DoesNotExist, Invalid, Job, Node, TransferTask
from balsam.api import (
    ApplicationDefinition,
    BatchJob,
    BatchJobPartition,
    JobMode,
    JobState,
    JobTransferItem,
    Session,
    TransferDirection,
    TransferItem,
    TransferSlot,
)
from tests.apis.conftest import Backend

BALSAM_NAMES = ["Site", "ApplicationDefinition", "BatchJob", "Job", "Session", "TransferItem", "EventLog",
                "JobTransferItem", "JobState", "AppParameter", "TransferDirection", "TransferSlot", "JobMode",
                "BatchJobPartition", "site_config"]


class Doubler(ApplicationDefinition):
    """Doubles a number (a Python App importable by module path)."""

    def run(self, x: int) -> int:
        return 2 * x


@pytest.fixture
def client(backend: Backend) -> Iterator[apis.Client]:
    with apis.using(backend.registry, namespace=backend.namespace) as c:
        yield c


def test_balsam_api_offers_balsams_fifteen_names() -> None:
    for name in BALSAM_NAMES:
        assert hasattr(bapi, name) and name in bapi.__all__, name


def test_job_state_has_balsams_member_names() -> None:
    assert JobState.job_finished is JobState.JOB_FINISHED and JobState.job_finished == "JOB_FINISHED"
    assert JobState.is_valid("RUN_DONE") and not JobState.is_valid("run_done")
    assert [s.value for s in JobState].count("FAILED") == 1  # aliases do not repeat in iteration


def test_enums_and_models_take_balsams_values(client: apis.Client) -> None:
    assert TransferDirection.stage_in == "in" and JobMode.serial == "serial"
    slot = TransferSlot(direction=TransferDirection.stage_out, local_path="out.txt")
    assert slot.direction == "out"
    bj = BatchJob(spec={"num_nodes": 2, "partitions": [BatchJobPartition(job_mode=JobMode.mpi, num_nodes=2,
                                                                         filter_tags={"k": "v"})]})
    assert bj.spec.partitions == [{"job_mode": "mpi", "num_nodes": 2, "filter_tags": {"k": "v"}}]
    job = Job(app_id="echo", workdir="w", parameters={"x": "1"},
              transfers={"inp": JobTransferItem(location_alias="mine", path="/data/in.txt")})
    assert job.transfers == {"inp": "mine:/data/in.txt"}
    with pytest.raises(ValidationError, match="must be absolute"):
        JobTransferItem(location_alias="mine", path="relative.txt")


def test_state_filters_take_balsam_members(backend: Backend, client: apis.Client) -> None:
    backend.app()
    Job.objects.create(app_id="echo", workdir="w", parameters={"x": "1"})
    assert Job.objects.filter(state=JobState.created).count() == 1
    assert Job.objects.filter(state=[JobState.job_finished, JobState.failed]).count() == 0


def test_sessions_are_the_node_agents(backend: Backend, client: apis.Client) -> None:
    ns = backend.namespace
    for name, bj in (("n1", "bj-1"), ("n2", "bj-2")):
        backend.registry.create(Node(metadata={"name": name, "namespace": ns},
                                     spec={"hostname": name, "cpus": 2, "batchJob": bj}))
    assert {s.id for s in Session.objects.all()} == {"n1", "n2"}
    s = Session.objects.get(batch_job_id="bj-2")
    assert s.id == "n2" and s.site_id == ns
    s.delete()
    assert [x.id for x in Session.objects.all()] == ["n1"]
    with pytest.raises(apis.BadRequest, match="unknown filter"):
        Session.objects.filter(hostname="n1")


def test_transfer_items_are_the_items_of_transfer_tasks(backend: Backend, client: apis.Client) -> None:
    backend.registry.create(TransferTask(metadata={"name": "tt1", "namespace": backend.namespace}, spec={
        "provider": "file", "direction": "in", "location": "file://",
        "items": [{"job": "j1", "slot": "inp", "source": "/remote/a", "destination": "/site/data/w/a"},
                  {"job": "j2", "slot": "inp", "source": "/remote/b", "destination": "/site/data/w2/b"}]}))
    items = list(TransferItem.objects.filter(job_id="j2"))
    assert len(items) == 1
    it = items[0]
    assert (it.direction, it.remote_path, it.local_path, it.state) == ("in", "/remote/b", "/site/data/w2/b",
                                                                       "pending")
    assert TransferItem.objects.filter(state="pending").count() == 2


def test_load_by_name_site_and_id_give_back_a_usable_class(backend: Backend, client: apis.Client) -> None:
    ns = backend.namespace
    backend.registry.create(App(metadata={"name": "hello", "namespace": ns}, spec={
        "site": "laptop", "command": "echo hello {{ who }}", "parameters": {"who": {"required": True}}}))
    Doubler.sync()
    Hello = ApplicationDefinition.load_by_name("Hello")
    assert issubclass(Hello, ApplicationDefinition) and Hello.resource_name() == "hello"
    assert Hello.command_template == "echo hello {{ who }}"
    job = Hello.submit("w/1", who="world")
    assert job.app_id == "hello" and job.parameters == {"who": "world"}
    with pytest.raises(Invalid, match="missing required parameter"):
        Hello.submit("w/2")
    assert ApplicationDefinition.load_by_id("doubler") is Doubler
    assert ApplicationDefinition.load_by_name("hello", site_name="laptop") is not None
    with pytest.raises(DoesNotExist):
        ApplicationDefinition.load_by_name("hello", site_name="elsewhere")
    with pytest.raises(DoesNotExist):
        ApplicationDefinition.load_by_name("nope")
    assert set(ApplicationDefinition.load_by_site("laptop")) == {"hello", "Doubler"}
    assert set(ApplicationDefinition.load_by_site("elsewhere")) == {"Doubler"}  # it names no site


def test_sync_rename_from_moves_the_jobs_to_the_new_name(backend: Backend, client: apis.Client) -> None:
    ns = backend.namespace

    class Tripler(ApplicationDefinition):
        command_template = "echo {{ x }}"

    Tripler.sync()
    jobs = [Tripler.submit(f"w/{i}", x=i) for i in range(3)]

    class Quadrupler(ApplicationDefinition):
        command_template = "echo {{ x }}"

    app = Quadrupler.sync(rename_from="Tripler")
    assert app.name == "quadrupler"
    assert backend.registry.try_get(App, "tripler", ns) is None
    assert {j.app_id for j in Job.objects.filter(id=[j.id for j in jobs])} == {"quadrupler"}
    # refused, nothing written: the old App is gone now, and a taken new name
    with pytest.raises(DoesNotExist):
        Quadrupler.sync(rename_from="tripler")
    Tripler.sync()
    with pytest.raises(AlreadyExists):
        Quadrupler.sync(rename_from="tripler")
    assert backend.registry.try_get(App, "tripler", ns) is not None


def test_sync_rename_from_is_refused_while_a_job_runs(backend: Backend, client: apis.Client) -> None:
    class Runner(ApplicationDefinition):
        command_template = "echo {{ x }}"

    Runner.sync()
    job = Runner.submit("w", x=1)
    backend.registry.mutate(Job, job.name, lambda j: apis.advance(j, apis.HAPPY_PATH[1:6]), backend.namespace)
    assert backend.registry.get(Job, job.name, backend.namespace).state == "RUNNING"

    class Renamed(ApplicationDefinition):
        command_template = "echo {{ x }}"

    with pytest.raises(Invalid, match="RUNNING"):
        Renamed.sync(rename_from="Runner")
    assert backend.registry.try_get(App, "runner", backend.namespace) is not None
    assert backend.registry.try_get(App, "renamed", backend.namespace) is None
