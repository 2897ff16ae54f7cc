"""Leader election on a store lease: one active controller manager per site.

The leader holds ``/leases/controller-manager/<namespace>`` under a store lease it keeps
alive; a standby watches that key and takes over when it vanishes (the leader's process
died and its lease expired, or it stepped down). Losing the lease stops the leader's
controllers at once, so two managers never act together for longer than a keepalive.

A store outage (etcd down, a full disk under SQLite) is waited out, never fatal: a standby
retries with backoff; a leader that cannot renew its lease steps down before the lease can
have expired (two thirds of the TTL after its last renewal), so that a standby that takes
over never overlaps with it, and then campaigns again like any standby. One log line says
what it waits for, one says when the store answers again.

A holder that died on this machine is not waited for. The key's value is the holder's
identity and, on a second line, its process: ``<boot id>:<pid namespace>:<pid>:<start
ticks>``. A candidate in the same kernel boot and pid namespace whose holder's pid no longer
runs with that start time (``kill -9``, a crash; a restarted ``up`` on the same login node is
the common case) revokes the dead holder's lease and takes over at once instead of waiting
out the TTL. Safe: a process that does not exist cannot act or renew, and the lease revoked
is that process's own (a live standby that won the race holds another lease). A holder on
another machine, or in another container, is waited for as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import store as st
from store.process import process_gone, process_tag

from ._backoff import STORE_TROUBLE, Backoff

__all__ = ["LEASE_PREFIX", "STORE_TROUBLE", "LeaderElector", "holder_is_dead", "process_tag"]

log = logging.getLogger(__name__)

LEASE_PREFIX = "/leases/controller-manager/"


#: Re-exported: the holder's identity in the lease's value (``store/process.py``).
holder_is_dead = process_gone


class LeaderElector:
    def __init__(self, store: st.Store, namespace: str, identity: str, ttl: float = 15.0) -> None:
        self.store = store
        self.key = f"{LEASE_PREFIX}{namespace}"
        self.identity = identity
        self.ttl = ttl
        self.lease_id = 0
        self.renewed_at = 0.0  # monotonic time of the last grant or keepalive that succeeded

    def holder(self) -> str | None:
        kv = self.store.get(self.key)
        return kv.value.decode().split("\n", 1)[0] if kv is not None else None

    def try_acquire(self) -> bool:
        t0 = time.monotonic()
        lease = self.store.lease_grant(self.ttl)
        value = f"{self.identity}\n{process_tag()}".encode()
        res = self.store.txn([st.Compare.absent(self.key)], [st.Put(self.key, value, lease)])
        if res.succeeded:
            self.lease_id = lease
            self.renewed_at = t0
            return True
        self.store.lease_revoke(lease)
        return False

    def wait_for_leadership(self, stop: threading.Event) -> bool:
        """Block until this process leads (True) or ``stop`` is set (False); a store outage
        is waited out with backoff."""
        backoff = Backoff(f"leader election of {self.key}")
        while not stop.is_set():
            try:
                if self._campaign(stop):
                    backoff.ok()
                    return True
                backoff.ok()
            except STORE_TROUBLE as e:
                backoff.failed(e, stop)
        return False

    def _campaign(self, stop: threading.Event) -> bool:
        rev = self.store.current_revision()
        if self.try_acquire():
            log.info("%s became leader", self.identity)
            return True
        kv = self.store.get(self.key)
        if kv is None:
            return False  # gone meanwhile: try again
        holder, _, tag = kv.value.decode(errors="replace").partition("\n")
        if kv.lease and holder_is_dead(tag):
            log.warning("the leader %s is gone (its process on this machine exited); revoking its lease "
                        "instead of waiting up to %gs for it to expire", holder, self.ttl)
            try:
                self.store.lease_revoke(kv.lease)
            except st.LeaseNotFound:
                pass  # expired meanwhile
            return False  # campaign again at once
        log.info("standing by: %s leads", holder)
        with self.store.watch(self.key, rev + 1) as w:
            while not stop.is_set():
                try:
                    events = w.poll(min(1.0, self.ttl / 3))
                except st.Compacted:
                    return False  # look again
                if any(e.type == "DELETE" for e in events):
                    return False
                if not events and self.store.get(self.key) is None:
                    return False
        return False

    def keep_leading(self, stop: threading.Event, on_lost: Callable[[], None],
                     term_over: threading.Event | None = None) -> None:
        """Refresh the lease every ttl/3 until ``stop`` (or ``term_over``); call ``on_lost``
        when the lease is gone, or when it could not be renewed for 2/3 of its TTL (the store
        is away: the lease may expire before it answers, so stop acting now)."""
        over = term_over or threading.Event()
        lease_id = self.lease_id  # this term's lease: a later term's is not this thread's business
        failing = False
        while not stop.wait(self.ttl / 3) and not over.is_set():
            try:
                t0 = time.monotonic()
                self.store.lease_keepalive(lease_id)
                self.renewed_at = t0
                if failing:
                    log.warning("%s renewed its leader lease again", self.identity)
                failing = False
            except st.LeaseNotFound:
                if not over.is_set():
                    log.warning("%s lost its leader lease; stepping down", self.identity)
                    on_lost()
                return
            except st.StoreError as e:
                if not failing:
                    log.warning("cannot renew the leader lease (%s); stepping down if it is not renewed "
                                "within %.1fs", e, self.ttl * 2 / 3)
                failing = True
                if time.monotonic() - self.renewed_at >= self.ttl * 2 / 3 and not over.is_set():
                    log.warning("%s could not renew its leader lease for %.1fs; stepping down", self.identity,
                                time.monotonic() - self.renewed_at)
                    on_lost()
                    return

    def step_down(self) -> None:
        if self.lease_id:
            try:
                self.store.lease_revoke(self.lease_id)
            except st.StoreError:
                pass
            self.lease_id = 0
