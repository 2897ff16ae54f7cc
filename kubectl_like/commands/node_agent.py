"""``balsamctl nodeagent``: run the jobs bound to this node (``python -m nodeagent``), in the
foreground until SIGTERM/Ctrl-C."""

from __future__ import annotations

import click

from .._context import common_options, get_ctx
from .controller_manager import site_flags


@click.command("nodeagent")
@click.option("--name", default=None, help="Node name (default: this host's name).")
@click.option("--hostname", default=None, help="Host name MPI launchers use for this node (default: this host's).")
@click.option("--cpus", type=click.IntRange(min=1), default=None,
              help="CPUs to offer (default: this machine's); more simulates a bigger node.")
@click.option("--gpus", type=click.IntRange(min=0), default=0, show_default=True, help="GPUs to offer.")
@click.option("--gpu-platform", type=click.Choice(["nvidia", "amd", "intel"]), default="nvidia", show_default=True,
              help="How jobs are pinned to their GPUs: CUDA_VISIBLE_DEVICES, ROCR_VISIBLE_DEVICES, ZE_AFFINITY_MASK.")
@click.option("--gpu-tiles", type=click.IntRange(min=1), default=1, show_default=True, metavar="T",
              help="Tiles per GPU: --gpus counts tiles, named GPU.TILE (Aurora: --gpus 12 --gpu-tiles 2).")
@click.option("--batch-job", default=None, metavar="NAME", help="The BatchJob whose allocation this node is in.")
@click.option("--lease-ttl", type=click.FloatRange(min=1.0), default=10.0, show_default=True, metavar="S",
              help="Seconds after which the Node vanishes (and its jobs move on) if this agent stops.")
@click.option("--kill-grace", type=click.FloatRange(min=0.0), default=5.0, show_default=True, metavar="S",
              help="Seconds between SIGTERM and SIGKILL when a job is killed.")
@click.option("-v", "--verbose", is_flag=True, help="Also log to stderr.")
@common_options
def command(name: str | None, hostname: str | None, cpus: int | None, gpus: int, gpu_platform: str, gpu_tiles: int,
            batch_job: str | None, lease_ttl: float, kill_grace: float, verbose: bool) -> int:
    """Register this machine as a Node and run the jobs the placement reconciler binds to it.

    \b
    balsamctl nodeagent                              # this machine's CPUs, no GPUs
    balsamctl nodeagent --name n1 --cpus 64 --gpus 8 # pretend to be a bigger node
    srun -N 4 --ntasks-per-node=1 balsamctl nodeagent --batch-job bj-1
    """
    from nodeagent import main

    argv = [*site_flags(get_ctx()), "--gpus", str(gpus), "--gpu-platform", gpu_platform,
            "--gpu-tiles", str(gpu_tiles), "--lease-ttl", str(lease_ttl), "--kill-grace", str(kill_grace)]
    for flag, value in (("--name", name), ("--hostname", hostname), ("--batch-job", batch_job)):
        if value:
            argv += [flag, value]
    if cpus is not None:
        argv += ["--cpus", str(cpus)]
    if verbose:
        argv.append("-v")
    return main(argv)
