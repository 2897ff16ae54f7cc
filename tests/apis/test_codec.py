"""The stored JSON (``Resource.to_json``, apis/_codec.py) is pydantic's
``model_dump_json(by_alias=True, exclude_none=True, exclude_defaults=True)``, byte for byte,
for every kind, and objects it cannot mirror are left to pydantic."""

from __future__ import annotations

import dataclasses
import enum
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel

from apis import App, BatchJob, Job, Site
from apis._codec import encode_stored, store_json
from apis._kinds import (
    Condition,
    HistoryEvent,
    JobResources,
    Node,
    Placement,
    RetryPolicy,
    TransferItem,
    TransferTask,
)
from apis._meta import Resource
from apis._states import JobState

T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def pydantic_json(obj: BaseModel) -> bytes:
    return obj.model_dump_json(by_alias=True, exclude_none=True, exclude_defaults=True).encode()


def _jobs() -> list[Job]:
    plain = Job(app_id="hello", workdir="w/1")
    full = Job(app_id="hello", workdir="w/2", parameters={"x": 1, "y": "é"}, tags={"a": "b", "n": 3},
               parent_ids=["p1", "p2"], num_nodes=2, ranks_per_node=4, gpus_per_rank=0.5,
               launch_params={"-x": "1"}, wall_time_min=1.5, data={"k": [1, 2.5, None, {"z": True}]},
               annotations={"note": "\u2028 \x00 quoted\""}, name="full-job", namespace="ns-1")
    full.spec.retry = RetryPolicy()  # default None, value all-defaults: kept as {}
    full.spec.resources = JobResources(num_nodes=1)  # explicitly default: dropped
    st = full.status
    st.state = JobState.RUN_DONE
    st.return_code = 0  # not None: kept even though 0
    st.placement = Placement(batch_job="bj", nodes=["n1", "n2"], cpus=[0, 1], occupancy=0.5)
    st.history = [HistoryEvent(from_state=None, to_state=JobState.CREATED, time=T0),
                  HistoryEvent(from_state=JobState.CREATED, to_state=JobState.READY, time=T0, message="m")]
    st.conditions = [Condition(type="Ready", last_transition_time=T0)]
    st.result = {"value": 1e20, "small": 1.5e-7, "t": T0, "tuple": (1, 2), "set": {3}, "b": b"xy"}
    st.last_update = T0.replace(microsecond=0)
    st.start_time = T0.astimezone(timezone(timedelta(hours=-5)))
    st.end_time = T0.replace(tzinfo=None)
    empty_placement = Job(app_id="hello", workdir="w/3")
    empty_placement.status.placement = Placement()  # default None: kept as {}
    generated = Job(app_id="hello", workdir="w/4", generate_name="gen-")
    generated.ensure_identity(T0)
    nan = Job(app_id="hello", workdir="w/5", wall_time_min=float("inf"))
    nested_model_in_any = Job(app_id="hello", workdir="w/6", data={"m": JobResources(num_nodes=3)})
    state_as_str = Job(app_id="hello", workdir="w/7")
    state_as_str.status.state = "RUNNING"  # type: ignore[assignment]  # assigned without validation
    return [plain, full, empty_placement, generated, nan, nested_model_in_any, state_as_str, *_edge_jobs()]


class _Str(str):
    pass


@dataclasses.dataclass
class _Point:
    x: int
    y: float


def _edge_jobs() -> list[Job]:
    """Values orjson writes (or refuses, then pydantic writes them): each must come out as
    pydantic's bytes either way (issue 19: orjson writes the encoder's tree when it can)."""
    values: list[Any] = [
        {"floats": [1e-5, 1e16, 0.1, 1.0, 1 / 64, -0.0, 123456789.123, 1e300, 5e-324]},
        {"ints": [0, -1, 2**53 + 1, 2**63, -(2**63)]}, {"big": 2**70}, {"neg_big": -(2**65)},
        {"times": [datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), datetime(2026, 1, 2, 3, 4, 5, 7),
                   datetime(2026, 1, 2, 3, 4, 5, 1000, tzinfo=timezone(timedelta(hours=5, minutes=30)))]},
        {"text": "\u0000\u001f\u007f\u2028\u2029 é 🎉 </script> \\ \" '"},
        {1: "int key"}, {"nested": {"none": None, "list": [None, {"x": None}], "tuple": (1, "a")}},
        {"sub": _Str("a str subclass")}, {"dc": _Point(1, 2.5)}, {"frozen": frozenset({1})},
        {"delta": timedelta(seconds=90)}, {"state": JobState.RUNNING},
    ]
    jobs = []
    for i, v in enumerate(values):
        j = Job(app_id="hello", workdir=f"e/{i}", name=f"edge-{i}")
        j.spec.data = v
        j.status.history = [HistoryEvent(from_state=None, to_state=JobState.CREATED, time=T0)]
        jobs.append(j)
    return jobs


