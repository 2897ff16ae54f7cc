"""``ApplicationDefinition.map`` builds its jobs from one validated template (issue 14, fifth
round): the jobs it writes must be the jobs ``submit`` would have written, share nothing
mutable, and be refused where ``submit`` refuses them. A SQLite store, no site."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import apis
from apis import Job
from apis import _config as config
from apis._appdef import ApplicationDefinition, _keyword_rules
from apis._pycodec import decode_param, encode_param, encode_result

SERVER_FIELDS = ("name", "uid", "creationTimestamp", "resourceVersion")


class Scaler(ApplicationDefinition):
    def run(self, x, scale=2, *, label="s"):
        return x * scale


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[apis.Registry]:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    registry = apis.use(url)
    try:
        yield registry
    finally:
        config.reset()


def _stored(reg: apis.Registry, job: Job) -> dict[str, Any]:
    """The job's stored document without what the server assigns per object."""
    doc: dict[str, Any] = json.loads(reg.store.get(f"/registry/jobs/default/{job.name}").value)
    for k in SERVER_FIELDS:
        doc["metadata"].pop(k, None)
    doc["status"].pop("lastUpdate", None)
    return doc


SHARED: dict[str, Any] = {"tags": {"exp": "a"}, "data": {"k": [1, 2]}, "node_packing_count": 4,
                          "wall_time_min": 1.5, "priority": 3}


def test_map_writes_the_jobs_submit_would_write(reg):
    args = [{"x": 1}, {"x": "a", "scale": 3}, {"x": (1, 2), "label": "t"}, {"x": [1.5, None], "scale": True}]
    mapped = Scaler.map("m/{i}/./x", args, **SHARED)
    submitted = Job.objects.bulk_create(
        [Scaler.submit(f"m/{i}/./x", save=False, **a, **SHARED) for i, a in enumerate(args)])
    assert [_stored(reg, j) for j in mapped] == [_stored(reg, j) for j in submitted]
    assert [j.workdir.as_posix() for j in mapped] == [f"m/{i}/x" for i in range(4)]  # normalised as a Job does


def test_jobs_of_one_map_share_nothing_mutable(reg):
    a, b = Scaler.map("share/{i}", [{"x": 1}, {"x": 2}], **SHARED)
    a.data["k"] = "changed"
    a.spec.data["new"] = 1
    a.tags["exp"] = "b"
    a.spec.resources.launch_params["x"] = "y"
    a.status.history.append(b.status.history[0] if b.status.history else None)  # type: ignore[arg-type]
    a.status.conditions.append(None)  # type: ignore[arg-type]
    a.num_nodes = 2
    assert b.data == {"k": [1, 2]} and b.tags == {"exp": "a"} and b.spec.resources.launch_params == {}
    assert b.status.conditions == [] and b.num_nodes == 1
    assert not b._pending and a._pending


@pytest.mark.parametrize("workdir", ["/abs/{i}", "../out/{i}", "a/../../{i}"])
def test_map_refuses_a_workdir_outside_data_as_submit_does(reg, workdir):
    with pytest.raises(ValueError) as by_submit:
        Scaler.submit(workdir.format(i=0), save=False, x=1)
    with pytest.raises(ValueError) as by_map:
        Scaler.map(workdir, [{"x": 1}])
    assert str(by_map.value) == str(by_submit.value)
    assert reg.count(Job) == 0


def _signatures() -> list[Any]:
    def a(self, x, y): ...
    def b(self, x, y=1, *, z, w=2): ...
    def c(self, x, **kw): ...
    def d(self, *args, x): ...
    def e(self, x, /, y): ...
    def f(*args, x=1): ...
    def g(self, *, x): ...
    def h(*, x): ...
    def k(self, /, x, **kw): ...
    return [a, b, c, d, e, f, g, h, k]


KEYWORD_SETS = [{}, {"x": 1}, {"x": 1, "y": 2}, {"x": 1, "z": 3}, {"x": 1, "y": 2, "z": 3, "w": 4},
                {"x": 1, "q": 0}, {"self": 1, "x": 1}, {"y": 1}, {"args": 1, "x": 2}, {"kw": 1, "x": 1}]


@pytest.mark.parametrize("fn", _signatures(), ids=lambda f: f.__name__)
def test_the_parameter_check_agrees_with_signature_bind(fn):
    cls = type(f"App_{fn.__name__}", (ApplicationDefinition,), {"run": fn})
    sig = inspect.signature(fn)
    for kw in KEYWORD_SETS:
        try:
            sig.bind(None, **kw)
        except TypeError:
            with pytest.raises(TypeError, match=r"\.run\(\)"):
                cls._check_parameters(dict(kw))
        else:
            cls._check_parameters(dict(kw))
    if fn.__name__ in ("e", "h"):
        assert _keyword_rules(sig) is None  # only bind can say


@pytest.mark.parametrize("v", [0, -7, 2**70, True, None, "hi", 'q"\u00e9\U0001f600', 1.25, [1, "a", None],
                               {"k": {"n": [1.0]}}, float("inf"), (1, 2), {1: 2}])
def test_a_parameter_encodes_as_the_json_text_it_always_had(v):
    if type(v) in (tuple, dict) and v != {"k": {"n": [1.0]}} or v == float("inf"):
        assert encode_param(v).startswith("cloudpickle:")
    else:
        assert encode_param(v) == json.dumps(v, separators=(",", ":"))


@pytest.mark.parametrize("v", [0, 5, -(2**63), 2**64 - 1, True, None])
def test_a_small_result_is_kept_as_it_is(v, tmp_path):
    assert encode_result(v, str(tmp_path / "r")) == (v, None)


def test_the_jobs_map_returns_can_be_changed_and_saved(reg):
    (j,) = Scaler.map("bound/{i}", [{"x": 4}])
    j.data = {"d": 1}
    j.save()
    assert Job.objects.get(name=j.name).data == {"d": 1}


def _decoded_as_before(s: str) -> Any:
    """decode_param before its int fast path: JSON text, else the string itself."""
    try:
        return json.loads(s)
    except ValueError:
        return s


@pytest.mark.parametrize("s", ["0", "7", "42", "007", "-3", "1e3", "3.0", "٣", "²", "9" * 18, "9" * 19, "9" * 5000,
                               "", "world", '"7"', "true", "null", "[1]"])
def test_a_parameter_decodes_as_before_its_int_fast_path(s):
    got = decode_param(s)
    assert got == _decoded_as_before(s) and type(got) is type(_decoded_as_before(s))


def test_map_refuses_bad_shared_keywords_as_submit_does_and_an_empty_map_writes_nothing(reg):
    with pytest.raises(ValueError) as by_submit:
        Scaler.submit("k/0", save=False, x=1, num_nodes=0)
    with pytest.raises(ValueError) as by_map:
        Scaler.map("k/{i}", [{"x": 1}], num_nodes=0)
    assert str(by_map.value) == str(by_submit.value)
    assert Scaler.map("k/{i}", [], num_nodes=0) == []  # nothing to build, nothing refused (as before)
    assert reg.count(Job) == 0
