"""The claimer: while placement keeps this node's claim window open, the agent takes
single-node jobs itself (Balsam's ``session.acquire_jobs``), with no manager write per job.

Protocol (``apis/_windows.py``; docs/design.md, "Eighth round: agents acquire"):

* **Wake-ups.** A keys-only list-watch of the namespace's ``claimable`` index wakes the loop
  (one :class:`JobsClaimable` per wake-up, however many keys arrived); a job's exit here wakes
  it too. No job is decoded for a wake-up.
* **A claim round** (free CPUs here, window open, the lease surely valid): one keys-only range
  read of the index's first :data:`RANGE` keys (highest priority, then oldest), one
  ``get_many`` of at most ``max(8, 2 × free CPUs)`` of them that are not known to be
  unclaimable, and ONE transaction of status patches, each a compare-and-swap on its job: the
  collapsed release steps (``by`` this node, the same rule and words as placement's release),
  the binding to this node on the lowest free ids (the same ``placement`` fields placement
  writes). The transaction also compares the window key's revision (a claim never lands after
  a close) and the Node key's existence (nor after our lease expired). A job another agent (or
  placement) took meanwhile fails its CAS: the round is retried job by job and that one skipped.
* **The window's close** is acknowledged in the Node's status (``windowAck``, and
  ``claimsThrough``: the revision of our last job write) once no claim is in flight and every
  step of ours is written: placement's engine then places here again, its cache holding
  everything we started.
* **Opening**: before its first claim the agent lists its own ``boundnode`` keys (what
  placement bound here before the window opened), so its free slots are exact.

What a job costs: one keys-only index event per agent (creation) and one (its claim's
delete); for the agent that claims it, its share of one range read, one ``get_many`` and one
transaction per round.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import store as st
from apis import (
    Job,
    JobState,
    Node,
    Placement,
    Registry,
    StoreUnavailable,
    declares_hook,
    utcnow,
)
from apis._registry import index_prefix, kind_prefix, object_key
from apis._release import collapsed_fields, steps_to_preprocessed
from apis._states import PRE_READY
from apis._windows import CLAIMABLE_STATES, Window, window_key

from ._messages import JobsClaimable, Post
from ._status import Rider

if TYPE_CHECKING:
    from ._lease import LeaseKeeper
    from ._reporter import NodeReporter
    from ._source import JobSource
    from ._status import StatusWriter
    from ._supervisor import Supervisor

#: Most keys read from the head of the ``claimable`` index per round.
RANGE = 256
#: While jobs run here, claim rounds are at most this far apart (seconds): exits that come
#: close together are filled by one round (one range read, one ``get_many``, one transaction)
#: instead of one each. A node with nothing running claims at once (a DAG's next job).
ROUND_EVERY = 0.004
#: Most ends in one write whose children are looked up to ride with it (one keys-only read of
#: the ``parent`` index each): a larger batch is a busy node's, where a DAG's hop is not the
#: wait that counts; placement releases those children as before.
FOLLOW_MAX = 4
#: Most other parents read for one such write: a fan-in's child, whose parents end one by one,
#: is not read with all of them at every end (placement releases it once the last one ends).
FOLLOW_PARENTS = 8
#: Conditions a claimed job no longer has: placement's words for a waiting job and the
#: parents' conditions of a released one.
_DROPPED = frozenset({"Unschedulable", "Waiting", "ParentFailed", "ParentMissing"})


def _parent_unknown(_name: str) -> JobState | None:
    return None  # a claimable job with parents is READY already: its parents are not asked


def _has_preprocess(app: Any) -> bool:
    return declares_hook(app, "preprocess")


def claimable_now(job: Job) -> bool:
    """Whether ``job`` as read is still one the index lists (not placed, not moved on)."""
    st_ = job.status
    return st_.state in CLAIMABLE_STATES and not (st_.placement is not None and st_.placement.nodes) \
        and not job.spec.suspend


def share_left_now(occupancy: float) -> float:
    """The occupancy a node with ``occupancy`` taken may still give (at least 0)."""
    return max(0.0, 1.0 - occupancy)


def _room_after(p: Placement, free_c: list[int], free_g: list[int], share_left: float,
                ) -> tuple[list[int], list[int], float]:
    """The free CPU and GPU ids and the occupancy left once a claim took ``p`` (the lowest ids)."""
    return free_c[len(p.cpus):], free_g[len(p.gpus):], share_left - p.occupancy


class Claimer:
    def __init__(self, registry: Registry, namespace: str, node: str, cpus: int, gpus: int, post: Post,
                 log: logging.Logger, *, enabled: bool, batch_job: str | None = None) -> None:
        self.registry = registry
        self.store: st.Store = registry.store
        self.namespace = namespace
        self.node = node
        self.cpus = cpus
        self.gpus = gpus
        self.post = post
        self.log = log
        self.enabled = enabled
        self.batch_job = batch_job
        self.prefix = index_prefix(Job, "claimable", namespace)
        self.window_key = window_key(namespace, node)
        self.node_key = f"{kind_prefix(Node, namespace)}{node}"
        self.window = Window()
        self.window_rev = 0
        self.synced = False  # our boundnode keys were listed since the window opened
        self.wake = False
        self.acked = 0  # the last closing epoch acknowledged
        self.unsure: set[str] = set()  # claims whose transaction's outcome is unknown (the store went away)
        #: name -> resourceVersion of jobs we cannot take (a hook, a stage-in, too big for this
        #: node): skipped until they change.
        self.unclaimable: dict[str, str | None] = {}
        self.last_revision = 0  # of our last claim
        self.last_round = 0.0  # time.monotonic() of the last claim round
        #: The smallest occupancy share among the jobs the last round read: how many jobs the
        #: free occupancy may hold (a node of jobs with nodePackingCount 1 reads one per round).
        self.min_share = 1.0 / max(1, cpus)
        self._rng = random.Random()
        self._posted = threading.Event()  # a wake-up is on the loop's queue
        self.stats = {"claims": 0, "claim_txns": 0, "claim_conflicts": 0, "claim_rounds": 0, "claim_reads": 0,
                      "follow_reads": 0, "follow_claims": 0}
        self.source: JobSource
        self.supervisor: Supervisor
        self.writer: StatusWriter
        self.leases: LeaseKeeper
        self.reporter: NodeReporter

    # --- the watch thread's side ---------------------------------------------------------

    def keys_arrived(self) -> None:
        """Claimable keys arrived (watch thread): one wake-up on the loop's queue."""
        if not self._posted.is_set():
            self._posted.set()
            self.post(JobsClaimable())

    # --- the loop's side -------------------------------------------------------------------

    def woken(self) -> None:
        self._posted.clear()
        self.wake = True

    def on_window(self, window: Window, revision: int) -> None:
        if revision < self.window_rev:
            return  # an older state than one a failed claim read already
        opened = window.open and not (self.window.open and revision == self.window_rev)
        self.window, self.window_rev = window, revision
        if opened:
            self.synced = False
            self.wake = True
            self.log.info("claim window %d open: taking single-node jobs", window.epoch)
        elif not window.open:
            self.synced = False

    def turn(self, *, stopping: bool) -> None:
        """One turn of the loop: acknowledge a close, or list our bound jobs after an open, or
        claim while there is room."""
        if not self.enabled:
            return
        w = self.window
        if not w.open:
            if w.epoch > self.acked:
                self._maybe_ack()
            return
        if stopping:
            return
        if not self.synced:
            names = self.registry.index_names(Job, "boundnode", self.node, self.namespace)
            sup, src = self.supervisor, self.source
            self.source.recheck.update(n for n in names if n not in sup.runs and n not in src.queued
                                       and n not in src.secondary)
            self.synced = True
            return  # claims once what is bound here is read (the loop's recheck)
        now = time.monotonic()
        if self.wake and not self.source.recheck and now < self.leases.deadline - self.leases.fence_margin \
                and now >= self.next_round():
            self.claim_round()

    def next_round(self) -> float:
        """When the next claim round may run (time.monotonic()): at once on an idle node."""
        return self.last_round + ROUND_EVERY if self.supervisor.runs else 0.0

    def _maybe_ack(self) -> None:
        if self.writer.dirty or self.unsure and not self._resolve_unsure():
            return  # a step of ours is unwritten (or a claim's outcome unknown): not yet
        through = max(self.last_revision, self.writer.last_revision)
        self.reporter.window_ack = self.window.epoch
        self.reporter.claims_through = through
        self.reporter.dirty = True
        self.reporter.maybe_report(self.usage_for_report(), stopping=False, force=True)
        self.acked = self.window.epoch
        self.log.info("claim window %d closed: acknowledged (claims through revision %d)", self.window.epoch, through)

    def _resolve_unsure(self) -> bool:
        """Read the jobs whose claim's outcome is unknown: their revision bounds our claims."""
        names = list(self.unsure)
        try:
            jobs = self.registry.get_many(Job, names, self.namespace)
        except StoreUnavailable:
            return False
        for job in jobs:
            if job is not None:
                self.last_revision = max(self.last_revision, int(job.metadata.resource_version or 0))
        self.unsure.clear()
        self.source.recheck.update(names)  # ours if the claim landed: observed and launched
        return True

    usage_for_report: Callable[[], Any]  # set by the agent (its usage())

    def held(self) -> tuple[set[int], set[int], float]:
        """CPU ids, GPU ids and occupancy held here: runs whose process has not exited, jobs
        queued for launch, multi-node jobs whose other node we are."""
        cpus: set[int] = set()
        gpus: set[int] = set()
        occ = 0.0
        placements: list[Placement] = [r.placement for r in self.supervisor.runs.values() if not r.exited]
        placements.extend(j.status.placement for j in self.source.launch_queue if j.status.placement is not None)
        placements.extend(self.source.secondary.values())
        for p in placements:
            cpus.update(p.cpus)
            gpus.update(p.gpus)
            occ += p.occupancy
        return cpus, gpus, occ

    def claim_round(self) -> int:
        """Claim what fits now from the head of the index; returns how many landed."""
        busy_c, busy_g, occ = self.held()
        free_c = [i for i in range(self.cpus) if i not in busy_c]
        free_g = [i for i in range(self.gpus) if i not in busy_g]
        if not free_c or occ >= 1.0 - 1e-9:
            self.wake = False
            return 0  # full: an exit wakes us
        self.stats["claim_rounds"] += 1
        self.last_round = time.monotonic()
        sup, src = self.supervisor, self.source
        # Every job needs a CPU at least: no more than the free CPUs can be claimed. Twice as
        # many keys are looked at, and each agent takes its own random half of them, so agents
        # racing for the head of one index collide on few jobs, not all.
        want = min(len(free_c), max(1, int(share_left_now(occ) / self.min_share + 1e-9)))
        unclaimable = self.unclaimable
        try:
            res = self.store.range(self.prefix, limit=min(RANGE, 2 * want + len(unclaimable) + 8), keys_only=True)
        except (StoreUnavailable, st.Unavailable) as e:
            self.log.warning("reading the claimable jobs failed: %s", e)
            return 0
        cands: list[tuple[str, str]] = []  # (priority part of the index value, name), in index order
        cut = len(self.prefix)
        for kv in res.kvs:
            value, _, name = kv.key[cut:].partition("/")
            if unclaimable.get(name) == value or name in sup.runs or name in src.queued:
                continue
            cands.append((value.partition(".")[0], name))
            if len(cands) >= 2 * want:
                break
        top = [n for p, n in cands if p == cands[0][0]] if cands else []
        if len(top) > want:  # a random half of the head's own priority: strict across priorities
            keep = set(self._rng.sample(range(len(top)), want))
            names = [n for i, n in enumerate(top) if i in keep]  # still oldest first
        else:
            names = [n for _, n in cands[:want]]
        if not names:
            self.wake = False
            return 0
        try:
            jobs = self.registry.get_many(Job, names, self.namespace)
        except StoreUnavailable as e:
            self.log.warning("reading claimable jobs failed: %s", e)
            return 0
        self.stats["claim_reads"] += 1
        now = utcnow()
        patches: list[tuple[Job, dict[str, Any]]] = []
        share_left = 1.0 - occ
        shares = [1.0 / j.spec.resources.node_packing_count for j in jobs if j is not None]
        if shares:
            self.min_share = min(shares)
        moved = 0  # read from the index, gone from it since (another agent took them)
        for job in jobs:
            if job is None or not claimable_now(job):
                moved += 1
                continue
            fields = self._claim_fields(job, free_c, free_g, share_left, now)
            if fields is None:
                continue
            free_c, free_g, share_left = _room_after(fields["placement"], free_c, free_g, share_left)
            patches.append((job, fields))
            if not free_c:
                break
        if not patches:
            # Nothing here fits now: the next key or exit wakes us — unless others took what
            # we read, when the index may hold more behind it (no key arrives to say so).
            self.wake = moved > 0
            return 0
        fence = [st.Compare(self.window_key, "mod", "==", self.window_rev), st.Compare(self.node_key, "version", ">", 0)]
        names = [j.name for j, _ in patches]
        # Written by the status writer, in the transaction of whatever steps are ready (the
        # ends of the jobs whose slots these take), at once.
        self.writer.rider = Rider(patches, fence, self._landed, self._refused, lambda: self._unknown(names))
        return len(patches)

    def follow(self, ends: list[tuple[Job, dict[str, Any]]]) -> Rider | None:
        """Claims of the children that the ends about to be written make ready, to ride in
        their transaction (the status writer asks before it writes): a DAG's next job starts
        with no manager write and no wake-up between its parent's end and its claim.

        A child is taken when it waits on its parents (CREATED or AWAITING_PARENTS), is a
        single-node job that fits here now, and every other parent is JOB_FINISHED as read:
        the transaction compares the child (its CAS), each such parent's revision (none moved
        since it was read), the window key's revision and our Node key, as a claim round does.
        None when there is nothing to take, or the window is not open: placement releases the
        children as before, and an agent claims them from the index."""
        if not self.enabled or not self.window.open or not self.synced or self.source.recheck:
            return None
        finished = {j.name for j, f in ends if f.get("state") is JobState.JOB_FINISHED}
        if not finished or len(finished) > FOLLOW_MAX:
            return None
        if time.monotonic() >= self.leases.deadline - self.leases.fence_margin:
            return None
        busy_c, busy_g, occ = self.held()
        free_c = [i for i in range(self.cpus) if i not in busy_c]
        free_g = [i for i in range(self.gpus) if i not in busy_g]
        if not free_c or occ >= 1.0 - 1e-9:
            return None
        try:
            kids: list[str] = []
            for parent in sorted(finished):
                kids.extend(self.registry.index_names(Job, "parent", parent, self.namespace))
            if not kids:
                return None
            self.stats["follow_reads"] += 1
            kids = sorted(set(kids) - finished)[: 2 * len(free_c)]
            children = [j for j in self.registry.get_many(Job, kids, self.namespace) if j is not None]
            waiting = [j for j in children if self._waits_on_parents(j)
                       and len(j.spec.parents) <= FOLLOW_PARENTS + len(finished)]
            others = sorted({p for j in waiting for p in j.spec.parents} - finished)[:FOLLOW_PARENTS]
            read = dict(zip(others, self.registry.get_many(Job, others, self.namespace), strict=True)) if others else {}
        except (StoreUnavailable, st.Unavailable) as e:
            self.log.warning("reading the children of ending jobs failed: %s", e)
            return None

        def state_of(name: str) -> JobState | None:
            if name in finished:
                return JobState.JOB_FINISHED
            p = read.get(name)
            return p.status.state if p is not None else None

        now = utcnow()
        share_left = 1.0 - occ
        patches: list[tuple[Job, dict[str, Any]]] = []
        compared: set[str] = set()
        # Oldest first among the children of higher priority: placement's lane order.
        waiting.sort(key=lambda j: (-j.spec.priority, j.metadata.creation_timestamp or now, j.name))
        for job in waiting:
            fields = self._claim_fields(job, free_c, free_g, share_left, now, state_of)
            if fields is None:
                continue
            free_c, free_g, share_left = _room_after(fields["placement"], free_c, free_g, share_left)
            patches.append((job, fields))
            compared.update(x for x in job.spec.parents if x not in finished)
            if not free_c:
                break
        if not patches:
            return None
        fence = [st.Compare(self.window_key, "mod", "==", self.window_rev), st.Compare(self.node_key, "version", ">", 0)]
        for name in sorted(compared):
            parent = read[name]
            assert parent is not None  # JOB_FINISHED as read: state_of said so
            fence.append(st.Compare(object_key(Job, self.namespace, name), "mod", "==",
                                    int(parent.metadata.resource_version or 0)))
        names = [j.name for j, _ in patches]
        return Rider(patches, fence, self._followed, self._followed_refused, lambda: self._unknown(names))

    def _followed(self, written: list[Job], rev: int) -> None:
        self.stats["follow_claims"] += len(written)
        self._landed(written, rev)

    @staticmethod
    def _waits_on_parents(job: Job) -> bool:
        st_ = job.status
        return (st_.state is JobState.AWAITING_PARENTS or st_.state is JobState.CREATED and bool(job.spec.parents)) \
            and not job.spec.suspend and job.spec.resources.num_nodes == 1 \
            and not (st_.placement is not None and st_.placement.nodes)

    def _followed_refused(self) -> None:
        """A child's claim with its parent's end was refused (someone moved a job it compares,
        or the window): nothing to undo; the child is released and claimed the usual way."""
        self.stats["claim_conflicts"] += 1
        self.wake = True

    def _landed(self, written: list[Job], rev: int) -> None:
        self.stats["claim_txns"] += 1
        self.stats["claims"] += len(written)
        self.last_revision = max(self.last_revision, rev)
        for job in written:
            self.source.claimed.add(job.name)
            self.source.enqueue(job)
        if written:
            self.wake = True  # more may be there (and room: held() says)

    def _refused(self) -> None:
        """A job moved under a claim (another agent took it), or the window: look again."""
        self.stats["claim_conflicts"] += 1
        fence = [st.Compare(self.window_key, "mod", "==", self.window_rev)]
        if self._window_still(fence):
            self.wake = True  # a fresh round next turn: the index no longer lists what others took

    def _unknown(self, names: list[str]) -> None:
        self.log.warning("claiming %d job(s): the store did not answer; reading them again", len(names))
        self.unsure.update(names)
        self.source.recheck.update(names)

    def _remember_unclaimable(self, job: Job) -> None:
        """Skip ``job`` in the rounds to come while its ``claimable`` key stays the one it has
        now: the key holds the job's state, so a job that moves on (its stage-in done, its
        hook run) comes back as a new key — and a wake-up."""
        value = next((v for i, v in job.status_index_entries() if i == "claimable"), None)
        if value is None:
            return
        if len(self.unclaimable) > 100_000:
            self.unclaimable.clear()
        self.unclaimable[job.metadata.name or ""] = value

    def _claim_fields(self, job: Job, free_c: list[int], free_g: list[int], share_left: float,
                      now: datetime, state_of: Callable[[str], JobState | None] = _parent_unknown,
                      ) -> dict[str, Any] | None:
        """The status patch that claims ``job`` on the lowest free ids, or None (cannot now;
        remembered in ``unclaimable`` when it never can as it is)."""
        st_, spec = job.status, job.spec
        r = spec.resources
        c, g, share = r.cpus_per_node, r.gpus_per_node, 1.0 / r.node_packing_count
        if r.num_nodes != 1 or c > self.cpus or g > self.gpus:
            self._remember_unclaimable(job)
            return None
        if c > len(free_c) or g > len(free_g) or share > share_left + 1e-9:
            return None  # not now
        steps: list[tuple[JobState, str]] = []
        if st_.state in PRE_READY:
            app = self.supervisor.app(spec.app)
            found = steps_to_preprocessed(job, app, _has_preprocess, state_of)
            if found is None:  # a hook, a stage-in, no App here yet, or a parent not finished
                if app is not None and state_of is _parent_unknown:
                    self._remember_unclaimable(job)  # (the others: asked again, not remembered)
                return None
            steps = found
        placement = Placement(batch_job=self.batch_job, nodes=[self.node], cpus=free_c[:c], gpus=free_g[:g],
                              occupancy=share)
        conds = st_.conditions
        fields: dict[str, Any] = {
            "placement": placement, "observed_generation": job.metadata.generation,
            "conditions": [x for x in conds if x.type not in _DROPPED] if conds else []}
        if steps:
            fields.update(collapsed_fields(job, steps, now, self.node))
        return fields

    def _window_still(self, fence: list[st.Compare]) -> bool:
        """After a failed claim: is the window still open at the revision we claim under, and
        our Node there? If not, take the window as it is now (its watch event may lag)."""
        try:
            kvs = self.store.get_many([self.window_key, self.node_key])
        except (StoreUnavailable, st.Unavailable):
            return False
        wkv, nkv = kvs
        if nkv is None:
            self.wake = False
            return False  # our lease expired: the lost-lease path registers us again
        rev = wkv.mod_revision if wkv is not None else 0
        if rev != self.window_rev:
            self.on_window(Window.decode(wkv.value if wkv is not None else None), rev)
            return False
        return True
