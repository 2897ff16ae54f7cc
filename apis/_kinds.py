"""The resource kinds: Job, App, Site, BatchJob, Node, TransferTask (ARCHITECTURE.md §2).

YAML and JSON use camelCase (``nodePackingCount``); Python uses snake_case. ``Job`` also
accepts Balsam's constructor names (``app_id``, ``workdir``, ``tags``, ``num_nodes``, ...)
and exposes them as attributes — see ``_balsam.py``.
"""

from __future__ import annotations

import enum
import math
import posixpath
from collections.abc import Hashable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, cast

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from ._balsam import BalsamJobMixin
from ._codec import shallow_copy
from ._context import ClientMixin
from ._errors import BadRequest
from ._lifecycle import HISTORY_CAP, HistoryEvent
from ._locations import check_location
from ._meta import API_VERSION, Condition, Model, Reference, Resource
from ._states import JobState
from ._windows import CLAIMABLE_STATES, claim_order

__all__ = ["HISTORY_CAP", "HistoryEvent"]  # re-exported: defined with the lifecycle

#: Job states in which a placed job holds its node(s): bound and waiting to start, or running.
_HOLDS_NODE = frozenset({JobState.PREPROCESSED, JobState.RESTART_READY, JobState.RUNNING})



# --- Job -------------------------------------------------------------------------


class JobResources(Model):
    num_nodes: int = Field(1, ge=1)
    ranks_per_node: int = Field(1, ge=1)
    threads_per_rank: int = Field(1, ge=1)
    threads_per_core: int = Field(1, ge=1)
    gpus_per_rank: float = Field(0, ge=0)
    node_packing_count: int = Field(1, ge=1)
    launch_params: dict[str, str] = Field(default_factory=dict)
    wall_time_min: float = Field(0, ge=0)

    @property
    def cpus_per_node(self) -> int:
        """Seed: ``ranks_per_node * threads_per_rank // threads_per_core`` (at least one)."""
        return max(1, self.ranks_per_node * self.threads_per_rank // self.threads_per_core)

    @property
    def gpus_per_node(self) -> int:
        """Seed: ``ranks_per_node * gpus_per_rank`` whole devices (fractions round up; a
        tolerance keeps float noise such as ``100 * 0.07`` from adding a device)."""
        g = self.ranks_per_node * self.gpus_per_rank
        return max(0, math.ceil(g - 1e-9)) if g > 0 else 0


class RetryPolicy(Model):
    limit: int = Field(3, ge=0)
    on_exit_codes: list[int] | None = None  # None: any non-zero exit code is retried
    backoff_seconds: float = Field(0, ge=0)


def validate_workdir(v: str) -> str:
    if not v:
        raise ValueError("spec.workdir: Required value")
    if v.startswith("/"):
        raise ValueError(f'spec.workdir: Invalid value: "{v}": must be relative to the site\'s data/ directory')
    norm = posixpath.normpath(v)
    if norm == ".." or norm.startswith("../") or "\x00" in v:
        raise ValueError(f'spec.workdir: Invalid value: "{v}": must stay inside the site\'s data/ directory')
    return norm


class TransferDirection(enum.StrEnum):
    """Which way a transfer slot copies (Balsam's ``TransferDirection``)."""

    stage_in = "in"
    stage_out = "out"


class JobMode(enum.StrEnum):
    """How a BatchJob's launcher packs jobs (Balsam's ``JobMode``)."""

    serial = "serial"
    mpi = "mpi"


class JobTransferItem(Model):
    """A job's value for one transfer slot (Balsam's ``JobTransferItem``): a Site's location
    alias and an absolute path there; stored as ``"alias:/path"`` in ``spec.transfers``."""

    location_alias: str
    path: str

    @field_validator("path", mode="before")
    @classmethod
    def _absolute(cls, v: Any) -> str:
        v = str(v)
        if not v.startswith("/"):
            raise ValueError(f'path "{v}" must be absolute')
        return v

    def __str__(self) -> str:
        return f"{self.location_alias}:{self.path}"


class BatchJobPartition(Model):
    """A share of an allocation (Balsam's ``BatchJobPartition``): ``num_nodes`` nodes launching the
    jobs whose tags match ``filter_tags`` in ``job_mode``."""

    job_mode: JobMode
    num_nodes: int = Field(ge=1)
    filter_tags: dict[str, str] = Field(default_factory=dict)


class JobSpec(Model):
    app: str
    site: str | None = None
    workdir: str
    parameters: dict[str, str] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)
    resources: JobResources = Field(default_factory=JobResources)  # type: ignore[arg-type]  # no pydantic mypy plugin
    parents: list[str] = Field(default_factory=list)
    transfers: dict[str, str] = Field(default_factory=dict)
    priority: int = 0
    retry: RetryPolicy | None = None
    on_parent_failure: Literal["Wait", "Fail"] = "Wait"
    suspend: bool = False

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, v: str) -> str:
        return validate_workdir(v)

    @field_validator("parameters", mode="before")
    @classmethod
    def _params(cls, v: Any) -> Any:
        # Template values are strings on the command line; accept numbers as Balsam does.
        if isinstance(v, dict):
            return {str(k): ("" if x is None else x if isinstance(x, str) else str(x)) for k, x in v.items()}
        return v

    @field_validator("transfers", mode="before")
    @classmethod
    def _transfer_items(cls, v: Any) -> Any:
        # Balsam's JobTransferItem (or its dict) becomes our "alias:/path" string.
        if isinstance(v, dict):
            return {k: (str(x) if isinstance(x, JobTransferItem)
                        else str(JobTransferItem.model_validate(x)) if isinstance(x, dict) else x)
                    for k, x in v.items()}
        return v

    @field_validator("transfers")
    @classmethod
    def _transfers(cls, v: dict[str, str]) -> dict[str, str]:
        for slot, loc in v.items():
            alias, sep, path = loc.partition(":")
            if not sep or not alias or not path.startswith("/"):
                raise ValueError(
                    f'spec.transfers.{slot}: Invalid value: "{loc}": expected "alias:/absolute/path"'
                )
        return v


