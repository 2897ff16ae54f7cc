"""Why a job is not moving, as the reader sees it: the job's stored conditions that still
apply, and the ones only a reader can give (nothing may be alive to write them).

* ``ControllerManager``/``NoControllerManager``: nobody holds the namespace's leader lease.
* ``NodeAgents``/``NoNodeAgent``: a job waits for a node, or is bound to one, running, or
  stopped short (RUN_TIMEOUT, RUN_ERROR), and no Node is registered: after ``up`` died both
  this and ``NoControllerManager`` hold, and both are shown.
* ``Suspended``: ``spec.suspend`` holds the job.
* ``Waiting``/``WaitingForTransfer``: the job's TransferTask, its state and age.
* ``Waiting``/``InClaimWindow``: a job the node agents take themselves (claim windows, issue 19
  eighth round) has no Waiting condition written while it waits; its words are made here:
  how many nodes take jobs themselves and how many claimable jobs are ahead of it.

and the live detail the stored words leave out so that they need not be rewritten as the
world changes: the parents' states (``WaitingForParents``) and the largest free slot
(``WaitingForCapacity``). ``describe``, ``get -o wide|yaml|json`` and ``up --until-done``
all say the same thing because they all read it here (``apis/_reasons.py`` has the types).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from apis import (
    RUNNABLE,
    TERMINAL,
    Condition,
    Job,
    JobState,
    Node,
    Registry,
    TransferTask,
    get_condition,
    utcnow,
)
from apis._reasons import NO_NODE_AGENT, PRIORITY, no_manager_text
from apis._registry import index_prefix
from apis._windows import Window, window_prefix

from .printers import human_duration

WAITING_FOR_PARENTS = (JobState.CREATED, JobState.AWAITING_PARENTS)
#: States of a job whose run is under way or just ended short: it runs again only on a node.
AFTER_A_RUN = (JobState.RUNNING, JobState.RUN_TIMEOUT, JobState.RUN_ERROR)
TRANSFER_STATES = {JobState.READY: "in", JobState.POSTPROCESSED: "out"}
#: Most claimable jobs counted ahead of one (``Surroundings.jobs_ahead``).
AHEAD_CAP = 10_000
SUSPENDED = ("spec.suspend is true: the job is held until it is resumed "
             "(balsamctl edit job NAME, or patch spec.suspend to false)")


class Surroundings:
    """What the reader looks up once for many jobs (lazily): the leader lease, the Nodes,
    the TransferTasks of the namespace."""

    def __init__(self, registry: Registry, namespace: str, now: datetime | None = None) -> None:
        self.registry = registry
        self.namespace = namespace
        self.now = now or utcnow()
        self._manager: bool | None = None
        self._nodes: list[Node] | None = None
        self._tasks: list[TransferTask] | None = None
        self._windows: int | None = None

    @property
    def manager_alive(self) -> bool:
        if self._manager is None:
            # the controllers package costs ~0.06 s to import: only describe-like paths need it
            from controllers._leader import LEASE_PREFIX

            self._manager = self.registry.store.get(f"{LEASE_PREFIX}{self.namespace}") is not None
        return self._manager

    @property
    def nodes(self) -> list[Node]:
        if self._nodes is None:
            self._nodes = self.registry.list(Node, self.namespace)[0]
        return self._nodes

    @property
    def open_windows(self) -> int:
        """How many nodes of the namespace take jobs themselves now (open claim windows)."""
        if self._windows is None:
            kvs = self.registry.store.range(window_prefix(self.namespace)).kvs
            self._windows = sum(1 for kv in kvs if Window.decode(kv.value).open)
        return self._windows

    def jobs_ahead(self, job: Job) -> str:
        """How many claimable jobs come before ``job`` (the agents take them in that order),
        counted from the index's keys; over :data:`AHEAD_CAP`, said so."""
        value = next((v for i, v in job.status_index_entries() if i == "claimable"), None)
        if value is None:
            return "0"
        prefix = index_prefix(Job, "claimable", self.namespace)
        own = f"{index_prefix(Job, 'claimable', self.namespace, value)}{job.name}"
        res = self.registry.store.range(prefix, limit=AHEAD_CAP + 1, keys_only=True)
        ahead = sum(1 for kv in res.kvs if kv.key < own)
        return f"more than {AHEAD_CAP:,}" if ahead > AHEAD_CAP else str(ahead)

    @property
    def tasks(self) -> list[TransferTask]:
        if self._tasks is None:
            self._tasks = self.registry.list(TransferTask, self.namespace)[0]
        return self._tasks


