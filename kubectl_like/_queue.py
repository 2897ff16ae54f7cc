"""``balsamctl queue submit|partitions``: batch allocations (BatchJobs) by hand.

``queue submit -n NODES -t MINUTES [-q QUEUE] [-A PROJECT] [--selector k=v]`` creates a
BatchJob (Balsam's ``balsam queue submit``); the batch reconciler submits it to the site's
scheduler. ``get batchjobs``, ``describe batchjob NAME`` and ``delete batchjob NAME`` (which
cancels it in the scheduler) work like for jobs. ``queue partitions`` asks the site's
scheduler for its partitions and nodes.

``-n`` means nodes here (as in Balsam), so the namespace is ``--namespace`` (or the group's
``balsamctl -n NS queue ...``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from apis import BatchJob, BatchJobSpec, NotFound, ObjectMeta, Site, parse_selector

from ._context import Ctx, _setter, get_ctx
from ._errors import CLIError
from .commands._shared import DRY_RUN, dry_run_suffix
from .commands.create import parse_pairs
from .printers import format_table, object_ref, printer_for

F = TypeVar("F", bound=Callable[..., Any])


def _options(fn: F) -> F:
    """``--site``, ``--store`` and ``--namespace`` (long form only: ``-n`` is the node count)."""
    opts = [
        click.option("--site", metavar="DIR", default=None, expose_value=False, is_eager=True,
                     callback=_setter("site"), help="Site directory (else BALSAM_SITE_PATH, else cwd and parents)."),
        click.option("--store", metavar="URL", default=None, expose_value=False, is_eager=True,
                     callback=_setter("store_url"), help="Store URL (else BALSAM_STORE, else the site's)."),
        click.option("--namespace", metavar="NS", default=None, expose_value=False, is_eager=True,
                     callback=_setter("namespace_flag"), help="Namespace (else the site's, else 'default')."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def resolve_site(ctx: Ctx, name: str | None) -> Site:
    """The Site to submit to: ``--site-name``, else this site directory's, else the only one."""
    reg, ns = ctx.registry, ctx.namespace
    if name is None:
        cfg = ctx.site_config(required=False)
        if cfg is not None and reg.try_get(Site, cfg.name, ns) is not None:
            name = cfg.name
        else:
            sites, _ = reg.list(Site, ns)
            if len(sites) == 1:
                return sites[0]
            raise CLIError(f"{'no Site' if not sites else 'several Sites'} in namespace {ns}: pass --site-name")
    site = reg.try_get(Site, name, ns)
    if site is None:
        raise NotFound(Site.resource_name(), name)
    return site


def check_queue_limits(ctx: Ctx, site: Site, queue: str | None, num_nodes: int, wall_time_min: float) -> None:
    """A site that lists its queues (``spec.queues``, from ``init --template``) takes only
    those, within their node, wall-time and queued-jobs limits (Balsam's ``allowed_queues``)."""
    queues = site.spec.queues
    if not queues:
        return
    known = ", ".join(queues)
    if queue is None:
        raise CLIError(f"site {site.name} has the queues {known}: pass -q QUEUE")
    limits = queues.get(queue)
    if limits is None:
        raise CLIError(f'queue "{queue}" is not one of site {site.name}\'s queues ({known})')
    if num_nodes > limits.max_nodes:
        raise CLIError(f"queue {queue} allows at most {limits.max_nodes} node(s), not {num_nodes}")
    if wall_time_min > limits.max_wall_time_min:
        raise CLIError(f"queue {queue} allows at most {limits.max_wall_time_min:g} minutes, not {wall_time_min:g}")
    waiting = [b for b in ctx.registry.list(BatchJob, ctx.namespace)[0]
               if b.spec.queue == queue and b.spec.site in (None, site.name)
               and b.status.state in ("pending_submission", "queued")]
    if len(waiting) >= limits.max_queued_jobs:
        raise CLIError(f"queue {queue} allows at most {limits.max_queued_jobs} queued BatchJob(s): "
                       f"{len(waiting)} already wait")


@click.group("queue")
def command() -> None:
    """Batch allocations: submit a BatchJob, list the scheduler's partitions.

    \b
    balsamctl queue submit -n 2 -t 30 [-q debug] [-A myproject] [--selector experiment=foo]
    balsamctl get batchjobs | describe batchjob NAME | delete batchjob NAME
    """


