"""A recorded campaign, written straight into a store: N jobs of three Apps with a believable
hour of history (most finished, some failed with exit codes, some running, some waiting), the
nodes of one allocation with their occupancy. What ``bench dashboard`` reports on and shows,
and what the README's screenshots are taken of."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from apis import App, BatchJob, Job, Node, Registry
from apis._client import BULK_BATCH

APPS = {"simulate": 150.0, "analyze": 40.0, "publish": 8.0}  # app -> typical run seconds
NODES = 32
CAMPAIGN = timedelta(minutes=60)


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def job_doc(i: int, n: int, start: datetime, now: datetime, ns: str) -> dict[str, Any]:
    app = list(APPS)[i % 3]
    kind = i % 100
    run_len = APPS[app] * (0.5 + ((i * 7919) % 1000) / 1000)
    begin = start + (CAMPAIGN - timedelta(minutes=8)) * (i / max(1, n))
    doc: dict[str, Any] = {
        "metadata": {"name": f"{app}-{i:06d}", "namespace": ns,
                     "labels": {"experiment": "xpcs" if i % 2 == 0 else "cosmo", "batch": str(i % 10)}},
        "spec": {"app": app, "workdir": f"campaign/{i}", "parameters": {"x": str(i)},
                 "resources": {"numNodes": 1, "nodePackingCount": 4 if app != "simulate" else 1}},
    }
    if 6 <= kind < 8:  # still waiting
        doc["status"] = {"state": "CREATED"}
        return doc
    hist = [("CREATED", "READY", begin, "no parents"), ("READY", "STAGED_IN", begin, ""),
            ("STAGED_IN", "PREPROCESSED", begin, "")]
    ran = begin + timedelta(seconds=5)
    status: dict[str, Any] = {}
    if 3 <= kind < 6:  # running now, started in the last few minutes
        ran = now - timedelta(seconds=30 + (i % 600))
        hist.append(("PREPROCESSED", "RUNNING", ran, f"started on nid{i % NODES:05d}"))
        status = {"state": "RUNNING", "startTime": _iso(ran),
                  "placement": {"nodes": [f"nid{i % NODES:05d}"], "cpus": [i % 64], "batchJob": "alloc-1"}}
    else:
        end = ran + timedelta(seconds=run_len)
        hist.append(("PREPROCESSED", "RUNNING", ran, f"started on nid{i % NODES:05d}"))
        if kind < 3:
            code = (1, 2, 137)[i % 3]
            hist += [("RUNNING", "RUN_ERROR", end, f"exited with code {code}"),
                     ("RUN_ERROR", "FAILED", end, "no retry policy allows another attempt")]
            status = {"state": "FAILED", "returnCode": code,
                      "message": f"exited with code {code}; no retry policy allows another attempt",
                      "outputTail": f"step 41 of 100\nstep 42 of 100\nerror: input {i} out of range\n"}
        else:
            hist += [("RUNNING", "RUN_DONE", end, "exited with code 0"), ("RUN_DONE", "POSTPROCESSED", end, ""),
                     ("POSTPROCESSED", "STAGED_OUT", end, ""), ("STAGED_OUT", "JOB_FINISHED", end, "")]
            status = {"state": "JOB_FINISHED", "returnCode": 0}
        status.update(startTime=_iso(ran), endTime=_iso(end))
    status["history"] = [{"from": f, "to": t, "time": _iso(at), "message": m} for f, t, at, m in hist]
    doc["status"] = status
    return doc


def fill_campaign(reg: Registry, n: int, ns: str = "default", now: datetime | None = None) -> None:
    """Write the Apps, one running allocation of ``NODES`` nodes and ``n`` jobs into ``reg``."""
    now = now or datetime.now(UTC)
    start = now - CAMPAIGN
    reg.create_many([App.model_validate({"metadata": {"name": a, "namespace": ns},
                                         "spec": {"command": f"{a} --input {{{{ x }}}}", "parameters": {"x": {}}}})
                     for a in APPS])
    reg.create(BatchJob.model_validate({
        "metadata": {"name": "alloc-1", "namespace": ns},
        "spec": {"numNodes": NODES, "wallTimeMin": 120, "queue": "prod", "project": "datascience"},
        "status": {"state": "running", "schedulerId": "4242", "schedulerState": "RUNNING",
                   "startTime": _iso(start)}}))
    mgr = Job.objects.using(reg)
    for lo in range(0, n, BULK_BATCH):
        mgr.bulk_create([Job.model_validate(job_doc(i, n, start, now, ns)) for i in range(lo, min(n, lo + BULK_BATCH))])
    running: dict[str, list[str]] = {}
    for i in range(n):
        if 3 <= i % 100 < 6:
            running.setdefault(f"nid{i % NODES:05d}", []).append(f"{list(APPS)[i % 3]}-{i:06d}")
    nodes = []
    for k in range(NODES):
        name = f"nid{k:05d}"
        jobs = running.get(name, [])[:64]
        occ = min(1.0, sum(1.0 if j.startswith("simulate") else 0.25 for j in jobs))
        nodes.append(Node.model_validate({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"batchJob": "alloc-1", "hostname": name, "cpus": 64, "gpus": 4},
            "status": {"busyCpus": list(range(len(jobs))), "busyGpus": list(range(min(4, len(jobs)))),
                       "occupancy": occ, "runningJobs": jobs, "heartbeat": _iso(now)}}))
    reg.create_many(nodes)