def _no_node_agent() -> Condition:
    return Condition(type="NodeAgents", status="False", reason="NoNodeAgent", message=NO_NODE_AGENT)


def _bound(job: Job) -> bool:
    return job.status.placement is not None and bool(job.status.placement.nodes)


def _still_holds(job: Job, c: Condition) -> bool:
    """Whether a stored problem condition still applies in the job's state (a run may have
    moved the job on before the writer cleared it). False-status conditions are shown as
    they are, as kubectl shows them."""
    state = job.status.state
    if c.status != "True":
        return True
    if c.type == "Failed":
        return state is JobState.FAILED
    if state in TERMINAL:
        return False
    if c.type == "Waiting":
        if c.reason == "WaitingForParents":
            return state in WAITING_FOR_PARENTS
        return state in RUNNABLE and not _bound(job) and not job.spec.suspend
    return True


def _jobs_ahead_text(ahead: str) -> str:
    return f"{ahead} job{'' if ahead == '1' else 's'} ahead"


def _in_claim_window(job: Job, env: Surroundings, detail: bool) -> Condition | None:
    """``InClaimWindow`` for a job the agents may claim while some window is open (with
    ``detail``, how many jobs are ahead: a keys-only read of the index per job)."""
    if not any(i == "claimable" for i, _ in job.status_index_entries()):
        return None
    n = env.open_windows
    if not n:
        return None
    return Condition(type="Waiting", status="True", reason="InClaimWindow",
                     message=f"waiting for a free slot; {n} node{'s take' if n != 1 else ' takes'} jobs themselves"
                             + (f"; {_jobs_ahead_text(env.jobs_ahead(job))}" if detail else ""),
                     last_transition_time=job.metadata.creation_timestamp)


def free_slot_text(nodes: Sequence[Node], gpus_needed: int) -> str:
    """``the largest free slot is 2 idle CPUs on n1`` (and its GPUs when the job needs some)."""
    if not nodes:
        return "no node is registered"
    best = max(nodes, key=lambda n: (n.spec.cpus - len(n.status.busy_cpus), n.spec.gpus - len(n.status.busy_gpus)))
    cpus = best.spec.cpus - len(best.status.busy_cpus)
    gp = f" and {best.spec.gpus - len(best.status.busy_gpus)} idle GPUs" if gpus_needed else ""
    return f"the largest free slot is {cpus} idle CPU{'s' if cpus != 1 else ''}{gp} on {best.name}"


def _parents_text(job: Job, env: Surroundings) -> str:
    parents = job.spec.parents
    found = env.registry.get_many(Job, parents, job.namespace) if parents else []
    waiting = [(p, j) for p, j in zip(parents, found, strict=True)
               if j is None or j.status.state is not JobState.JOB_FINISHED]
    shown = ", ".join(f"{p} ({j.status.state.value if j is not None else 'deleted'})" for p, j in waiting[:8])
    more = f" and {len(waiting) - 8} more" if len(waiting) > 8 else ""
    return f"waiting for {len(waiting)} of its {len(parents)} parent job(s) to finish: {shown}{more}"


