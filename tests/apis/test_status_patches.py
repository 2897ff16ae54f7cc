"""Registry.write_status_patches: a status edit of a cached object, written without building
the new object in the caller (the placement scheduler's bindings and Waiting conditions)."""

from __future__ import annotations

import json

import pytest

from apis import App, Condition, Conflict, Job, JobState, Placement
from apis._registry import index_keys, index_prefix, object_key
from tests.apis.conftest import Backend


def _preprocessed(b: Backend, name: str) -> Job:
    if b.registry.try_get(App, "echo", b.namespace) is None:
        b.app()
    job = b.registry.create(Job(metadata={"name": name, "namespace": b.namespace},
                                spec={"app": "echo", "workdir": f"w/{name}", "parameters": {"x": "1"}}))
    new = job.status_copy()
    new.status.state = JobState.PREPROCESSED
    return b.registry.update(job, new)


def test_a_patch_sets_status_fields_and_moves_the_index_keys(backend: Backend) -> None:
    reg, ns = backend.registry, backend.namespace
    job = _preprocessed(backend, "p1")
    placement = Placement(nodes=["n7"], cpus=[0, 1], gpus=[], occupancy=0.5)
    rev = reg.write_status_patches([(job, {"placement": placement, "observed_generation": 1})])
    got = reg.get(Job, "p1", ns)
    assert got.metadata.resource_version == str(rev)
    assert got.status.placement == placement and got.status.observed_generation == 1
    assert got.status.state is JobState.PREPROCESSED
    assert got.spec == job.spec and got.metadata.generation == job.metadata.generation
    assert got.status.last_update is not None and got.status.last_update >= job.status.last_update
    # the node agent's index: the job now shows under its node
    assert reg.index_names(Job, "boundnode", "n7", ns) == ["p1"]
    # the stored bytes carry no resourceVersion (the store's revision is it)
    raw = reg.store.get(object_key(Job, ns, "p1"))
    assert raw is not None and "resourceVersion" not in json.loads(raw.value)["metadata"]
    # the caller's cached object is untouched
    assert job.status.placement is None
    assert reg.store.count(index_prefix(Job, "boundnode", ns)) == 1


def test_a_patch_over_a_moved_object_writes_nothing(backend: Backend) -> None:
    reg, ns = backend.registry, backend.namespace
    stale = _preprocessed(backend, "p2")
    other = _preprocessed(backend, "p3")
    reg.mutate(Job, "p2", lambda j: j.metadata.annotations.update({"touched": "yes"}), namespace=ns)
    before = reg.store.current_revision()
    placement = Placement(nodes=["n1"], cpus=[0], gpus=[], occupancy=1.0)
    with pytest.raises(Conflict):
        reg.write_status_patches([(other, {"placement": placement}), (stale, {"placement": placement})])
    assert reg.store.current_revision() == before
    assert reg.get(Job, "p3", ns).status.placement is None
    assert reg.index_names(Job, "boundnode", "n1", ns) == []


def test_no_patches_write_nothing(backend: Backend) -> None:
    before = backend.registry.store.current_revision()
    assert backend.registry.write_status_patches([]) == 0
    assert backend.registry.store.current_revision() == before


def test_a_patch_leaves_exactly_the_index_keys_of_the_object_it_stored(backend: Backend) -> None:
    """Only the index entries that changed are rewritten (a state and a placement here, the
    labels, app, workdir and parameters untouched): what stays is what a full re-index gives."""
    reg, ns = backend.registry, backend.namespace
    job = _preprocessed(backend, "p2")
    placement = Placement(nodes=["n1", "n2"], cpus=[0], gpus=[], occupancy=1.0)
    reg.write_status_patches([(job, {"placement": placement})])
    bound = reg.get(Job, "p2", ns)
    reg.write_status_patches([(bound, {"state": JobState.JOB_FINISHED})])
    done = reg.get(Job, "p2", ns)

    def stored_keys() -> set[str]:
        return {kv.key for kv in reg.store.range("/index/jobs/").kvs
                if kv.key.endswith("/p2") and kv.key.split("/")[4] == ns}

    assert stored_keys() == index_keys(done)
    assert reg.index_names(Job, "boundnode", "n1", ns) == [] and reg.index_names(Job, "node", "n2", ns) == ["p2"]
    assert reg.index_names(Job, "state", "JOB_FINISHED", ns) == ["p2"]
    assert reg.index_names(Job, "state", "PREPROCESSED", ns) == []


def test_a_conditions_patch_moves_no_index_key_and_a_state_patch_only_the_state_keys(backend: Backend) -> None:
    """Job names the status fields its index entries read (``INDEXED_STATUS``): a patch of
    the conditions alone writes the object and no index key; a state step moves the state
    keys and nothing else. What stays is what a full re-index gives."""
    reg, ns = backend.registry, backend.namespace
    job = _preprocessed(backend, "p4")
    before = {kv.key for kv in reg.store.range("/index/jobs/").kvs if kv.key.endswith("/p4")}
    waiting = Condition(type="Waiting", status="True", reason="WaitingForCapacity", message="no room")
    rev = reg.write_status_patches([(job, {"conditions": [waiting]})])
    entries = [kv for kv in reg.store.range("/index/jobs/").kvs if kv.key.endswith("/p4")]
    assert entries and all(kv.mod_revision < rev for kv in entries)  # none rewritten
    got = reg.get(Job, "p4", ns)
    assert {kv.key for kv in reg.store.range("/index/jobs/").kvs if kv.key.endswith("/p4")} == before == index_keys(got)
    reg.write_status_patches([(got, {"state": JobState.RUNNING})])
    running = reg.get(Job, "p4", ns)
    assert {kv.key for kv in reg.store.range("/index/jobs/").kvs if kv.key.endswith("/p4")} == index_keys(running)
    assert reg.index_names(Job, "state", "RUNNING", ns) == ["p4"]
    assert reg.index_names(Job, "state", "PREPROCESSED", ns) == []


def test_the_written_objects_carry_their_revision_and_share_no_metadata_with_the_cached_ones(
        backend: Backend) -> None:
    reg, ns = backend.registry, backend.namespace
    a, b = _preprocessed(backend, "p5"), _preprocessed(backend, "p6")
    rv_a = a.metadata.resource_version
    placement = Placement(nodes=["n1"], cpus=[0], gpus=[], occupancy=1.0)
    written: list[Job] = []
    rev = reg.write_status_patches([(a, {"placement": placement}), (b, {"placement": placement})], written=written)
    assert [w.name for w in written] == ["p5", "p6"]
    for w, old in zip(written, (a, b), strict=True):
        assert w.metadata.resource_version == str(rev) and w.metadata is not old.metadata
        assert w == reg.get(Job, old.name, ns)
    assert a.metadata.resource_version == rv_a and a.status.placement is None  # the cached one untouched