class Placement(Model):
    batch_job: str | None = None
    nodes: list[str] = Field(default_factory=list)
    cpus: list[int] = Field(default_factory=list)  # CPU ids on each node (same ids on every node)
    gpus: list[int] = Field(default_factory=list)  # GPU ids on each node
    occupancy: float = 0.0  # 1/nodePackingCount, kept so release is exact


class JobStatus(Model):
    state: JobState = JobState.CREATED
    return_code: int | None = None
    message: str = ""
    placement: Placement | None = None
    attempts: int = 0
    output_tail: str | None = None
    result: Any = None  # run()'s return value (apis/_pycodec.py: inline, pickled or a file)
    exception: str | None = None  # "Type: message" of the exception run() raised
    exception_data: str | None = None  # that exception, pickled (base64), for result() to re-raise
    conditions: list[Condition] = Field(default_factory=list)
    history: list[HistoryEvent] = Field(default_factory=list)
    observed_generation: int | None = None
    last_update: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None


def _balsam_input(cls: type[Job], data: Any) -> Any:
    try:
        return cls._from_balsam_kwargs(data)
    except ValueError as e:  # reported as the model validator this replaces would have
        raise ValidationError.from_exception_data(
            cls.__name__, [{"type": "value_error", "loc": (), "input": data, "ctx": {"error": e}}]
        ) from None


