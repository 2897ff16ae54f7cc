"""Why a job is not moving: the condition types and reasons a Job carries, and the words they
use, shared by the controllers that write them and the CLI that reads them.

Written by the controllers (only when they change, in the same batched write as the steps):

========================  ==================================  ===============================
type                      reason                              written by
========================  ==================================  ===============================
Waiting                   WaitingForParents                   dependency
Waiting                   WaitingForCapacity, HeldByPriority  placement
Waiting                   NoNodes                             placement (no node registered)
Unschedulable             NeverFits                           placement
ParentFailed              ParentFailed                        dependency (onParentFailure Wait)
ParentMissing             ParentNotFound                      dependency
TransferStalled, ...      (the TransferTask's)                transfer
Failed                    DependencyCycle, ParentFailed,      dependency, hook
                          RetriesExhausted
========================  ==================================  ===============================

Computed by the reader (``kubectl_like/reasons.py``), since nothing may be alive to write them:
``ControllerManager``/``NoControllerManager`` (no holder of the namespace's leader lease),
``NodeAgents``/``NoNodeAgent`` (no Node registered), ``Suspended``/``Suspended``,
``Waiting``/``WaitingForTransfer`` (the TransferTask's state and age).
"""

from __future__ import annotations

#: Condition types, most telling first: what ``get -o wide`` shows under REASON (a stored
#: problem that lasts whatever runs, before what a missing component explains).
PRIORITY: tuple[str, ...] = (
    "Failed",
    "Unschedulable",
    "ParentFailed",
    "ParentMissing",
    "ControllerManager",
    "NodeAgents",
    "TransferAuthRequired",
    "TransferStalled",
    "Suspended",
    "Waiting",
)


def needs_text(cpus: int, gpus: int, num_nodes: int, node_packing_count: int) -> str:
    """What a job asks of the nodes, in words: ``needs 4 idle CPUs``."""
    gp = f" and {gpus} idle GPU{'s' if gpus != 1 else ''}" if gpus else ""
    if num_nodes > 1:
        return f"needs {num_nodes} idle nodes (whole) with {cpus} CPU{'s' if cpus != 1 else ''}{gp.replace(' idle', '')} each"
    share = f" (1/{node_packing_count} of a node)" if node_packing_count > 1 else ""
    return f"needs {cpus} idle CPU{'s' if cpus != 1 else ''}{gp} on one node{share}"


def no_manager_text(namespace: str) -> str:
    return (f"no controller manager is running for namespace {namespace} (nobody holds its leader lease), so "
            "nothing moves jobs on: start one with 'balsamctl up' or 'balsamctl controller-manager'")


NO_NODE_AGENT = ("no node agent is running (no Node is registered), so no job can be placed on a node: start "
                 "some with 'balsamctl up' or submit a BatchJob")
