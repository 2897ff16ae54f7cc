"""``balsamctl top nodes|jobs``: kubectl top's two views — how full each node is, and which
jobs have been running longest (read from the stored objects, as JSON)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from apis import Job, JobState, Node, Selector, parse_selector
from apis._registry import object_key
from apis.analytics import load_raw

from .._context import common_options, get_ctx
from ..printers import format_table, human_duration


def _pct(used: int, total: int) -> str:
    return f"{100 * used // total}%" if total else "-"


@click.group("top", short_help="Node occupancy and the longest-running jobs.")
def command() -> None:
    """Display resource usage of nodes or jobs (kubectl top)."""


@command.command("nodes", short_help="CPU/GPU slots in use and occupancy per node.")
@click.option("--sort-by", "sort_by", type=click.Choice(["name", "occupancy", "cpu", "gpu"]), default="name",
              show_default=True)
@click.option("--no-headers", is_flag=True, help="Leave out the header line.")
@common_options
def top_nodes(sort_by: str, no_headers: bool) -> None:
    """Nodes of the namespace: slots in use, occupancy, jobs on them, last heartbeat.

    \b
    balsamctl top nodes --sort-by occupancy
    """
    ctx = get_ctx()
    now = datetime.now(UTC)
    nodes = load_raw(ctx.registry, Node.PLURAL, ctx.namespace)
    if not nodes:
        click.echo(f"No resources found in {ctx.namespace} namespace.", err=True)
        return
    rows = []
    for d in nodes:
        spec, status = d.get("spec", {}), d.get("status") or {}
        cpus, gpus = int(spec.get("cpus", 1)), int(spec.get("gpus", 0))
        bc, bg = len(status.get("busyCpus") or []), len(status.get("busyGpus") or [])
        hb = status.get("heartbeat")
        rows.append(((d["metadata"]["name"], float(status.get("occupancy", 0.0)), bc / cpus if cpus else 0,
                      bg / gpus if gpus else 0), [
            d["metadata"]["name"], spec.get("batchJob") or "<none>", f"{bc}/{cpus}", _pct(bc, cpus),
            f"{bg}/{gpus}", _pct(bg, gpus), f"{float(status.get('occupancy', 0.0)):.2f}",
            str(len(status.get("runningJobs") or [])),
            human_duration((now - datetime.fromisoformat(hb)).total_seconds()) if hb else "<none>"]))
    key = {"name": lambda r: r[0][0], "occupancy": lambda r: -r[0][1], "cpu": lambda r: -r[0][2],
           "gpu": lambda r: -r[0][3]}[sort_by]
    rows.sort(key=key)
    header = ["NAME", "BATCHJOB", "CPU(slots)", "CPU%", "GPU(slots)", "GPU%", "OCCUPANCY", "JOBS", "HEARTBEAT"]
    click.echo(format_table(None if no_headers else header, [r[1] for r in rows])[0], nl=False)


@command.command("jobs", short_help="Running jobs, longest-running first.")
@click.option("-l", "--selector", "selector", metavar="SELECTOR", default=None, help="Only jobs with these labels.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="At most this many rows.")
@click.option("--no-headers", is_flag=True, help="Leave out the header line.")
@common_options
def top_jobs(selector: str | None, limit: int, no_headers: bool) -> None:
    """RUNNING jobs of the namespace, longest-running first: app, nodes, run time, where.

    \b
    balsamctl top jobs -l experiment=xpcs --limit 5
    """
    ctx = get_ctx()
    sel: Selector = parse_selector(selector)
    reg, ns = ctx.registry, ctx.namespace
    names = reg.index_names(Job, "state", JobState.RUNNING.value, ns)
    now = datetime.now(UTC)
    found = []
    for i in range(0, len(names), 5000):
        for kv in reg.store.get_many([object_key(Job, ns, n) for n in names[i:i + 5000]]):
            if kv is None:
                continue
            d = json.loads(kv.value)
            if sel and not sel.matches(d["metadata"].get("labels") or {}):
                continue
            status = d.get("status") or {}
            start = status.get("startTime")
            since = (now - datetime.fromisoformat(start)).total_seconds() if start else 0.0
            found.append((since, d))
    if not found:
        click.echo(f"No running jobs found in {ctx.namespace} namespace.", err=True)
        return
    found.sort(key=lambda p: -p[0])
    rows = []
    for since, d in found[:limit]:
        spec, status = d["spec"], d.get("status") or {}
        res = spec.get("resources") or {}
        placement = status.get("placement") or {}
        rows.append([d["metadata"]["name"], spec["app"], str(res.get("numNodes", 1)),
                     f"{1 / res.get('nodePackingCount', 1):.2f}", human_duration(since),
                     ",".join(placement.get("nodes") or []) or "<none>"])
    header = ["NAME", "APP", "NODES", "OCCUPANCY", "RUNNING FOR", "ON"]
    click.echo(format_table(None if no_headers else header, rows)[0], nl=False)
    if len(found) > limit:
        click.echo(f"({len(found) - limit} more running; --limit to see them)", err=True)