class Job(BalsamJobMixin, ClientMixin, Resource):
    KIND: ClassVar[str] = "Job"
    PLURAL: ClassVar[str] = "jobs"
    SINGULAR: ClassVar[str] = "job"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("j",)
    # workdir (always one entry) and site (only when named: most jobs name none) answer
    # ``--field-selector spec.workdir=/spec.site=`` and ``filter(workdir=/site_name=)``.
    # claimable (3): unplaced single-node jobs an agent with a claim window may take (apis/_windows.py)
    INDEXES_SINCE: ClassVar[dict[int, tuple[str, ...]]] = {2: ("workdir", "site"), 3: ("claimable",)}
    INDEXED_STATUS: ClassVar[frozenset[str] | None] = frozenset({"state", "placement"})

    spec: JobSpec
    status: JobStatus = Field(default_factory=JobStatus)
    _pending: dict[str, Any] = PrivateAttr(default_factory=dict)
    _client: Any = PrivateAttr(default=None)  # apis._context.ClientRef: the client that loaded it

    # Balsam's keywords (``Job(app_id=..., tags=...)``, ``Job.model_validate({...})``) are
    # translated here rather than by a ``mode="before"`` model validator: such a validator
    # makes pydantic turn every stored JSON document into Python dicts before validating it,
    # a third of the cost of decoding a Job (bench store's selector get decodes 10k of them).
    # Stored JSON and manifests use the resource's own shape and never needed it.
    def __init__(self, /, **data: Any) -> None:
        super().__init__(**_balsam_input(type(self), data))

    # Only adapts the arguments, as RootModel's: marked as pydantic's own ``__init__`` so that
    # validation (of stored JSON above all) does not call it for every object it builds.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        return super().model_validate(_balsam_input(cls, obj), *args, **kwargs)

    def index_entries(self) -> set[tuple[str, str]]:
        """Labels, state, app, workdir, site (when it names one), parents, and the nodes it
        is placed on (``boundnode`` while it holds them: what a node agent watches)."""
        spec = self.spec
        # One set display and updates from lists: a bulk create asks this of every job.
        out = {("app", spec.app), ("workdir", spec.workdir)}
        labels = self.metadata.labels
        if labels:
            out.update([("label", f"{k}={v}") for k, v in labels.items()])
        if spec.site:
            out.add(("site", spec.site))
        if spec.parents:
            out.update([("parent", p) for p in spec.parents])
        return out | self.status_index_entries()

    def status_index_entries(self) -> set[tuple[str, str]]:
        """The entries ``status.state`` and ``status.placement`` decide (``INDEXED_STATUS``)."""
        status = self.status
        state = status.state
        out = {("state", str(state))}
        placement = status.placement
        if placement is not None and placement.nodes:
            out |= {("node", n) for n in placement.nodes}
            if state in _HOLDS_NODE:
                # Its key appears when a job is bound to the node and vanishes when the job
                # stops holding it (finished, failed, unbound, deleted).
                out |= {("boundnode", n) for n in placement.nodes}
        elif state in CLAIMABLE_STATES:
            spec = self.spec
            if spec.resources.num_nodes == 1 and not spec.suspend and not (
                    state is JobState.CREATED and spec.parents):
                # (reads the spec too: a spec edit re-indexes the whole job)
                # the state last: a job that moves on (READY -> PREPROCESSED after its stage-in)
                # gets a new key, which wakes the agents and refreshes what they remembered of it
                out.add(("claimable", f"{claim_order(spec.priority, self.metadata.creation_timestamp)}.{state.value}"))
        return out

    def references_key(self) -> Hashable:
        spec = self.spec
        parents = spec.parents
        if parents:
            return ("Job", self.metadata.namespace, spec.app, spec.site, *parents)
        return ("Job", self.metadata.namespace, spec.app, spec.site)

    def references(self) -> list[Reference]:
        """Its parents, its App and the Site it names: all in its namespace."""
        ns, spec = self.metadata.namespace, self.spec
        refs = [Reference("spec.parents", "jobs", ns, p) for p in spec.parents]
        if spec.site:  # a job naming a site that is not there would run nowhere (or anywhere)
            refs.append(Reference("spec.site", "sites", ns, spec.site, f' (no such Site in namespace "{ns}")'))
        refs.append(Reference("spec.app", "apps", ns, spec.app))
        return refs

    def status_copy(self) -> Job:
        """A copy whose status (history and conditions included) may be edited freely while
        spec and metadata stay shared — what reconcilers and agents change, at a fraction of
        a deep copy's cost."""
        st = self.status
        status = shallow_copy(st, {"history": list(st.history), "conditions": list(st.conditions)})
        return shallow_copy(self, {"status": status})  # apis._codec: model_copy without copy.copy


# --- App -------------------------------------------------------------------------


class AppParameter(Model):
    required: bool = True
    default: str | None = None
    help: str = ""


class TransferSlot(Model):
    direction: Literal["in", "out"]
    local_path: str
    required: bool = True
    recursive: bool = False
    description: str = ""

    @field_validator("local_path")
    @classmethod
    def _local(cls, v: str) -> str:
        if v.startswith("/") or posixpath.normpath(v).startswith(".."):
            raise ValueError(f'localPath "{v}" must stay inside the job\'s workdir')
        return v


class PythonAppRef(Model):
    module: str | None = None
    class_name: str = Field(alias="class")
    payload: str | None = None  # base64 cloudpickle of a class defined in __main__ or a notebook
    # Hooks the class defines (the others take their default step without running any code);
    # None (a manifest that does not say): every hook runs the class's code.
    hooks: list[Literal["preprocess", "postprocess", "handle_error", "handle_timeout"]] | None = None
    hook_timeout_seconds: float | None = Field(None, gt=0)  # None: the controller manager's default
    fresh_process: bool = False  # run() in a fresh process per job, not a reused warm worker


