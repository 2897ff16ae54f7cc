"""``balsamctl explain KIND[.FIELD...]``: a kind's fields from its pydantic schema, as
``kubectl explain`` shows a CRD (GROUP, KIND, VERSION, FIELD, DESCRIPTION, FIELDS with types).

The schema is the one ``balsamctl crds`` writes (``crds.structural`` over pydantic's JSON
Schema), so ``explain`` and the CRDs never disagree; the words are ``DESCRIPTIONS`` here (the
models carry none of their own).
"""

from __future__ import annotations

import textwrap
from typing import Any

from apis import API_VERSION, Resource, kind_for
from apis._meta import API_GROUP

from ._errors import CLIError
from .crds import structural

KIND_DESCRIPTIONS: dict[str, str] = {
    "Job": "A Balsam job: one run of an App's command (or Python class) in a working directory, with "
           "its resources, parents, transfers and retry policy. Its status follows the state machine "
           "CREATED → ... → JOB_FINISHED and says, in status.conditions, why it is waiting.",
    "App": "An application: the command template (or Python class) jobs run, its parameters and "
           "transfer slots.",
    "Site": "A Balsam site: a directory on an HPC system, its scheduler, launcher and transfer locations.",
    "BatchJob": "An allocation requested from the site's scheduler (Slurm, PBS or local); node agents run "
                "in it and register Nodes.",
    "Node": "A compute node offered by a running node agent: its CPUs and GPUs and what runs on them.",
    "TransferTask": "A batch of file transfers (stage-in or stage-out) for jobs, carried out by a provider "
                    "(Globus, file copy, HTTP).",
    "Event": "Something that happened to an object (a failure, a situation that needs attention). Repeats "
             "are counted; events expire after a time to live.",
}

#: ``Kind.path`` → what the field means (camelCase paths, as in YAML).
DESCRIPTIONS: dict[str, str] = {
    "apiVersion": f"The versioned schema of this object: {API_VERSION}.",
    "kind": "The kind of this object.",
    "metadata": "Standard object metadata: name, namespace, labels (Balsam's tags), annotations.",
    "spec": "What the user wants.",
    "status": "What the system observed and did; written by the controllers and node agents.",
    "Job.spec.app": "The App this job runs (its name, in the job's namespace).",
    "Job.spec.site": "The Site whose nodes run the job (default: the current site).",
    "Job.spec.workdir": "The working directory, relative to the site's data/ directory.",
    "Job.spec.parameters": "Values for the App's command template placeholders.",
    "Job.spec.data": "Free-form data kept with the job (Balsam's job.data).",
    "Job.spec.resources": "What one run needs: nodes, ranks, threads, GPUs, node packing, wall time.",
    "Job.spec.resources.numNodes": "Number of nodes the run spans (more than one: whole idle nodes only).",
    "Job.spec.resources.ranksPerNode": "MPI ranks started on each node.",
    "Job.spec.resources.threadsPerRank": "Threads of each rank (CPUs per rank, with threadsPerCore).",
    "Job.spec.resources.threadsPerCore": "Hardware threads per core: CPUs per node are "
                                         "ranksPerNode * threadsPerRank / threadsPerCore.",
    "Job.spec.resources.gpusPerRank": "GPUs each rank uses (fractions share a device).",
    "Job.spec.resources.nodePackingCount": "How many such jobs may share one node (occupancy 1/N each).",
    "Job.spec.resources.launchParams": "Extra options for the MPI launcher.",
    "Job.spec.resources.wallTimeMinutes": "Expected run time in minutes (0: unknown).",
    "Job.spec.resources.wallTimeMin": "Expected run time in minutes (0: unknown); used to size allocations.",
    "Job.spec.parents": "Jobs that must reach JOB_FINISHED before this one starts (no cycles).",
    "Job.spec.transfers": "Files to stage in or out: slot name → \"location-alias:/absolute/path\".",
    "Job.spec.priority": "Higher runs first when jobs wait for the same room.",
    "Job.spec.retry": "When and how often a failed or timed-out run is retried.",
    "Job.spec.retry.limit": "Retries after the first run (limit 2: at most 3 runs).",
    "Job.spec.retry.onExitCodes": "Exit codes that are retried (unset: any non-zero code).",
    "Job.spec.retry.backoffSeconds": "Seconds to wait before a retry.",
    "Job.spec.onParentFailure": "What a parent's failure does: Wait (Balsam's behaviour) or Fail this job too.",
    "Job.spec.suspend": "True holds the job: it is not placed on a node until set back to false.",
    "Job.status.state": "Where the job is in its life cycle (CREATED ... JOB_FINISHED, FAILED).",
    "Job.status.returnCode": "Exit code of the last run.",
    "Job.status.message": "What the last step said.",
    "Job.status.placement": "The node(s), CPUs and GPUs the job is bound to.",
    "Job.status.attempts": "How many times the job has been started.",
    "Job.status.conditions": "Why the job is waiting or failed: type, status, reason (CamelCase) and a "
                             "message in words, with the time it last changed.",
    "Job.status.history": "Every state transition: from, to, time, message and the component that made it.",
    "Job.status.observedGeneration": "The metadata.generation (spec version) the controllers last acted on.",
    "Job.status.lastUpdate": "When the status was last written.",
    "Job.status.startTime": "When the last run started.",
    "Job.status.endTime": "When the last run ended.",
    "Job.status.outputTail": "The last lines of the run's output.",
    "Job.status.result": "What a Python App's run() returned.",
    "Event.involvedObject": "The object this event is about.",
    "Event.reason": "Why it happened, in CamelCase (e.g. NeverFits, ParentFailed, RetriesExhausted).",
    "Event.message": "What happened, in words.",
    "Event.type": "Normal or Warning.",
    "Event.count": "How many times it happened.",
    "Event.firstTimestamp": "When it first happened.",
    "Event.lastTimestamp": "When it last happened.",
    "Event.reportingController": "The component that acted (a controller, the node agent).",
}


