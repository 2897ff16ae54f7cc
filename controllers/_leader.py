"""Leader election on a store lease: one active controller manager per site.

The leader holds ``/leases/controller-manager/<namespace>`` under a store lease it keeps
alive; a standby watches that key and takes over when it vanishes (the leader's process
died and its lease expired, or it stepped down). Losing the lease stops the leader's
controllers at once, so two managers never act together for longer than a keepalive.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import store as st

log = logging.getLogger(__name__)

LEASE_PREFIX = "/leases/controller-manager/"


class LeaderElector:
    def __init__(self, store: st.Store, namespace: str, identity: str, ttl: float = 15.0) -> None:
        self.store = store
        self.key = f"{LEASE_PREFIX}{namespace}"
        self.identity = identity
        self.ttl = ttl
        self.lease_id = 0

    def holder(self) -> str | None:
        kv = self.store.get(self.key)
        return kv.value.decode() if kv is not None else None

    def try_acquire(self) -> bool:
        lease = self.store.lease_grant(self.ttl)
        res = self.store.txn([st.Compare.absent(self.key)], [st.Put(self.key, self.identity.encode(), lease)])
        if res.succeeded:
            self.lease_id = lease
            return True
        self.store.lease_revoke(lease)
        return False

    def wait_for_leadership(self, stop: threading.Event) -> bool:
        """Block until this process leads (True) or ``stop`` is set (False)."""
        while not stop.is_set():
            rev = self.store.current_revision()
            if self.try_acquire():
                log.info("%s became leader", self.identity)
                return True
            log.info("standing by: %s leads", self.holder())
            with self.store.watch(self.key, rev + 1) as w:
                while not stop.is_set():
                    events = w.poll(min(1.0, self.ttl / 3))
                    if any(e.type == "DELETE" for e in events):
                        break
                    if not events and self.store.get(self.key) is None:
                        break
        return False

    def keep_leading(self, stop: threading.Event, on_lost: Callable[[], None]) -> None:
        """Refresh the lease every ttl/3 until ``stop``; call ``on_lost`` if it is lost."""
        while not stop.wait(self.ttl / 3):
            try:
                self.store.lease_keepalive(self.lease_id)
            except st.LeaseNotFound:
                log.error("%s lost its leader lease", self.identity)
                on_lost()
                return
            except st.StoreError as e:
                log.warning("lease keepalive failed (%s); retrying", e)

    def step_down(self) -> None:
        if self.lease_id:
            try:
                self.store.lease_revoke(self.lease_id)
            except st.StoreError:
                pass
            self.lease_id = 0