class AppSpec(Model):
    site: str | None = None
    command: str | None = None
    parameters: dict[str, AppParameter] = Field(default_factory=dict)
    transfers: dict[str, TransferSlot] = Field(default_factory=dict)
    environment: dict[str, str] = Field(default_factory=dict)
    cleanup_files: list[str] = Field(default_factory=list)
    preamble: str | None = None
    python: PythonAppRef | None = None
    description: str = ""

    @model_validator(mode="after")
    def _command_or_python(self) -> AppSpec:
        if not self.command and self.python is None:
            raise ValueError("spec: Required value: one of command or python is required")
        return self


class App(ClientMixin, Resource):
    KIND: ClassVar[str] = "App"
    PLURAL: ClassVar[str] = "apps"
    SINGULAR: ClassVar[str] = "app"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ()

    spec: AppSpec
    status: dict[str, Any] = Field(default_factory=dict)
    _client: Any = PrivateAttr(default=None)


# --- Site ------------------------------------------------------------------------


class ElasticQueue(Model):
    enabled: bool = True
    min_nodes: int = Field(1, ge=0)
    max_nodes: int = Field(1, ge=1)
    min_wall_time_min: float = 10
    max_wall_time_min: float = 60
    wall_time_pad_min: float = 5
    max_queue_wait_min: float = 120
    max_queued_jobs: int = Field(1, ge=1)
    queue: str | None = None
    project: str | None = None
    job_mode: Literal["mpi", "serial"] = "mpi"
    selector: dict[str, str] = Field(default_factory=dict)


class NodeDefaults(Model):
    cpus: int = Field(1, ge=1)
    # Schedulable GPU units of a node: whole GPUs, or tiles when ``gpuTiles`` > 1 (Aurora:
    # 6 GPUs x 2 tiles = 12); ``gpusPerRank`` counts the same units.
    gpus: int = Field(0, ge=0)
    gpu_tiles: int = Field(1, ge=1)  # tiles per GPU: unit u is tile u % gpuTiles of GPU u // gpuTiles


class PbsSettings(Model):
    """What a PBS Pro site adds to every ``qsub`` (``-l select=N:system=...``, ``place``,
    ``filesystems``); a BatchJob's ``optionalParams`` may replace each."""

    system: str | None = None
    place: str | None = None
    filesystems: str | None = None


class QueueLimits(Model):
    """One batch queue of a site, as Balsam's ``allowed_queues`` lists them."""

    max_nodes: int = Field(1, ge=1)
    max_wall_time_min: float = Field(60, gt=0)
    max_queued_jobs: int = Field(1, ge=1)


class SiteSpec(Model):
    path: str
    scheduler: Literal["local", "slurm", "pbs"] = "local"
    launcher: Literal["mpirun", "mpiexec", "pals", "srun", "none"] = "mpirun"
    # How a job is pinned to the GPUs it was placed on: CUDA_VISIBLE_DEVICES (nvidia),
    # ROCR_VISIBLE_DEVICES (amd), ZE_AFFINITY_MASK with GPU.TILE ids (intel).
    gpu_platform: Literal["nvidia", "amd", "intel"] = "nvidia"
    pbs: PbsSettings | None = None
    queues: dict[str, QueueLimits] = Field(default_factory=dict)
    transfer_locations: dict[str, str] = Field(default_factory=dict)
    globus_endpoint_id: str | None = None  # this site's own Globus collection (Balsam's globus_endpoint_id)
    elastic_queue: ElasticQueue | None = None
    node_defaults: NodeDefaults = Field(default_factory=NodeDefaults)  # type: ignore[arg-type]  # no pydantic mypy plugin

    @field_validator("transfer_locations")
    @classmethod
    def _locations(cls, v: dict[str, str]) -> dict[str, str]:
        for alias, url in v.items():
            check_location(alias, url)
        return v


