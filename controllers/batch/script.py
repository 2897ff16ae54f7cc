"""Batch scripts: one Jinja2 template per scheduler, overridable per site.

The scheduler is the BatchJob's ``spec.scheduler``, else the Site's. A site uses
``<site>/batch-template.sh.j2`` when that file exists and the BatchJob goes to the Site's own
scheduler, else the built-in template of the scheduler below (a ``local`` BatchJob of ``up``
on a Slurm site does not get the site's ``#SBATCH`` template). The Slurm template asks for whole nodes (``--exclusive``):
the agents pack jobs onto every CPU and GPU of a node, so nothing else may share it. The script must start one node agent per node of the
allocation with ``{{ agent_command }}`` (already shell-quoted) and ``--name`` unique per node;
the agents' Nodes then belong to the BatchJob (``--batch-job``).

Variables: ``batch_job``, ``namespace``, ``job_name`` (the scheduler's job name),
``num_nodes``, ``wall_time_min`` (whole minutes, at least 1), ``queue``, ``project``,
``job_mode``, ``selector``, ``optional_params``, ``site_name``, ``site_path``, ``store_url``,
``python``, ``cpus``/``gpus`` (the BatchJob's ``nodeSize``, else the Site's ``nodeDefaults``
when set, else None: the agent counts the node's own CPUs and offers no GPUs), ``scheduler``,
``agent_command`` (with ``--cpus``/``--gpus`` when those are set, ``--gpu-platform``/``--gpu-tiles``
from the Site's ``gpuPlatform`` and ``nodeDefaults.gpuTiles``), and for PBS ``walltime``
(``H:MM:SS``), ``pbs_system``, ``pbs_place``, ``pbs_filesystems`` (the Site's ``spec.pbs``).
Filter ``q`` shell-quotes a value.

The PBS template reads the nodes from ``$PBS_NODEFILE`` and starts each agent on its node
with PALS ``mpiexec -n 1 --ppn 1 --cpu-bind none --hosts HOST`` (Polaris, Aurora); a PBS site
without PALS gives its own ``batch-template.sh.j2``.
"""

from __future__ import annotations

import math
import shlex
import sys
from pathlib import Path
from typing import Any

import jinja2

from apis import BatchJob, Site

from .pbs import walltime as pbs_walltime

SITE_TEMPLATE = "batch-template.sh.j2"

SLURM = """\
#!/bin/bash
#SBATCH --job-name={{ job_name }}
#SBATCH --nodes={{ num_nodes }}
#SBATCH --time={{ wall_time_min }}
#SBATCH --exclusive
{%- if queue %}
#SBATCH --partition={{ queue }}
{%- endif %}
{%- if project %}
#SBATCH --account={{ project }}
{%- endif %}
{%- for key, value in optional_params.items() %}
#SBATCH --{{ key }}{% if value %}={{ value }}{% endif %}
{%- endfor %}
# balsamctl BatchJob {{ namespace }}/{{ batch_job }} ({{ job_mode }} mode, site {{ site_name }}).
# One node agent per node of the allocation; each registers a Node that belongs to this
# BatchJob, named after its Slurm node (which MPI launchers then use as the host name). At the
# end of the allocation (wall time, scancel) Slurm sends them SIGTERM: they mark the jobs still
# running RUN_TIMEOUT, which then run again in a later allocation.
export BALSAM_SITE_PATH={{ site_path | q }}
srun --nodes="$SLURM_NNODES" --ntasks-per-node=1 --overlap --kill-on-bad-exit=0 \\
  /bin/bash -c 'exec "$@" --name "{{ batch_job }}-$(echo "$SLURMD_NODENAME" | tr "A-Z_" "a-z-")" \\
    --hostname "$SLURMD_NODENAME"' nodeagent \\
  {{ agent_command }}
"""

LOCAL = """\
#!/bin/bash
# balsamctl BatchJob {{ namespace }}/{{ batch_job }} ({{ job_mode }} mode, site {{ site_name }}):
# {{ num_nodes }} node agent(s) started here as processes. At the wall time, or on cancel, the
# whole process group gets SIGTERM: the agents mark the jobs still running RUN_TIMEOUT and exit.
export BALSAM_SITE_PATH={{ site_path | q }}
{%- for i in range(num_nodes) %}
{{ agent_command }} --name {{ batch_job }}-{{ i }} &
{%- endfor %}
wait
"""

PBS = """\
#!/bin/bash
#PBS -N {{ job_name }}
#PBS -l select={{ num_nodes }}{% if pbs_system %}:system={{ pbs_system }}{% endif %}
#PBS -l walltime={{ walltime }}
{%- if pbs_place %}
#PBS -l place={{ pbs_place }}
{%- endif %}
{%- if pbs_filesystems %}
#PBS -l filesystems={{ pbs_filesystems }}
{%- endif %}
{%- if queue %}
#PBS -q {{ queue }}
{%- endif %}
{%- if project %}
#PBS -A {{ project }}
{%- endif %}
# balsamctl BatchJob {{ namespace }}/{{ batch_job }} ({{ job_mode }} mode, site {{ site_name }}).
# One node agent per node of the allocation: the distinct host names of $PBS_NODEFILE (one
# line per MPI slot), each agent started on its node by mpiexec (PALS, one rank, unbound) and named
# after it. At the walltime, or on qdel, PBS sends the job's processes SIGTERM: the agents
# mark the jobs still running RUN_TIMEOUT, which then run again in a later allocation.
export BALSAM_SITE_PATH={{ site_path | q }}
for host in $(awk 'NF && !seen[$1]++ {print $1}' "$PBS_NODEFILE"); do
  node=$(echo "${host%%.*}" | tr 'A-Z_' 'a-z-')
  mpiexec -n 1 --ppn 1 --cpu-bind none --hosts "$host" \\
    {{ agent_command }} --name "{{ batch_job }}-$node" --hostname "$host" &
done
wait
"""