def _transfer_condition(job: Job, env: Surroundings) -> Condition | None:
    direction = TRANSFER_STATES.get(job.status.state)
    if direction is None or not job.spec.transfers:
        return None
    what = "stage-in" if direction == "in" else "stage-out"
    mine = [t for t in env.tasks if t.spec.direction == direction and any(i.job == job.name for i in t.spec.items)]
    live = [t for t in mine if t.status.state in ("Pending", "Active")] or mine
    if not live:
        return Condition(type="Waiting", status="True", reason="WaitingForTransfer",
                         message=f"waiting for its {what} transfer to be batched into a TransferTask")
    t = live[0]
    since = t.status.submit_time or t.metadata.creation_timestamp
    age = f", {human_duration((env.now - since).total_seconds())} old" if since else ""
    files = f", {t.status.files_transferred} file(s) so far" if t.status.files_transferred else ""
    return Condition(type="Waiting", status="True", reason="WaitingForTransfer",
                     message=f"waiting for its {what} transfer: TransferTask {t.name} is {t.status.state}{age}{files}")


def current_conditions(job: Job, env: Surroundings, *, detail: bool = True) -> list[Condition]:
    """The conditions that hold now, most telling first. ``detail``: add what needs a read per
    job (the parents' states) — describe does, a list of many jobs does not."""
    state = job.status.state
    out = [c for c in job.status.conditions if _still_holds(job, c)]
    if state not in TERMINAL:
        if not env.manager_alive:
            out.append(Condition(type="ControllerManager", status="False", reason="NoControllerManager",
                                 message=no_manager_text(job.namespace)))
        if state in RUNNABLE and not _bound(job) and not job.spec.suspend:
            if not env.nodes:
                out = [c for c in out if not (c.type == "Waiting" and c.reason in ("NoNodes", "WaitingForCapacity",
                                                                                    "HeldByPriority"))]
                out.append(_no_node_agent())
            else:
                out = [c if c.type != "Waiting" or c.reason not in ("WaitingForCapacity", "HeldByPriority")
                       else c.model_copy(update={"message": f"{c.message}; {free_slot_text(env.nodes, 1 if 'GPU' in c.message else 0)}"})
                       for c in out if not (c.type == "Waiting" and c.reason == "NoNodes")]
        elif (state in AFTER_A_RUN or _bound(job)) and not env.nodes:
            # Its agent is gone with every other (up died, the allocation ended): the job can
            # run (again) only once an agent registers — say so beside a missing manager.
            out.append(_no_node_agent())
        if job.spec.suspend:
            out.append(Condition(type="Suspended", status="True", reason="Suspended", message=SUSPENDED))
        if env.nodes and (state in RUNNABLE or state in (JobState.CREATED, JobState.READY)):
            window = _in_claim_window(job, env, detail)
            if window is not None:  # the agents take it: the engine's stored words are stale
                out = [c for c in out if c.type != "Waiting"]
                out.append(window)
        tc = _transfer_condition(job, env)
        if tc is not None and get_condition(out, "Waiting") is None:
            out.append(tc)
        if detail and state in WAITING_FOR_PARENTS and job.spec.parents:
            out = [c.model_copy(update={"message": _parents_text(job, env)})
                   if c.type == "Waiting" and c.reason == "WaitingForParents" else c for c in out]
    rank = {t: i for i, t in enumerate(PRIORITY)}
    return sorted(out, key=lambda c: rank.get(c.type, len(rank)))


def top_condition(conditions: Sequence[Condition]) -> Condition | None:
    """The condition ``get -o wide`` shows (the list is ordered by ``current_conditions``)."""
    return conditions[0] if conditions else None


def with_current_conditions(jobs: Sequence[Job], env: Surroundings, *, detail: bool = False) -> list[Job]:
    """Copies of ``jobs`` whose ``status.conditions`` are what holds now (for the printers)."""
    out = []
    for j in jobs:
        conds = current_conditions(j, env, detail=detail)
        if conds == j.status.conditions:
            out.append(j)
        else:
            out.append(j.model_copy(update={"status": j.status.model_copy(update={"conditions": conds})}))
    return out
