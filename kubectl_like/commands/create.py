"""``balsamctl create -f FILE`` and ``balsamctl create job ...`` (Balsam's ``job create``)."""

from __future__ import annotations

from typing import Any

import click

from apis import API_VERSION, KINDS, Job, parse_object
from apis._balsam import app_name_of, generate_prefix
from apis._sites import place_jobs

from .._context import common_options, get_ctx
from .._errors import CLIError
from ..printers import PrintOptions, object_ref, printer_for
from ._shared import DRY_RUN, dry_run_suffix, filename_options, load_manifests, write_manifests


def parse_pairs(values: tuple[str, ...], flag: str) -> dict[str, str]:
    """``("k=v", ...)`` → dict; ``k:v`` is accepted too (Balsam's older form)."""
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep:
            key, sep, value = item.partition(":")
        if not sep or not key.strip():
            raise CLIError(f'invalid {flag} "{item}": expected KEY=VALUE')
        out[key.strip()] = value
    return out


@click.group("create", invoke_without_command=True)
@filename_options
@DRY_RUN
@click.option("-o", "--output", type=click.Choice(["name", "yaml", "json"]), default=None, help="Print the created objects.")
@common_options
@click.pass_context
def command(cctx: click.Context, filenames: tuple[str, ...], recursive: bool, dry_run: str,
            output: str | None) -> None:
    """Create objects from manifests (-f), or a job from flags (create job ...).

    Unlike apply, an object that already exists is an error, and generateName is allowed.
    """
    if cctx.invoked_subcommand is not None:
        if filenames:
            raise click.UsageError("-f cannot be combined with a subcommand", cctx)
        cctx.meta["create.dry_run"] = dry_run
        cctx.meta["create.output"] = output
        return
    if not filenames:
        raise click.UsageError("must specify -f FILE|DIR|- or a kind (create job ...)", cctx)
    ctx = get_ctx()
    manifests = load_manifests(ctx, filenames, recursive, require_name=False, verb="create")
    write_manifests(ctx, manifests, create_only=True, dry_run=dry_run, output=output)


@command.command("job")
@click.option("-a", "--app", required=True,
              help="The App to run: its name, or the ApplicationDefinition class name it was registered "
              "from (Hello finds the App 'hello'), as Job(app_id=...) resolves it.")
@click.option("--site-name", default=None, metavar="SITE",
              help="The Site to run on, by name (Balsam's `job create --site`): the job goes to that "
              "Site's namespace unless -n names one.")
@click.option("-w", "--workdir", required=True, help="Working directory, relative to the site's data/.")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="Command template parameter.")
@click.option("-t", "--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Tag (label) of the job.")
@click.option("--num-nodes", type=click.IntRange(min=1), default=None, help="Nodes (default 1).")
@click.option("--ranks-per-node", type=click.IntRange(min=1), default=None, help="MPI ranks per node (default 1).")
@click.option("--threads-per-rank", type=click.IntRange(min=1), default=None, help="Threads per rank (default 1).")
@click.option("--threads-per-core", type=click.IntRange(min=1), default=None, help="Threads per core (default 1).")
@click.option("--gpus-per-rank", type=click.FloatRange(min=0), default=None, help="GPUs per rank (default 0).")
@click.option("--node-packing-count", type=click.IntRange(min=1), default=None,
              help="How many such jobs may share one node (default 1).")
@click.option("--wall-time-min", type=click.FloatRange(min=0), default=None, help="Wall time limit in minutes.")
@click.option("--launch-param", "launch_params", multiple=True, metavar="KEY=VALUE",
              help="Extra launcher parameter.")
@click.option("--parent", "parents", multiple=True, metavar="NAME", help="A job that must finish first.")
@click.option("--priority", type=int, default=None, help="Higher runs first (default 0).")
@click.option("--name", default=None, help="Job name (default: generated from the app's name).")
@DRY_RUN
@click.option("-o", "--output", type=click.Choice(["name", "yaml", "json"]), default=None, help="Print the created job.")
@common_options
@click.pass_context
def create_job(cctx: click.Context, app: str, site_name: str | None, workdir: str, params: tuple[str, ...], tags: tuple[str, ...],
               num_nodes: int | None, ranks_per_node: int | None, threads_per_rank: int | None,
               threads_per_core: int | None, gpus_per_rank: float | None, node_packing_count: int | None,
               wall_time_min: float | None, launch_params: tuple[str, ...], parents: tuple[str, ...],
               priority: int | None, name: str | None, dry_run: str, output: str | None) -> None:
    """Create one job (Balsam's `balsam job create`).

    \b
    balsamctl create job --app hello -w demo/1 -p name=world --tag experiment=foo
    balsamctl create job --site-name laptop --app Hello -w demo/hello2 -p say_hello_to=world2
    """
    ctx = get_ctx()
    parent_meta = cctx.parent.meta if cctx.parent is not None else {}
    if dry_run == "none":
        dry_run = parent_meta.get("create.dry_run", "none")
    output = output or parent_meta.get("create.output")
    resources: dict[str, Any] = {
        k: v
        for k, v in {
            "numNodes": num_nodes,
            "ranksPerNode": ranks_per_node,
            "threadsPerRank": threads_per_rank,
            "threadsPerCore": threads_per_core,
            "gpusPerRank": gpus_per_rank,
            "nodePackingCount": node_packing_count,
            "wallTimeMin": wall_time_min,
        }.items()
        if v is not None
    }
    if launch_params:
        resources["launchParams"] = parse_pairs(launch_params, "--launch-param")
    app = app_name_of(app)  # "Hello" (an ApplicationDefinition's class) → the App "hello", as in Python
    spec: dict[str, Any] = {"app": app, "workdir": workdir, "parameters": parse_pairs(params, "--param")}
    if site_name is not None:
        if not site_name.strip():
            raise CLIError("--site-name must not be empty")
        spec["site"] = site_name
    if resources:
        spec["resources"] = resources
    if parents:
        spec["parents"] = list(parents)
    if priority is not None:
        spec["priority"] = priority
    meta: dict[str, Any] = {"namespace": ctx.namespace, "labels": parse_pairs(tags, "--tag")}
    if name:
        meta["name"] = name
    else:
        meta["generateName"] = generate_prefix(app)
    job = parse_object({"apiVersion": API_VERSION, "kind": Job.KIND, "metadata": meta, "spec": spec}, KINDS)
    if site_name is not None and not ctx.namespace_flag:
        place_jobs(ctx.registry, [job])  # into the Site's namespace, as Job(site_name=...).save() does
    if dry_run == "client":
        created = job.model_copy(deep=True).ensure_identity()
    else:
        created = ctx.registry.create(job, dry_run=dry_run == "server")
    if output:
        click.echo(printer_for(output, Job, PrintOptions()).render([created], single=True), nl=False)
    else:
        click.echo(f"{object_ref(created)} created{dry_run_suffix(dry_run)}")