class Site(ClientMixin, Resource):
    """A site (Balsam's Site): ``Site.objects`` lists the Sites of every namespace (see
    ``apis._sites.SiteManager``); ``site.id`` and ``site.path`` are Balsam's names."""

    KIND: ClassVar[str] = "Site"
    PLURAL: ClassVar[str] = "sites"
    SINGULAR: ClassVar[str] = "site"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ()

    spec: SiteSpec
    status: dict[str, Any] = Field(default_factory=dict)
    _client: Any = PrivateAttr(default=None)

    @property
    def id(self) -> str:
        """The Site's name (unique among the sites of a shared store); ``Job.objects.filter(site_id=...)``."""
        return str(self.metadata.name or "")

    @property
    def path(self) -> Path:
        """The site directory, as a Path (``site.path / "data" / job.workdir``)."""
        return Path(self.spec.path)


# --- BatchJob --------------------------------------------------------------------

BatchJobState = Literal["pending_submission", "queued", "running", "finished", "submit_failed", "pending_deletion"]


class NodeSize(Model):
    """What each node agent of an allocation offers (``--cpus``/``--gpus``); a field left
    unset falls back to the Site's ``nodeDefaults`` when set, else the agent counts its own
    node (CPUs) or offers none (GPUs). Larger than the machine simulates bigger nodes."""

    cpus: int | None = Field(None, ge=1)
    gpus: int | None = Field(None, ge=0)


class BatchJobSpec(Model):
    site: str | None = None
    num_nodes: int = Field(1, ge=1)
    wall_time_min: float = Field(10, gt=0)
    queue: str | None = None
    project: str | None = None
    job_mode: Literal["mpi", "serial"] = "mpi"
    selector: dict[str, str] = Field(default_factory=dict)
    partitions: list[dict[str, Any]] = Field(default_factory=list)
    optional_params: dict[str, str] = Field(default_factory=dict)
    # The scheduler this allocation goes to, when not the Site's ``spec.scheduler``: ``up``
    # runs its allocation here (``local``) on a Slurm site too.
    scheduler: Literal["local", "slurm", "pbs"] | None = None
    node_size: NodeSize | None = None

    @field_validator("partitions", mode="before")
    @classmethod
    def _partitions(cls, v: Any) -> Any:
        if isinstance(v, list):  # Balsam's BatchJobPartition objects, kept as their plain fields
            return [p.model_dump(mode="json") if isinstance(p, BatchJobPartition) else p for p in v]
        return v


class BatchJobStatus(Model):
    state: BatchJobState = "pending_submission"
    scheduler_id: str | None = None
    # The scheduler's own word for the job when last looked at: PENDING, RUNNING, and at the
    # end COMPLETED, TIMEOUT (its wall time), CANCELLED, FAILED, ...; None if never seen/vanished.
    scheduler_state: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    message: str = ""
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None  # the spec generation the batch reconciler last acted on


class BatchJob(ClientMixin, Resource):
    KIND: ClassVar[str] = "BatchJob"
    PLURAL: ClassVar[str] = "batchjobs"
    SINGULAR: ClassVar[str] = "batchjob"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("bj",)

    spec: BatchJobSpec = Field(default_factory=BatchJobSpec)  # type: ignore[arg-type]  # no pydantic mypy plugin
    status: BatchJobStatus = Field(default_factory=BatchJobStatus)
    _client: Any = PrivateAttr(default=None)


# --- Node ------------------------------------------------------------------------


class NodeSpec(Model):
    batch_job: str | None = None
    hostname: str
    cpus: int = Field(ge=1)
    gpus: int = Field(0, ge=0)
    # Its agent takes single-node jobs itself while placement keeps its claim window open
    # (apis/_windows.py).
    acquires: bool = False


class NodeStatus(Model):
    busy_cpus: list[int] = Field(default_factory=list)
    busy_gpus: list[int] = Field(default_factory=list)
    occupancy: float = 0.0
    running_jobs: list[str] = Field(default_factory=list)
    heartbeat: datetime | None = None
    conditions: list[Condition] = Field(default_factory=list)
    # The claim window's epoch the agent last saw closed and stopped claiming for, and the
    # revision of its last job write before that (apis/_windows.py).
    window_ack: int = 0
    claims_through: int = 0


class Node(ClientMixin, Resource):
    KIND: ClassVar[str] = "Node"
    PLURAL: ClassVar[str] = "nodes"
    SINGULAR: ClassVar[str] = "node"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("no",)

    spec: NodeSpec
    status: NodeStatus = Field(default_factory=NodeStatus)
    _client: Any = PrivateAttr(default=None)

    def index_entries(self) -> set[tuple[str, str]]:
        """Labels, and the BatchJob it belongs to."""
        out = super().index_entries()
        if self.spec.batch_job:
            out.add(("batchjob", self.spec.batch_job))
        return out