@command.command("submit")
@click.option("-n", "--num-nodes", type=click.IntRange(min=1), required=True, help="Nodes to allocate.")
@click.option("-t", "--wall-time-min", type=click.FloatRange(min=0, min_open=True), required=True, metavar="MINUTES",
              help="Wall time of the allocation, in minutes.")
@click.option("-q", "--queue", default=None, help="Scheduler queue (Slurm partition).")
@click.option("-A", "--project", default=None, help="Project (account) to charge.")
@click.option("--selector", "selectors", multiple=True, metavar="KEY=VALUE",
              help="Only jobs with these labels run in it (repeatable, or k=v,k2=v2).")
@click.option("--job-mode", type=click.Choice(["mpi", "serial"]), default="mpi", show_default=True)
@click.option("-x", "--optional-param", "optional", multiple=True, metavar="KEY=VALUE",
              help="Extra scheduler option, e.g. -x qos=debug (sbatch --qos=debug).")
@click.option("--site-name", default=None, help="Site to submit to (default: this site directory's).")
@click.option("--name", default=None, help="BatchJob name (default: generated from the site's name).")
@DRY_RUN
@click.option("-o", "--output", type=click.Choice(["name", "yaml", "json"]), default=None,
              help="Print the created BatchJob.")
@_options
def submit(num_nodes: int, wall_time_min: float, queue: str | None, project: str | None,
           selectors: tuple[str, ...], job_mode: str, optional: tuple[str, ...], site_name: str | None,
           name: str | None, dry_run: str, output: str | None) -> None:
    """Create a BatchJob: the batch reconciler submits it to the site's scheduler."""
    ctx = get_ctx()
    # Every flag is checked before anything is read or written.
    selector: dict[str, str] = {}
    for text in selectors:
        for req in parse_selector(text).requirements:
            if req.op not in ("=", "==") or len(req.values) != 1:
                raise CLIError(f'invalid --selector "{text}": only KEY=VALUE terms select jobs for a BatchJob')
            selector[req.key] = next(iter(req.values))
    params = parse_pairs(optional, "--optional-param")
    bj = BatchJob(
        metadata=ObjectMeta(name=name, generate_name=None if name else "batchjob-"),
        spec=BatchJobSpec(num_nodes=num_nodes, wall_time_min=wall_time_min, queue=queue, project=project,
                          job_mode=job_mode, selector=selector, optional_params=params),  # type: ignore[arg-type]
    )
    site = resolve_site(ctx, site_name)
    check_queue_limits(ctx, site, queue, num_nodes, wall_time_min)
    bj.metadata.namespace = ctx.namespace
    bj.spec.site = site.name
    if not name:
        bj.metadata.generate_name = f"{site.name}-"
    created = bj if dry_run != "none" else ctx.registry.create(bj)
    if dry_run == "server":
        ctx.registry.create(bj, dry_run=True)
    if output:
        click.echo(printer_for(output, BatchJob).render([created], single=True), nl=False)
    else:
        click.echo(f"{object_ref(created) if created.name else 'batchjob.balsam.io/' + bj.metadata.generate_name + '*'} "
                   f"created{dry_run_suffix(dry_run)}")


@command.command("partitions")
@click.option("--site-name", default=None, help="Site whose scheduler to ask (default: this site directory's).")
@_options
def partitions(site_name: str | None) -> None:
    """The scheduler's partitions (queues): nodes, idle nodes, CPUs per node, time limit."""
    from controllers.batch import SchedulerError, plugin_for

    site = resolve_site(get_ctx(), site_name)
    try:
        parts = plugin_for(site).partitions()
    except SchedulerError as e:
        raise CLIError(e.message) from None
    rows = [[p.name + ("*" if p.default else ""), str(p.nodes), str(p.idle_nodes), str(p.cpus_per_node),
             p.max_time, "up" if p.available else "down"] for p in parts]
    text, _ = format_table(["PARTITION", "NODES", "IDLE", "CPUS", "TIMELIMIT", "AVAIL"], rows)
    click.echo(text, nl=False)