def _others() -> list[Resource]:
    app = App.model_validate({
        "apiVersion": "balsam.io/v1", "kind": "App", "metadata": {"name": "a", "labels": {"x": "y"}},
        "spec": {"command": "echo {{x}}", "parameters": {"x": {"required": False, "default": "1"}, "y": {}},
                 "transfers": {"in": {"direction": "in", "localPath": "in.dat"}},
                 "python": {"class": "Adder", "module": "m", "hooks": ["preprocess"]}},
        "status": {"seen": 1},
    })
    site = Site(metadata={"name": "s"}, spec={"path": "/tmp/s", "elasticQueue": {"maxNodes": 4},
                                              "nodeDefaults": {"cpus": 1}})
    bj = BatchJob(metadata={"name": "b", "finalizers": ["balsam.io/scheduler"]},
                  spec={"numNodes": 2, "partitions": [{"a": 1}], "nodeSize": {"cpus": 8}})
    bj.status.start_time = T0
    node = Node(metadata={"name": "n", "ownerReferences": [{"kind": "BatchJob", "name": "b", "uid": "u"}]},
                spec={"hostname": "h", "cpus": 4})
    tt = TransferTask(metadata={"name": "t"}, spec={"provider": "file", "direction": "in", "location": "file://",
                                                   "items": [TransferItem(job="j", slot="s", source="/a",
                                                                          destination="/b")]})
    return [app, site, bj, BatchJob(metadata={"name": "b2"}), node, tt]


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")  # a state assigned as str, on purpose
# A generated name is random: the id names its prefix, so every xdist worker collects the same ids.
@pytest.mark.parametrize("obj", [*_jobs(), *_others()],
                         ids=lambda o: f"{o.KIND}-{o.metadata.generate_name or o.metadata.name or ''}")
def test_same_bytes_as_pydantic(obj: Resource) -> None:
    assert obj.to_json() == pydantic_json(obj)
    if obj.KIND == "Job" and obj.spec.resources.wall_time_min == float("inf"):  # type: ignore[attr-defined]
        return  # pydantic writes infinity as null, which it does not read back (either way)
    again = type(obj).model_validate_json(obj.to_json())
    assert again.to_json() == obj.to_json()


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")
@pytest.mark.parametrize("obj", [*_jobs(), *_others()],
                         ids=lambda o: f"{o.KIND}-{o.metadata.generate_name or o.metadata.name or ''}")
def test_the_patch_path_stores_the_same_bytes_without_the_resource_version(obj: Resource) -> None:
    # encode_stored (Registry.write_status_patches) writes through orjson as to_json does
    versioned = obj.model_copy(update={"metadata": obj.metadata.model_copy(update={"resource_version": "42"})})
    assert b"42" in versioned.to_json()
    assert encode_stored(versioned) == obj.model_copy(
        update={"metadata": obj.metadata.model_copy(update={"resource_version": None})}).to_json()


def test_the_fast_path_is_taken_for_every_kind() -> None:
    for obj in [_jobs()[1], *_others()]:
        assert store_json(obj) is not None, obj.KIND


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")
def test_a_value_of_the_wrong_model_type_is_left_to_pydantic() -> None:
    job = Job(app_id="hello", workdir="w")
    job.spec.resources = {"numNodes": 2}  # type: ignore[assignment]
    assert store_json(job) is None
    assert job.to_json() == pydantic_json(job)


def test_classes_it_cannot_mirror_are_left_to_pydantic() -> None:
    from pydantic import field_serializer

    class Color(enum.Enum):
        RED = 1

    class Custom(BaseModel):
        x: int = 1

        @field_serializer("x")
        def _x(self, v: int) -> str:
            return str(v)

    class Odd(BaseModel):
        c: Color = Color.RED
        u: int | str = 1
        m: Any = None

    assert store_json(Custom(x=2)) is None
    odd = Odd(u="a", m={"a": Color.RED})
    assert store_json(odd) == pydantic_json(odd)
