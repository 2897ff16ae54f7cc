"""Data transfers (ARCHITECTURE.md §4, the seed's "Data Transfer"): three reconcilers.

* :class:`TransferBatcher` groups the items of waiting jobs into batched TransferTasks;
* :class:`TransferTaskReconciler` drives each task through its provider (``providers/``);
* :class:`TransferJobReconciler` moves jobs on (STAGED_IN, STAGED_OUT → JOB_FINISHED, or
  FAILED) when their items are done.
"""

from __future__ import annotations

from typing import Any

from apis import TransferTask

from ..hooks import HookRunner
from ._calls import ProviderCalls
from .batcher import TransferBatcher, item_key
from .jobs import TransferJobReconciler
from .providers import Factory, Providers
from .tasks import AUTH, STALLED, TransferTaskReconciler


def task_indexers() -> dict[str, Any]:
    """The TransferTask informer's indexes: ``item`` (direction/job/slot) and ``job``."""
    return {
        "item": lambda t: tuple({item_key(t.spec.direction, i.job, i.slot, i.job_uid) for i in t.spec.items}),
        "job": lambda t: tuple({i.job for i in t.spec.items}),
    }


def transfer_reconcilers(hooks: HookRunner, providers: Providers | dict[str, Factory] | None = None,
                         batch_size: int = 500, window: float = 0.5, max_wait: float = 2.0,
                         **task_options: Any) -> list[Any]:
    """The batcher, the task reconciler and the job reconciler, sharing one call pool."""
    if not isinstance(providers, Providers):
        providers = Providers(providers)
    return [
        TransferBatcher(batch_size=batch_size, window=window, max_wait=max_wait),
        TransferTaskReconciler(providers, ProviderCalls(), **task_options),
        TransferJobReconciler(hooks),
    ]


__all__ = [
    "AUTH",
    "STALLED",
    "ProviderCalls",
    "Providers",
    "TransferBatcher",
    "TransferJobReconciler",
    "TransferTask",
    "TransferTaskReconciler",
    "task_indexers",
    "transfer_reconcilers",
]
