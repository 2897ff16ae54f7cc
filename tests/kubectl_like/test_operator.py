"""``balsamctl operator`` (kopf) against kmock's Kubernetes emulator, on both store backends:
create, spec update, status write-back, delete through the finalizer (also when the store
object is already gone), refusals reported in the CR, and a restart that writes nothing and
duplicates nothing. Recipe: ../shared/recipes/kopf-kmock-globus.md part A (its gotchas are
noted where they matter)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import kmock as km
import kopf
import pytest

import store as st
from apis import App, Job, JobState, Registry
from kubectl_like import operator as op
from tests._deadline import DEADLINE

VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}
CRDS = "apiextensions.k8s.io/v1/customresourcedefinitions"
RES = {k.KIND: f"balsam.io/v1/{k.PLURAL}" for k in op.MIRRORED}


@pytest.fixture(params=["sqlite", pytest.param("etcd", marks=pytest.mark.etcd)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Registry, str]]:
    """A registry on each store, and a namespace of the test's own (one etcd serves the session)."""
    if request.param == "sqlite":
        url, ns = f"sqlite:///{tmp_path / 'store.db'}", "default"
    else:
        url, ns = request.getfixturevalue("etcd_url"), f"t-{uuid.uuid4().hex[:12]}"
    s = st.open_store(url)
    try:
        yield Registry(s), ns
    finally:
        s.close()


def register_crds(kmock: Any) -> None:
    # Gotcha 3: v1/namespaces must be discoverable even clusterwide. Gotcha 4: kopf reads only
    # kmock.resources; `subresources={'status'}` makes it PATCH .../status.
    kmock.resources["v1/namespaces"] = km.ResourceInfo(kind="Namespace", namespaced=False, verbs=VERBS)
    kmock.resources[CRDS] = km.ResourceInfo(kind="CustomResourceDefinition", namespaced=False, verbs=VERBS)
    for kind in op.MIRRORED:
        kmock.resources[RES[kind.KIND]] = km.ResourceInfo(kind=kind.KIND, singular=kind.SINGULAR, namespaced=True,
                                                          verbs=VERBS, subresources={"status"})


class RecordingMirror(op.Mirror):
    """The real Mirror, noting the name of every CR its sync handler finished with: the
    positive signal that the operator looked at a CR (for "nothing is written" checks)."""

    def __init__(self, registry: Registry) -> None:
        super().__init__(registry)
        self.synced: list[str] = []

    def sync(self, kind: Any, body: Any) -> Any:
        out = super().sync(kind, body)
        self.synced.append(str((body.get("metadata") or {}).get("name")))
        return out


@contextlib.asynccontextmanager
async def running_operator(kmock: Any, reg: Registry, mirror: op.Mirror | None = None) -> AsyncIterator[None]:
    """Start kopf inside the test body (gotcha 1), after kmock's keep-alive connection is open
    (gotcha 2); standalone, no events (gotcha 6)."""
    settings = op.settings(events=False)
    registry = op.build_registry(mirror or op.Mirror(reg), server=str(kmock.url), status_interval=0.1)
    await kmock.get("/version")
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(kopf.operator(registry=registry, settings=settings, clusterwide=True,
                                             stop_flag=stop, ready_flag=ready))
    await asyncio.wait_for(ready.wait(), DEADLINE)
    try:
        yield
    finally:
        # kopf 1.45 orphans a timer spawned just before the stop (it then waits 5 s for the
        # "hung" task): let the timers of freshly created CRs settle first.
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(task, DEADLINE)


async def wait_for(predicate: Callable[[], Any], timeout: float = DEADLINE, what: str = "") -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what or predicate}") from None


def cr(kind: str, name: str, ns: str, spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    # Gotcha 5: kmock adds no uid, resourceVersion or namespace: set them.
    return {"apiVersion": "balsam.io/v1", "kind": kind, "spec": spec,
            "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}-{uuid.uuid4().hex[:6]}",
                         "resourceVersion": "1", **meta}}


def url(kind: str, ns: str, name: str = "", status: bool = False) -> str:
    plural = RES[kind].rsplit("/", 1)[1]
    u = f"/apis/balsam.io/v1/namespaces/{ns}/{plural}"
    return u + (f"/{name}" if name else "") + ("/status" if status else "")


def live(kmock: Any, kind: str, ns: str, name: str) -> dict[str, Any] | None:
    try:
        obj = kmock.objects[RES[kind], ns, name]
    except KeyError:
        return None
    if obj.deleted:
        return None
    return dict(obj.history.last.raw) if obj.history else None