def _schema(kind: type[Resource]) -> dict[str, Any]:
    js = kind.model_json_schema(by_alias=True, mode="validation")
    return structural(js, js.get("$defs", {}))


def type_text(node: dict[str, Any]) -> str:
    """kubectl's ``<string>``, ``<integer>``, ``<Object>``, ``<[]string>``, ``<map[string]string>``."""
    t = node.get("type")
    if t == "array":
        inner = type_text(node.get("items") or {})
        return f"[]{inner}"
    if t == "object":
        if "properties" in node:
            return "Object"
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and extra.get("type") not in (None, "object"):
            return f"map[string]{type_text(extra)}"
        return "Object"
    if t is None:
        return "Object"
    return str(t)


def _describe(path: str, node: dict[str, Any]) -> str:
    return DESCRIPTIONS.get(path) or DESCRIPTIONS.get(path.split(".", 1)[-1] if "." in path else path) or \
        node.get("description", "") or "<empty>"


def _children(node: dict[str, Any]) -> dict[str, Any] | None:
    if node.get("type") == "array":
        node = node.get("items") or {}
    return node.get("properties")


def explain(target: str) -> str:
    """The text of ``balsamctl explain TARGET`` (``job``, ``job.spec.resources``, ``jobs.spec``)."""
    kind_name, _, field_path = target.partition(".")
    if kind_name == "":
        raise CLIError("you must specify the type of resource to explain, e.g. 'balsamctl explain job'")
    kind = kind_for(kind_name)
    node = _schema(kind)
    walked: list[str] = []
    for part in [p for p in field_path.split(".") if p] if field_path else []:
        props = _children(node) or {}
        if part not in props:
            where = ".".join([kind.SINGULAR, *walked])
            raise CLIError(f'field "{part}" does not exist in {where} (see \'balsamctl explain {where}\')')
        node = props[part]
        walked.append(part)
    version = API_VERSION.split("/", 1)[1]
    lines = [f"GROUP:      {API_GROUP}", f"KIND:       {kind.KIND}", f"VERSION:    {version}", ""]
    if walked:
        lines += [f"FIELD: {walked[-1]} <{type_text(node)}>", ""]
        desc = _describe(f"{kind.KIND}.{'.'.join(walked)}", node)
    else:
        desc = KIND_DESCRIPTIONS.get(kind.KIND, "<empty>")
    lines += ["DESCRIPTION:", *("    " + ln for ln in textwrap.wrap(desc, 76) or [""])]
    fields = _children(node)
    if fields:
        required = set(node.get("required", []) if node.get("type") != "array" else
                       (node.get("items") or {}).get("required", []))
        lines += ["", "FIELDS:"]
        for name, sub in fields.items():
            req = " -required-" if name in required else ""
            lines.append(f"  {name}\t<{type_text(sub)}>{req}")
            sub_desc = _describe(f"{kind.KIND}.{'.'.join([*walked, name])}", sub)
            enum = sub.get("enum") or (sub.get("items") or {}).get("enum")
            if enum:
                sub_desc += f" One of: {', '.join(str(v) for v in enum)}."
            lines += ["    " + ln for ln in textwrap.wrap(sub_desc, 76)]
            lines.append("")
        if lines[-1] == "":
            lines.pop()
    return "\n".join(lines) + "\n"