# --- TransferTask ----------------------------------------------------------------


class TransferItem(Model):
    job: str
    slot: str
    source: str
    destination: str
    recursive: bool = False
    job_uid: str | None = None  # a job deleted and made again under the same name is not this one


class TransferTaskSpec(Model):
    provider: str
    direction: Literal["in", "out"]
    location: str  # the alias's URL: globus://uuid, file://, https://host
    site: str | None = None  # the Site whose jobs these are (its directory holds the Globus sign-in)
    local_endpoint: str | None = None  # the site's own Globus collection (globus:// tasks)
    items: list[TransferItem] = Field(default_factory=list)


class TransferItemFailure(Model):
    index: int  # into spec.items
    message: str
    permanent: bool = False  # retrying cannot help (an HTTP 4xx)


class TransferTaskStatus(Model):
    """``Pending`` (to submit; again after a failed attempt), ``Active`` (submitted), then
    ``Succeeded`` or ``Failed`` (attempts used up: ``failedItems`` says which items failed;
    the others arrived)."""

    state: Literal["Pending", "Active", "Succeeded", "Failed"] = "Pending"
    provider_task_id: str | None = None
    bytes_transferred: int = 0
    files_transferred: int = 0
    attempts: int = 0
    message: str = ""
    failed_items: list[TransferItemFailure] = Field(default_factory=list)
    submit_time: datetime | None = None
    last_progress_time: datetime | None = None  # last change of bytes/files or state
    conditions: list[Condition] = Field(default_factory=list)


class TransferTask(ClientMixin, Resource):
    KIND: ClassVar[str] = "TransferTask"
    PLURAL: ClassVar[str] = "transfertasks"
    SINGULAR: ClassVar[str] = "transfertask"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("tt",)

    spec: TransferTaskSpec
    status: TransferTaskStatus = Field(default_factory=TransferTaskStatus)
    _client: Any = PrivateAttr(default=None)


KINDS: tuple[type[Resource], ...] = (Job, App, Site, BatchJob, Node, TransferTask)


# --- Event -----------------------------------------------------------------------


class ObjectReference(Model):
    """The object an Event is about (Kubernetes' ``involvedObject``)."""

    api_version: str = API_VERSION
    kind: str
    name: str
    namespace: str | None = None
    uid: str | None = None


class Event(ClientMixin, Resource):
    """Something that happened to an object (core/v1 Event's shape, which ``kubectl get
    events`` shows): repeats of one situation are one Event whose ``count`` grows. Written by
    the controllers on a store lease shared per time window, so Events expire (docs/design.md
    "Conditions and Events"). Not a CRD of the operator: Events stay in the store."""

    KIND: ClassVar[str] = "Event"
    PLURAL: ClassVar[str] = "events"
    SINGULAR: ClassVar[str] = "event"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("ev",)

    involved_object: ObjectReference
    reason: str
    message: str = ""
    type: Literal["Normal", "Warning"] = "Normal"
    count: int = Field(1, ge=1)
    first_timestamp: datetime | None = None
    last_timestamp: datetime | None = None
    reporting_controller: str = ""  # the component that acted (a reconciler, the node agent)
    _client: Any = PrivateAttr(default=None)


#: Every kind ``kind_for`` knows: the CRD kinds and Events.
ALL_KINDS: tuple[type[Resource], ...] = (*KINDS, Event)


def kind_for(name: str) -> type[Resource]:
    """A kind from kubectl's names: ``job``, ``jobs``, ``Job``, ``jobs.balsam.io``, ``bj``."""
    n = name.lower()
    if n.endswith(".balsam.io"):
        n = n[: -len(".balsam.io")]
    for k in ALL_KINDS:
        if n in (k.KIND.lower(), k.PLURAL, k.SINGULAR, *k.SHORT_NAMES):
            return k
    raise BadRequest(f'the server doesn\'t have a resource type "{name}"')


def created_jobs(creates: Sequence[Resource]) -> tuple[list[Job], Sequence[Resource]]:
    """A write's created Jobs, and its creates that may be anything else (none when every
    create is a Job): a bulk create is of one kind, and the admission checks that look for
    Jobs and for the write's own Apps and Sites then skip their filtering passes over it."""
    if set(map(type, creates)) == {Job}:
        return cast("list[Job]", list(creates)), ()
    return [o for o in creates if isinstance(o, Job)], creates
