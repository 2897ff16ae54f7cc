"""``balsamctl up``: controllers and node agents on this machine, with progress."""

from __future__ import annotations

import os

import click

from .._context import common_options, get_ctx
from .._up import DEFAULT_WALL_TIME_MIN, UpOptions, run_up


@click.command("up")
@click.option("--nodes", type=click.IntRange(min=1), default=1, show_default=True, help="Node agents to start.")
@click.option("--cpus", type=click.IntRange(min=1), default=None,
              help="CPUs each node offers (default: this machine's).")
@click.option("--gpus", type=click.IntRange(min=0), default=0, show_default=True, help="GPUs each node offers.")
@click.option("--until-done", is_flag=True,
              help="Exit when every job is JOB_FINISHED or FAILED (1 if any FAILED), or when none can progress.")
@click.option("--wall-time-min", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_WALL_TIME_MIN,
              show_default=True, metavar="MINUTES",
              help="Wall time of the allocation; when it ends, up submits it again.")
@click.option("--lease-ttl", type=click.FloatRange(min=1.0), default=10.0, show_default=True, metavar="S",
              help="Lease of the leader and of each Node: how long a dead process holds its place.")
@common_options
def command(nodes: int, cpus: int | None, gpus: int, until_done: bool, wall_time_min: float, lease_ttl: float) -> int:
    """Run this site's jobs here: a controller manager, and N node agents as a BatchJob of the
    local scheduler (<host>-up; on a Slurm site too).

    \b
    balsamctl apply -f manifests/hello.yaml && balsamctl up --until-done
    balsamctl up --nodes 2 --cpus 64 --gpus 8      # two simulated 64-CPU, 8-GPU nodes

    Progress (jobs per state, jobs/s) is shown until Ctrl-C, which deletes the BatchJob
    (its agents stop, marking running jobs RUN_TIMEOUT) and stops the controller manager
    (logs in <site>/logs, the agents' output in <site>/logs/batch/<host>-up.out). At its wall
    time the allocation is submitted again. With --until-done the exit status is 0 when every
    job finished, 1 when one FAILED, when the remaining jobs cannot progress (Unschedulable,
    suspended, or waiting on parents that failed; the reason is printed) or when the
    controller manager or the allocation failed, and 130 when interrupted.
    """
    ctx = get_ctx()
    cfg = ctx.site_config(required=True)  # agents run jobs in the site's data/ directory
    assert cfg is not None
    opts = UpOptions(site=cfg.path, store_url=ctx.resolved_store_url(), namespace=ctx.namespace, nodes=nodes,
                     cpus=cpus or os.cpu_count() or 1, gpus=gpus, until_done=until_done, lease_ttl=lease_ttl,
                     site_name=cfg.name, wall_time_min=wall_time_min)
    return run_up(opts, lambda: ctx.registry)
