"""The node reporter: the agent's ``Node`` object, created under the lease and kept current.

Node status (busyCpus, busyGpus, occupancy, runningJobs, heartbeat) is written at most every
``report_interval`` seconds while it changes, and at least every :data:`HEARTBEAT_INTERVAL`
seconds, never once per job. A write that finds the Node gone (its lease expired under us)
posts :class:`LeaseLost`: the loop registers again.

The Node carries its agent's process (annotation :data:`AGENT_PROCESS`, ``<boot id>:<pid
namespace>:<pid>:<start ticks>``, ``store/process.py``). An agent that finds its Node still
registered by an agent of this machine that no longer runs (``kill -9``; a restarted ``up``
on the same login node is the common case) revokes the dead agent's lease and registers at
once instead of waiting up to a TTL for it to expire — as a controller manager does with a
dead leader's lease. Safe for "one live run of a job": the dead agent's guardian killed its
jobs when the agent died, and a re-run on this host first fences any survivor of an earlier
run (``_fence.py``); an agent on another machine, or in another pid namespace, is waited
for as before.
"""

from __future__ import annotations

import logging
import time

import store as st
from apis import (
    AlreadyExists,
    Conflict,
    Node,
    NodeSpec,
    NodeStatus,
    NotFound,
    ObjectMeta,
    Registry,
    StoreUnavailable,
    utcnow,
)
from apis._registry import kind_prefix
from store.process import process_gone, process_tag

from ._lease import LeaseKeeper
from ._messages import LeaseLost, Post

#: Annotation of a Node: the process of the agent that registered it (see the module docstring).
AGENT_PROCESS = "balsam.io/agent-process"

#: Node heartbeat is refreshed at least this often (seconds) even when nothing changes.
HEARTBEAT_INTERVAL = 30.0

#: (busy cpus, busy gpus, occupancy, job names) of what holds the node.
Usage = tuple[list[int], list[int], float, list[str]]


class NodeReporter:
    def __init__(self, registry: Registry, namespace: str, name: str, spec: NodeSpec, lease: LeaseKeeper,
                 post: Post, log: logging.Logger, *, report_interval: float, register_timeout: float) -> None:
        self.registry = registry
        self.store: st.Store = registry.store
        self.namespace = namespace
        self.name = name
        self.spec = spec
        self.lease = lease
        self.post = post
        self.log = log
        self.report_interval = report_interval
        self.register_timeout = register_timeout
        self.node: Node | None = None
        self.dirty = True  # usage changed since the last write
        self.last_report = 0.0
        self.writes = 0
        self.tag = process_tag()
        # The claim window's acknowledgement (``_claims.py``): kept in every status written.
        self.window_ack = 0
        self.claims_through = 0

    def _object(self) -> Node:
        meta = ObjectMeta(name=self.name, namespace=self.namespace,
                          annotations={AGENT_PROCESS: self.tag} if self.tag else {})
        return Node(metadata=meta, spec=self.spec.model_copy(),
                    status=NodeStatus(heartbeat=utcnow(), window_ack=self.window_ack,
                                      claims_through=self.claims_through))

    def _take_over_dead(self, node_key: str) -> bool:
        """Revoke the lease of the Node at ``node_key`` if the agent that registered it ran on
        this machine and is gone; True when it did (register again at once)."""
        kv = self.store.get(node_key)
        if kv is None or not kv.lease:
            return False
        try:
            tag = Registry.decode(Node, kv).metadata.annotations.get(AGENT_PROCESS, "")
        except Exception:  # noqa: BLE001 - an unreadable Node: wait for its lease as before
            return False
        if not process_gone(tag):
            return False
        self.log.warning("node %s is still registered by an agent of this machine that is gone (%s); revoking "
                         "its lease instead of waiting for it to expire", self.name, tag)
        try:
            self.store.lease_revoke(kv.lease)
        except st.LeaseNotFound:
            pass  # expired meanwhile
        return True

    def register(self) -> None:
        """Create the Node under the lease. If a Node of that name exists (a killed agent's,
        whose lease has not expired yet), wait up to ``register_timeout`` for it to vanish; a
        live agent keeps it, and we refuse to start (AlreadyExists)."""
        deadline = time.monotonic() + self.register_timeout
        node_key = f"{kind_prefix(Node, self.namespace)}{self.name}"
        while True:
            try:
                self.node = self.registry.create(self._object(), lease=self.lease.lease)
                return
            except st.LeaseNotFound:
                # The lease ran out before the Node was written under it (the store stalled
                # longer than the TTL): a new lease, and again, while the deadline allows.
                if time.monotonic() >= deadline:
                    raise
                self.log.warning("lease %d expired before node %s was registered under it; again",
                                 self.lease.lease, self.name)
                self.lease.grant()
                continue
            except AlreadyExists:
                if self._take_over_dead(node_key):
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    self.lease.give_up()
                    raise AlreadyExists(Node.resource_name(), self.name) from None
                self.log.info("node %s is still registered (an earlier agent's lease); waiting up to %.0fs",
                              self.name, left)
                w = self.store.watch(node_key)
                try:
                    if self.store.get(node_key) is not None:
                        end = time.monotonic() + left
                        while time.monotonic() < end:
                            evs = w.poll(min(1.0, max(0.0, end - time.monotonic())))
                            if any(e.type == "DELETE" and e.kv.key == node_key for e in evs):
                                break
                finally:
                    w.close()

    def reregister(self) -> None:
        """Our lease expired under us: the Node vanished; come back under a new lease."""
        self.lease.grant()
        try:
            self.node = self.registry.create(self._object(), lease=self.lease.lease)
        except AlreadyExists:
            cur = self.registry.get(Node, self.name, self.namespace)
            new = cur.model_copy(deep=True)
            new.spec = self._object().spec
            self.node = self.registry.update_many([(cur, new)], lease=self.lease.lease)[0]
        self.dirty = True

    def due(self) -> float:
        """When the next status write is due (monotonic time)."""
        t = self.last_report + HEARTBEAT_INTERVAL
        if self.dirty:
            t = min(t, self.last_report + self.report_interval)
        return t

    def maybe_report(self, usage: Usage, *, stopping: bool, force: bool = False) -> None:
        now = time.monotonic()
        due_usage = self.dirty and now >= self.last_report + self.report_interval
        due_heartbeat = now >= self.last_report + HEARTBEAT_INTERVAL
        if not (force or due_usage or due_heartbeat) or self.node is None:
            return
        cpus, gpus, occ, names = usage
        self.last_report = now
        self.dirty = False
        for _ in range(3):
            node = self.node
            new = node.model_copy()
            new.status = NodeStatus(busy_cpus=cpus, busy_gpus=gpus, occupancy=occ, running_jobs=names,
                                    heartbeat=utcnow(), conditions=node.status.conditions,
                                    window_ack=self.window_ack, claims_through=self.claims_through)
            try:
                self.node = self.registry.update_many([(node, new)], lease=self.lease.lease)[0]
                self.writes += 1
                return
            except Conflict:
                fresh = self.registry.try_get(Node, self.name, self.namespace)
                if fresh is None:
                    break
                self.node = fresh
            except (NotFound, st.LeaseNotFound):
                break
            except StoreUnavailable as e:
                self.log.warning("node status write failed: %s", e)
                self.dirty = True
                return
        if not stopping:
            self.post(LeaseLost(self.lease.lease))
