"""``balsamctl operator``: a kopf operator that mirrors balsam.io/v1 custom resources from a
Kubernetes cluster into the store, so ``kubectl apply -f job.yaml`` runs the job on the site.

* **Spec flows in.** Create, update and resume (every CR the operator finds when it starts)
  all run one idempotent sync: build the store object from the CR (apiVersion, kind, name,
  labels, annotations minus kubectl's and kopf's bookkeeping, spec), validate it as ``apply``
  would, and write it with a CAS: create when absent, else replace spec, labels and
  annotations, keeping the store's status. An unchanged object is not written, so a restart
  of the operator writes nothing and never duplicates a job (names are the CRs' names).
* **Status flows back.** For the kinds with a status the store owns (Job, BatchJob), a timer
  per CR copies the store object's status to the CR's status subresource when it differs.
  The CR's ``status.conditions`` also carries the operator's own ``Synced`` condition: True,
  or False with the reason (``Invalid`` spec, ``Waiting`` for an App or parent, ``Refused``
  by admission such as a resource edit of a RUNNING job, ``NotOwned`` store object,
  ``Missing`` from the store).
* **Deletion goes through a finalizer** (``balsam.io/store-mirror``). The delete handler
  removes the store object (CAS) when it is the one this CR made (annotation
  ``balsam.io/k8s-uid``); an object that is already gone is fine. The finalizer is always
  released: when the store stays unreachable, after a bounded number of retries too, so a
  CR never hangs in Terminating.

Store objects the operator did not make (no ``balsam.io/k8s-uid`` annotation, or another CR's
uid) are never changed or deleted by it: the CR reports ``Synced=False, NotOwned``.

kopf keeps its own bookkeeping in annotations under ``operator.balsam.io/`` (never in the
status, which is the store's), and no other state: everything is rebuilt from the cluster and
the store when it starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf

from apis import (
    API_VERSION,
    AlreadyExists,
    ApiError,
    App,
    BatchJob,
    Conflict,
    Invalid,
    Job,
    NotFound,
    Registry,
    Resource,
    Site,
    StoreUnavailable,
    parse_object,
)

from .merge import three_way_patch

GROUP, VERSION = API_VERSION.split("/")
FINALIZER = "balsam.io/store-mirror"
UID_ANNOTATION = "balsam.io/k8s-uid"
BOOKKEEPING_PREFIX = "operator.balsam.io"
SYNCED = "Synced"
#: Annotations that belong to Kubernetes tooling, not to the object: never copied into the store.
DROPPED_ANNOTATION_PREFIXES = (f"{BOOKKEEPING_PREFIX}/", "kopf.zalando.org/", "kubectl.kubernetes.io/")

#: The kinds users write (Node and TransferTask are made by agents and controllers).
MIRRORED: tuple[type[Resource], ...] = (App, Site, Job, BatchJob)
#: The kinds whose status the store owns and the CRs show.
STATUS_KINDS: tuple[type[Resource], ...] = (Job, BatchJob)

DELETE_RETRIES = 20  # then the finalizer is released anyway (never a CR stuck in Terminating)
DELETE_BACKOFF = 3.0
WAIT_DELAY = 2.0  # retry delay while a Job waits for its App or parents

log = logging.getLogger("balsamctl.operator")


def plain(x: Any) -> Any:
    """kopf's body views → plain dicts and lists."""
    if isinstance(x, Mapping):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    return x


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def condition(status: str, reason: str, message: str, previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``Synced`` condition; ``lastTransitionTime`` moves only when ``status`` flips."""
    if previous and previous.get("status") == status and previous.get("lastTransitionTime"):
        ltt = previous["lastTransitionTime"]
    else:
        ltt = now_iso()
    return {"type": SYNCED, "status": status, "reason": reason, "message": message, "lastTransitionTime": ltt}


def synced_of(cr_status: Mapping[str, Any] | None) -> dict[str, Any] | None:
    for c in (cr_status or {}).get("conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == SYNCED:
            return dict(c)
    return None


def status_for(obj: Resource | None, synced: dict[str, Any] | None) -> dict[str, Any]:
    """The CR status: the store object's status (for the kinds that have one) plus ``Synced``."""
    st: dict[str, Any] = {}
    if obj is not None and isinstance(obj, STATUS_KINDS):
        st = obj.to_dict().get("status") or {}
    conds = [c for c in st.get("conditions") or [] if c.get("type") != SYNCED]
    if synced is not None:
        conds.append(synced)
    if conds:
        st["conditions"] = conds
    return st


def status_patch(have: Mapping[str, Any] | None, want: dict[str, Any]) -> dict[str, Any]:
    """A merge patch taking the CR's status ``have`` to ``want`` (removed keys → None)."""
    have_d = plain(have or {})
    return three_way_patch(have_d, want, have_d)


@dataclass
class Mirror:
    """The store side of the operator: sync, delete and read back, with CAS and retries.

    ``store_namespace``: put every CR's object into this store namespace (else the CR's own
    namespace name is used)."""

    registry: Registry
    store_namespace: str | None = None

    def namespace_for(self, cr_namespace: str | None) -> str:
        return self.store_namespace or cr_namespace or "default"

    def desired(self, kind: type[Resource], body: Mapping[str, Any]) -> Resource:
        """The store object a CR asks for. Raises Invalid (the spec is not acceptable)."""
        meta = plain(body.get("metadata") or {})
        ann = {k: v for k, v in (meta.get("annotations") or {}).items()
               if not str(k).startswith(DROPPED_ANNOTATION_PREFIXES)}
        uid = meta.get("uid")
        if uid:
            ann[UID_ANNOTATION] = str(uid)
        md: dict[str, Any] = {"name": meta.get("name"), "namespace": self.namespace_for(meta.get("namespace"))}
        if meta.get("labels"):
            md["labels"] = meta["labels"]
        if ann:
            md["annotations"] = ann
        doc = {"apiVersion": API_VERSION, "kind": kind.KIND, "metadata": md, "spec": plain(body.get("spec") or {})}
        return parse_object(doc, [kind])

    @staticmethod
    def owned_by(obj: Resource, uid: str | None) -> bool:
        mine = obj.metadata.annotations.get(UID_ANNOTATION)
        return mine is not None and (not uid or mine == uid)

    def _missing_references(self, obj: Resource) -> list[str]:
        if not isinstance(obj, Job):
            return []
        ns = obj.namespace
        out = [] if self.registry.try_get(App, obj.spec.app, ns) else [f'App "{obj.spec.app}"']
        parents = self.registry.get_many(Job, obj.spec.parents, ns) if obj.spec.parents else []
        out += [f'parent Job "{p}"' for p, o in zip(obj.spec.parents, parents, strict=True) if o is None]
        return out

    def sync(self, kind: type[Resource], body: Mapping[str, Any]) -> tuple[Resource | None, dict[str, Any]]:
        """Create or update the store object; returns (object or None, Synced condition
        fields without ``lastTransitionTime``). Raises kopf.TemporaryError to retry."""
        try:
            want = self.desired(kind, body)
        except ApiError as e:
            return None, {"status": "False", "reason": "Invalid", "message": str(e)}
        uid = (body.get("metadata") or {}).get("uid")
        for _ in range(10):
            cur = self.registry.try_get(kind, want.name, want.namespace)
            if cur is None:
                missing = self._missing_references(want)
                if missing:
                    raise_waiting = f"waiting for {', '.join(missing)} in namespace {want.namespace}"
                    return None, {"status": "False", "reason": "Waiting", "message": raise_waiting}
                try:
                    return self.registry.create(want), {"status": "True", "reason": "Synced", "message": ""}
                except AlreadyExists:
                    continue
                except Invalid as e:
                    return None, {"status": "False", "reason": "Refused", "message": str(e)}
            if not self.owned_by(cur, uid):
                return cur, {"status": "False", "reason": "NotOwned",
                             "message": f'{cur.resource_name()} "{cur.name}" exists in store namespace '
                                        f'"{cur.namespace}" and was not made from this resource; left alone'}
            new = cur.model_copy(update={"spec": want.spec})  # type: ignore[attr-defined]
            new.metadata = cur.metadata.model_copy(
                update={"labels": dict(want.metadata.labels), "annotations": dict(want.metadata.annotations)})
            if (getattr(new, "spec", None) == getattr(cur, "spec", None)
                    and new.metadata.labels == cur.metadata.labels
                    and new.metadata.annotations == cur.metadata.annotations):
                return cur, {"status": "True", "reason": "Synced", "message": ""}
            try:
                return self.registry.update(cur, new), {"status": "True", "reason": "Synced", "message": ""}
            except (Conflict, NotFound):
                continue
            except Invalid as e:
                return cur, {"status": "False", "reason": "Refused", "message": str(e)}
        raise kopf.TemporaryError("the store object kept changing; retrying", delay=1)

    def delete(self, kind: type[Resource], body: Mapping[str, Any]) -> str:
        """Delete the store object this CR made; what happened, in words."""
        meta = body.get("metadata") or {}
        name, ns = meta.get("name"), self.namespace_for(meta.get("namespace"))
        for _ in range(10):
            cur = self.registry.try_get(kind, name, ns)
            if cur is None:
                return "already gone from the store"
            if not self.owned_by(cur, meta.get("uid")):
                return "not made from this resource: left in the store"
            try:
                self.registry.write(deletes=[cur])
                return "deleted from the store"
            except (Conflict, NotFound):
                continue
        raise kopf.TemporaryError("the store object kept changing; retrying", delay=1)

    def read(self, kind: type[Resource], body: Mapping[str, Any]) -> Resource | None:
        meta = body.get("metadata") or {}
        return self.registry.try_get(kind, meta.get("name"), self.namespace_for(meta.get("namespace")))


def _set_status(patch: Any, have: Mapping[str, Any] | None, want: dict[str, Any]) -> None:
    for k, v in status_patch(have, want).items():
        patch.status[k] = v


def register_handlers(registry: kopf.OperatorRegistry, mirror: Mirror, *, status_interval: float = 2.0) -> None:
    """The sync, delete and status handlers for every mirrored kind, on ``registry``."""
    for kind in MIRRORED:
        _register_kind(registry, mirror, kind, status_interval)


def _register_kind(registry: kopf.OperatorRegistry, mirror: Mirror, kind: type[Resource],
                   status_interval: float) -> None:
    plural = kind.PLURAL

    def sync(*, body: Any, status: Any, patch: Any, logger: Any, **_: Any) -> None:
        try:
            obj, cond = mirror.sync(kind, body)
        except StoreUnavailable as e:
            raise kopf.TemporaryError(f"store unavailable: {e}", delay=5) from None
        previous = synced_of(status)
        synced = condition(cond["status"], cond["reason"], cond["message"], previous)
        _set_status(patch, status, status_for(obj, synced))
        if cond["reason"] == "Waiting":
            logger.info(cond["message"])
            raise kopf.TemporaryError(cond["message"], delay=WAIT_DELAY)
        if cond["status"] != "True":
            logger.warning(f"{kind.KIND} {body['metadata'].get('name')}: {cond['reason']}: {cond['message']}")

    def delete(*, body: Any, logger: Any, retry: int, **_: Any) -> None:
        try:
            what = mirror.delete(kind, body)
        except StoreUnavailable as e:
            if retry + 1 >= DELETE_RETRIES:
                logger.error(f"store unavailable ({e}); releasing the finalizer, the store object may remain")
                return
            raise kopf.TemporaryError(f"store unavailable: {e}", delay=DELETE_BACKOFF) from None
        except kopf.TemporaryError:
            raise
        except Exception as e:  # noqa: BLE001 - never hold a CR in Terminating for an unexpected error
            logger.error(f"deleting the store object failed ({e}); releasing the finalizer")
            return
        logger.info(what)

    async def push_status(*, body: Any, status: Any, patch: Any, **_: Any) -> None:
        # async (the store read in a worker thread): a sync timer handler holds kopf's exit
        # for 5 s while its executor call is pending; an awaited thread is cancelled at once.
        try:
            obj = await asyncio.to_thread(mirror.read, kind, body)
        except StoreUnavailable:
            return  # try again at the next tick
        previous = synced_of(status)
        if obj is None:
            if previous is not None and previous.get("status") == "True":
                synced = condition("False", "Missing", "the store holds no such object (deleted outside "
                                   "Kubernetes?); change this resource or re-create it to run it again", previous)
                _set_status(patch, status, status_for(None, synced))
            return
        if previous is None or not mirror.owned_by(obj, (body.get("metadata") or {}).get("uid")):
            return  # not synced yet (the sync handler writes the first status), or NotOwned
        _set_status(patch, status, status_for(obj, previous))

    on: dict[str, Any] = {"registry": registry}
    fns: list[Callable[..., Any]] = [
        kopf.on.resume(GROUP, VERSION, plural, id="sync", **on),
        kopf.on.create(GROUP, VERSION, plural, id="sync", **on),
        kopf.on.update(GROUP, VERSION, plural, id="sync", **on),
    ]
    for deco in fns:
        deco(sync)
    kopf.on.delete(GROUP, VERSION, plural, id="delete", retries=DELETE_RETRIES, backoff=DELETE_BACKOFF,
                   **on)(delete)
    if kind in STATUS_KINDS:
        kopf.timer(GROUP, VERSION, plural, id="status", interval=status_interval, initial_delay=0,
                   **on)(push_status)


def settings(*, events: bool = True) -> kopf.OperatorSettings:
    """kopf settings: our finalizer, bookkeeping in annotations (status is the store's)."""
    s = kopf.OperatorSettings()
    s.persistence.finalizer = FINALIZER
    s.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=BOOKKEEPING_PREFIX)
    s.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=BOOKKEEPING_PREFIX)
    s.peering.standalone = True  # one operator per store; no KopfPeering CRDs needed
    s.posting.enabled = events
    return s


def build_registry(mirror: Mirror, *, server: str | None = None, status_interval: float = 2.0,
                   insecure: bool = False) -> kopf.OperatorRegistry:
    """A kopf registry with the mirror's handlers and a login: ``server`` when given (tests,
    ``kubectl proxy``), else kopf's usual ones (in-cluster service account, kubeconfig, or the
    kubernetes/pykube client when installed)."""
    if server is None:
        from kopf._core.intents.registries import SmartOperatorRegistry

        registry: kopf.OperatorRegistry = SmartOperatorRegistry()
    else:
        registry = kopf.OperatorRegistry()

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=server, insecure=insecure)

    register_handlers(registry, mirror, status_interval=status_interval)
    return registry