def synced(body: dict[str, Any] | None) -> dict[str, Any]:
    for c in ((body or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == op.SYNCED:
            return dict(c)
    return {}


async def post(kmock: Any, body: dict[str, Any]) -> None:
    meta = body["metadata"]
    r = await kmock.post(url(body["kind"], meta["namespace"]), json=body)
    assert r.status == 200, await r.text()


async def patch(kmock: Any, kind: str, ns: str, name: str, changes: dict[str, Any]) -> None:
    r = await kmock.patch(url(kind, ns, name), json=changes, headers={"Content-Type": "application/merge-patch+json"})
    assert r.status == 200, await r.text()


HELLO = {"command": "echo hello {{ name }}", "parameters": {"name": {"required": True}}}


@pytest.mark.asyncio
async def test_create_update_status_delete(kmock: Any, backend: tuple[Registry, str]) -> None:
    reg, ns = backend
    register_crds(kmock)
    async with running_operator(kmock, reg):
        await post(kmock, cr("App", "hello", ns, HELLO))
        job = cr("Job", "j1", ns, {"app": "hello", "workdir": "k8s/j1", "parameters": {"name": 5}},
                 labels={"team": "a"}, annotations={"kubectl.kubernetes.io/last-applied-configuration": "{}"})
        await post(kmock, job)
        await wait_for(lambda: reg.try_get(Job, "j1", ns) is not None, what="job in the store")
        j = reg.get(Job, "j1", ns)
        assert j.spec.parameters == {"name": "5"} and j.metadata.labels == {"team": "a"}
        assert j.metadata.annotations == {op.UID_ANNOTATION: job["metadata"]["uid"]}  # no kubectl/kopf keys
        # Status flows back: the store's state and the operator's Synced condition.
        await wait_for(lambda: (live(kmock, "Job", ns, "j1") or {}).get("status", {}).get("state") == "CREATED",
                       what="status CREATED on the CR")
        assert synced(live(kmock, "Job", ns, "j1"))["status"] == "True"
        # kopf's finalizer is ours, and its bookkeeping stays out of the status.
        assert op.FINALIZER in live(kmock, "Job", ns, "j1")["metadata"]["finalizers"]  # type: ignore[index]
        assert "kopf" not in live(kmock, "Job", ns, "j1")["status"]  # type: ignore[index]

        # Spec update flows in.
        await patch(kmock, "Job", ns, "j1", {"spec": {"priority": 4, "resources": {"numNodes": 2}}})
        await wait_for(lambda: reg.get(Job, "j1", ns).spec.priority == 4, what="priority 4 in the store")
        assert reg.get(Job, "j1", ns).spec.resources.num_nodes == 2

        # A controller moves the job: the CR shows it.
        reg.mutate(Job, "j1", lambda x: setattr(x.status, "state", JobState.RUNNING), ns)
        await wait_for(lambda: live(kmock, "Job", ns, "j1")["status"]["state"] == "RUNNING",  # type: ignore[index]
                       what="status RUNNING on the CR")
        # Status writes went to the status subresource.
        assert any(r.method == "PATCH" and r.subresource == "status" and r.name == "j1" for r in kmock)

        # A resource edit of the RUNNING job is refused by admission: reported, store unchanged.
        await patch(kmock, "Job", ns, "j1", {"spec": {"resources": {"numNodes": 8}}})
        await wait_for(lambda: synced(live(kmock, "Job", ns, "j1")).get("reason") == "Refused", what="Refused")
        cond = synced(live(kmock, "Job", ns, "j1"))
        assert cond["status"] == "False" and "spec.resources.numNodes: Forbidden" in cond["message"]
        assert "RUNNING" in cond["message"]
        assert reg.get(Job, "j1", ns).spec.resources.num_nodes == 2
        # Priority is always editable; the refusal clears once the spec is acceptable again.
        await patch(kmock, "Job", ns, "j1", {"spec": {"priority": 9, "resources": {"numNodes": 2}}})
        await wait_for(lambda: reg.get(Job, "j1", ns).spec.priority == 9, what="priority 9")
        await wait_for(lambda: synced(live(kmock, "Job", ns, "j1")).get("status") == "True", what="Synced again")

        # Delete: through the finalizer, the store object goes, then the CR.
        r = await kmock.delete(url("Job", ns, "j1"))
        assert r.status == 200
        await wait_for(lambda: live(kmock, "Job", ns, "j1") is None, what="CR gone")
        assert reg.try_get(Job, "j1", ns) is None
        assert reg.try_get(App, "hello", ns) is not None


@pytest.mark.asyncio
async def test_finalizer_released_when_store_object_is_gone(kmock: Any, backend: tuple[Registry, str]) -> None:
    reg, ns = backend
    register_crds(kmock)
    async with running_operator(kmock, reg):
        await post(kmock, cr("App", "hello", ns, HELLO))
        await wait_for(lambda: reg.try_get(App, "hello", ns) is not None)
        await wait_for(lambda: op.FINALIZER in (live(kmock, "App", ns, "hello") or {}).get("metadata", {}).get(
            "finalizers", []), what="finalizer added")
        reg.delete(App, "hello", ns)  # someone removed it from the store first
        r = await kmock.delete(url("App", ns, "hello"))
        assert r.status == 200
        await wait_for(lambda: live(kmock, "App", ns, "hello") is None, what="CR released")


@pytest.mark.asyncio
async def test_invalid_spec_and_waiting_for_app(kmock: Any, backend: tuple[Registry, str]) -> None:
    reg, ns = backend
    register_crds(kmock)
    async with running_operator(kmock, reg):
        # Invalid: nothing in the store, the reason on the CR; fixed: created.
        await post(kmock, cr("Job", "bad", ns, {"app": "hello", "workdir": "/etc", "parameters": {"name": "x"}}))
        await wait_for(lambda: synced(live(kmock, "Job", ns, "bad")).get("reason") == "Invalid", what="Invalid")
        assert "spec.workdir" in synced(live(kmock, "Job", ns, "bad"))["message"]
        # A job whose App does not exist yet waits for it (retried), then runs.
        await patch(kmock, "Job", ns, "bad", {"spec": {"workdir": "ok/1"}})
        await wait_for(lambda: synced(live(kmock, "Job", ns, "bad")).get("reason") == "Waiting", what="Waiting")
        assert 'App "hello"' in synced(live(kmock, "Job", ns, "bad"))["message"]
        assert reg.try_get(Job, "bad", ns) is None
        await post(kmock, cr("App", "hello", ns, HELLO))
        await wait_for(lambda: reg.try_get(Job, "bad", ns) is not None, what="job created after App")
        assert reg.get(Job, "bad", ns).spec.workdir == "ok/1"


@pytest.mark.asyncio
async def test_store_object_not_made_by_operator_is_left_alone(kmock: Any, backend: tuple[Registry, str]) -> None:
    reg, ns = backend
    register_crds(kmock)
    reg.create(App.model_validate({"metadata": {"name": "mine", "namespace": ns}, "spec": {"command": "true"}}))
    async with running_operator(kmock, reg):
        await post(kmock, cr("App", "mine", ns, {"command": "rm -rf /"}))
        await wait_for(lambda: synced(live(kmock, "App", ns, "mine")).get("reason") == "NotOwned", what="NotOwned")
        assert reg.get(App, "mine", ns).spec.command == "true"
        await kmock.delete(url("App", ns, "mine"))
        await wait_for(lambda: live(kmock, "App", ns, "mine") is None, what="CR released")
        assert reg.get(App, "mine", ns).spec.command == "true"  # never deleted


@pytest.mark.asyncio
async def test_restart_resumes_without_writes_or_duplicates(kmock: Any, backend: tuple[Registry, str]) -> None:
    reg, ns = backend
    register_crds(kmock)
    async with running_operator(kmock, reg):
        await post(kmock, cr("App", "hello", ns, HELLO))
        for i in range(3):
            await post(kmock, cr("Job", f"r{i}", ns, {"app": "hello", "workdir": f"r/{i}",
                                                       "parameters": {"name": str(i)}}))
        await wait_for(lambda: len(reg.names(Job, ns)) == 3, what="three jobs")
        await wait_for(lambda: all(synced(live(kmock, "Job", ns, f"r{i}")).get("status") == "True"
                                   for i in range(3)), what="all synced")
    uids = {n: reg.get(Job, n, ns).metadata.uid for n in reg.names(Job, ns)}
    rev = reg.store.current_revision()
    # Restarted: on.resume runs the sync for every CR; nothing changed, so nothing is written.
    mirror = RecordingMirror(reg)
    async with running_operator(kmock, reg, mirror):
        await wait_for(lambda: {"r0", "r1", "r2"} <= set(mirror.synced),
                       what="the resume sync of every Job CR")
        assert reg.store.current_revision() == rev
        assert {n: reg.get(Job, n, ns).metadata.uid for n in reg.names(Job, ns)} == uids
        # And it still works after the restart.
        await patch(kmock, "Job", ns, "r1", {"spec": {"priority": 2}})
        await wait_for(lambda: reg.get(Job, "r1", ns).spec.priority == 2, what="update after restart")
        reg.mutate(Job, "r2", lambda x: setattr(x.status, "state", JobState.FAILED), ns)
        await wait_for(lambda: live(kmock, "Job", ns, "r2")["status"]["state"] == "FAILED",  # type: ignore[index]
                       what="status after restart")
    assert sorted(reg.names(Job, ns)) == ["r0", "r1", "r2"]


def test_status_patch_removes_keys_and_keeps_synced() -> None:
    have = {"state": "RUNNING", "placement": {"nodes": ["n1"]}, "conditions": [{"type": "Synced", "status": "True"}]}
    want = {"state": "RUN_DONE", "conditions": [{"type": "Synced", "status": "True"}]}
    assert op.status_patch(have, want) == {"state": "RUN_DONE", "placement": None}
