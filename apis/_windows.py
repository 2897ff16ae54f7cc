"""Claim windows (issue 19, eighth round; docs/design.md "Eighth round: agents acquire"): the
protocol by which placement lends a node to its own agent, which then starts single-node jobs
there itself (Balsam's ``session.acquire_jobs``), with no manager write per job.

* ``/claimwindows/<ns>/<node>`` holds ``"<epoch> open"`` or ``"<epoch> closed"``; only placement
  writes it, and each write takes the next epoch. An agent that advertises ``spec.acquires`` may
  claim while the key says ``open``: every claim's transaction compares the key's mod revision
  with the one the agent saw open, so a claim can never land after the window is closed.
* The agent acknowledges a close in its Node's status (``windowAck`` = the epoch,
  ``claimsThrough`` = the revision of its last job write). Placement's engine places on that
  node only once the ack names the closing epoch and its Job cache has seen ``claimsThrough``:
  then everything the agent started there is in the cache, and one writer at a time decides
  what starts on a node.
* The ``claimable`` Job index (:func:`claim_order`) lists the jobs an agent may look at, highest
  priority first and oldest first within a priority (its value sorts so), read keys-only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ._states import JobState

#: Prefix of the window keys (one per node, per namespace).
WINDOWS = "/claimwindows/"

#: States in which an unplaced single-node job may be claimed. CREATED with parents and
#: AWAITING_PARENTS are left out: their release needs the parents' states (placement
#: releases such a job once they finished, and it comes back here as PREPROCESSED).
CLAIMABLE_STATES = frozenset({JobState.CREATED, JobState.READY, JobState.PREPROCESSED, JobState.RESTART_READY})

_PRIORITY_BIAS = 1 << 40


def window_prefix(namespace: str) -> str:
    return f"{WINDOWS}{namespace}/"


def window_key(namespace: str, node: str) -> str:
    return f"{WINDOWS}{namespace}/{node}"


@dataclass(frozen=True, slots=True)
class Window:
    """A node's claim window as placement last wrote it."""

    epoch: int = 0
    open: bool = False

    def encode(self) -> bytes:
        return f"{self.epoch} {'open' if self.open else 'closed'}".encode()

    @staticmethod
    def decode(value: bytes | None) -> Window:
        """A missing or unreadable key is a closed window of epoch 0."""
        if not value:
            return Window()
        epoch, _, what = value.decode(errors="replace").partition(" ")
        try:
            return Window(int(epoch), what == "open")
        except ValueError:
            return Window()


def claim_order(priority: int, created: datetime | None) -> str:
    """The ``claimable`` index value of a job: fixed-width digits that sort by priority
    (highest first), then by creation time (oldest first)."""
    p = max(-_PRIORITY_BIAS + 1, min(_PRIORITY_BIAS - 1, priority))
    us = int(created.timestamp() * 1_000_000) if created is not None else 0
    return f"{_PRIORITY_BIAS - p:013d}.{max(0, us):017d}"
