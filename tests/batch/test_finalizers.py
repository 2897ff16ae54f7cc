"""Finalizers (Kubernetes' contract, used by BatchJobs): deleting an object that has some only
sets ``deletionTimestamp``; removing the last one deletes it. Objects without any are deleted
at once, as before."""

from __future__ import annotations

from apis import BatchJob, Registry


def test_delete_with_a_finalizer_marks_and_removing_it_deletes(registry: Registry) -> None:
    bj = registry.create(BatchJob(metadata={"name": "b", "finalizers": ["x.io/f"]}))  # type: ignore[arg-type]
    registry.delete(BatchJob, "b")
    marked = registry.get(BatchJob, "b")
    assert marked.metadata.deletion_timestamp is not None and marked.metadata.finalizers == ["x.io/f"]
    assert int(marked.metadata.resource_version or 0) > int(bj.metadata.resource_version or 0)
    registry.delete(BatchJob, "b")  # deleting again changes nothing
    assert registry.get(BatchJob, "b").metadata.resource_version == marked.metadata.resource_version

    # An update may not undo the deletion; a status write keeps it marked.
    def edit(b: BatchJob) -> None:
        b.metadata.deletion_timestamp = None
        b.status.message = "cancelling"

    kept = registry.mutate(BatchJob, "b", edit)
    assert kept.metadata.deletion_timestamp == marked.metadata.deletion_timestamp

    def drop(b: BatchJob) -> None:
        b.metadata.finalizers = []

    cur = registry.get(BatchJob, "b")
    new = cur.model_copy(deep=True)
    drop(new)
    _, updated = registry.write(updates=[(cur, new)])
    assert updated == [] and registry.try_get(BatchJob, "b") is None


def test_an_update_that_removes_the_last_finalizer_deletes_and_answers_with_the_object(
        registry: Registry) -> None:
    # up's removal of a stale BatchJob died with IndexError here (update_many returns only the
    # objects still stored).
    registry.create(BatchJob(metadata={"name": "b", "finalizers": ["x.io/f"]}))  # type: ignore[arg-type]
    registry.delete(BatchJob, "b")
    cur = registry.get(BatchJob, "b")
    new = cur.model_copy(deep=True)
    new.metadata.finalizers = []
    assert registry.update(cur, new).metadata.finalizers == []
    assert registry.try_get(BatchJob, "b") is None


def test_delete_without_finalizers_is_immediate(registry: Registry) -> None:
    registry.create(BatchJob(metadata={"name": "plain"}))  # type: ignore[arg-type]
    registry.delete(BatchJob, "plain")
    assert registry.try_get(BatchJob, "plain") is None