DEFAULTS = {"slurm": SLURM, "local": LOCAL, "pbs": PBS}

_env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
_env.filters["q"] = lambda v: shlex.quote(str(v))


class TemplateError(Exception):
    """The site's batch template cannot be rendered."""


def scheduler_job_name(bj: BatchJob) -> str:
    """Unique per BatchJob object (a re-created BatchJob of the same name gets a new one)."""
    return f"balsam-{bj.name}-{(bj.metadata.uid or '')[:8]}".rstrip("-")


def scheduler_of(bj: BatchJob, site: Site) -> str:
    """The scheduler ``bj`` goes to: its own ``spec.scheduler``, else the Site's."""
    return bj.spec.scheduler or site.spec.scheduler


def template_source(site: Site, scheduler: str | None = None) -> str:
    scheduler = scheduler or site.spec.scheduler
    custom = Path(site.spec.path) / SITE_TEMPLATE
    if scheduler == site.spec.scheduler and custom.is_file():
        return custom.read_text()
    try:
        return DEFAULTS[scheduler]
    except KeyError:
        raise TemplateError(f"scheduler {scheduler!r} is not supported yet: it has no batch script "
                            f"template") from None


def node_size(bj: BatchJob, site: Site) -> tuple[int | None, int | None]:
    """(cpus, gpus) each agent offers: the BatchJob's ``nodeSize``, field by field, else the
    Site's ``nodeDefaults`` when set; None leaves it to the agent."""
    nd = site.spec.node_defaults if "node_defaults" in site.spec.model_fields_set else None
    size = bj.spec.node_size
    cpus = size.cpus if size is not None and size.cpus is not None else (nd.cpus if nd else None)
    gpus = size.gpus if size is not None and size.gpus is not None else (nd.gpus if nd else None)
    return cpus, gpus


def agent_command(bj: BatchJob, site: Site, store_url: str | None, python: str) -> str:
    argv = [python, "-m", "nodeagent", "--site", site.spec.path]
    if store_url:
        argv += ["--store", store_url]
    argv += ["-n", bj.namespace, "--batch-job", bj.name]
    cpus, gpus = node_size(bj, site)
    if cpus is not None:
        argv += ["--cpus", str(cpus)]
    if gpus is not None:
        argv += ["--gpus", str(gpus)]
    if site.spec.gpu_platform != "nvidia":
        argv += ["--gpu-platform", site.spec.gpu_platform]
    if site.spec.node_defaults.gpu_tiles > 1:
        argv += ["--gpu-tiles", str(site.spec.node_defaults.gpu_tiles)]
    return " ".join(shlex.quote(a) for a in argv)


def render(bj: BatchJob, site: Site, store_url: str | None = None, python: str | None = None) -> str:
    python = python or sys.executable
    cpus, gpus = node_size(bj, site)
    scheduler = scheduler_of(bj, site)
    values: dict[str, Any] = {
        "batch_job": bj.name,
        "namespace": bj.namespace,
        "job_name": scheduler_job_name(bj),
        "num_nodes": bj.spec.num_nodes,
        "wall_time_min": max(1, math.ceil(bj.spec.wall_time_min)),
        "queue": bj.spec.queue,
        "project": bj.spec.project,
        "job_mode": bj.spec.job_mode,
        "selector": dict(bj.spec.selector),
        "optional_params": dict(bj.spec.optional_params),
        "site_name": site.name,
        "site_path": site.spec.path,
        "store_url": store_url,
        "python": python,
        "cpus": cpus,
        "gpus": gpus,
        "scheduler": scheduler,
        "agent_command": agent_command(bj, site, store_url, python),
        "walltime": pbs_walltime(bj.spec.wall_time_min),
        "pbs_system": site.spec.pbs.system if site.spec.pbs else None,
        "pbs_place": site.spec.pbs.place if site.spec.pbs else None,
        "pbs_filesystems": site.spec.pbs.filesystems if site.spec.pbs else None,
    }
    try:
        return _env.from_string(template_source(site, scheduler)).render(**values)
    except jinja2.TemplateError as e:
        raise TemplateError(f"batch template of site {site.name}: {e}") from None


def script_paths(bj: BatchJob, site: Site) -> tuple[Path, Path]:
    """(script, output) under the site: ``batch/<name>.sh`` and ``logs/batch/<name>.out``."""
    base = Path(site.spec.path)
    return base / "batch" / f"{bj.name}.sh", base / "logs" / "batch" / f"{bj.name}.out"


def write_script(bj: BatchJob, site: Site, store_url: str | None = None, python: str | None = None) -> Path:
    """Render and write the script (idempotent: the same BatchJob renders the same text)."""
    script, output = script_paths(bj, site)
    text = render(bj, site, store_url, python)
    script.parent.mkdir(parents=True, exist_ok=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = script.with_suffix(".sh.tmp")
    tmp.write_text(text)
    tmp.chmod(0o755)
    tmp.replace(script)
    return script
