"""Command lines of the Site's MPI launcher (``Site.spec.launcher``).

A job runs through the launcher when it spans several nodes or several ranks
(``numNodes > 1`` or ``ranksPerNode > 1``); a 1-node 1-rank job runs its command directly.
The first node's agent runs ``<launcher prefix> <rendered command>`` through the shell
(Balsam's convention: the launcher starts the App's executable, so a command that is a
pipeline or a shell script should be a script file). The prefix's own tokens are
shell-quoted; the rendered command is already quoted by the template renderer.

* ``mpirun`` (Open MPI): ``mpirun -n N --host h1:rpn,h2:rpn --map-by ppr:rpn:node -x VAR
  ... <params>``; ``--map-by ppr:rpn:node`` puts exactly ranksPerNode ranks on each host
  (under Slurm, Open MPI reads the slots from the allocation, not from ``--host``, and would
  otherwise fill the first node's slots first); a ``map-by`` in ``launchParams`` replaces it,
  and it is left out when hosts repeat (simulated nodes of one machine under ``up``: Open
  MPI merges them into one host, where a per-node ppr could not fit the ranks).
  ``-x`` exports the job's variables (``CUDA_VISIBLE_DEVICES``, ``OMP_NUM_THREADS``, the
  App's environment) to the remote ranks.
* ``mpiexec`` (MPICH/Hydra): ``mpiexec -n N -ppn rpn -hosts h1,h2 <params>``; Hydra
  forwards the whole environment by default.
* ``pals`` (HPE Cray PALS ``mpiexec``: Polaris, Aurora): ``mpiexec -n N --ppn rpn --depth d
  --cpu-bind depth --hosts h1,h2 <params>``; ``--depth`` is ``threadsPerRank`` hardware
  threads (cores, ``threadsPerRank / threadsPerCore``, with ``cpu-bind: core``), so each
  rank's threads stay on its own CPUs, as ALCF's job scripts do. A ``cpu-bind`` or ``depth``
  in ``launchParams`` replaces ours; a ``hostfile`` one replaces ``--hosts`` (a long host
  list, ``$PBS_NODEFILE``). PALS forwards the whole environment (GPU pinning included).
* ``srun`` (Slurm, inside the allocation): ``srun --overlap -N nodes -n N
  --ntasks-per-node rpn --nodelist h1,h2 --cpus-per-task c [--gpus-per-task g] <params>``;
  ``--overlap`` lets the step share the nodes with the step that runs the agents.
* ``none``: no prefix; the command runs once on the first node and starts its own ranks.

``spec.resources.launchParams`` pass through to the launcher: ``{key: value}`` becomes
``--key value`` (``-k value`` for a one-letter key, ``--key=value`` for ``srun``), an empty
value a bare flag, and a key that starts with ``-`` is used as written.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

LAUNCHERS = ("mpirun", "mpiexec", "pals", "srun", "none")


@dataclass(frozen=True)
class LaunchSpec:
    """What a launcher needs to know about one job's placement."""

    hosts: Sequence[str]
    ranks_per_node: int = 1
    threads_per_rank: int = 1
    threads_per_core: int = 1
    gpus_per_rank: float = 0
    launch_params: Mapping[str, str] = field(default_factory=dict)
    env_names: Sequence[str] = ()  # variables the job sets, forwarded where the launcher needs it

    @property
    def num_ranks(self) -> int:
        return len(self.hosts) * self.ranks_per_node


def needs_launcher(num_nodes: int, ranks_per_node: int) -> bool:
    """True when a job must start through the MPI launcher (more than one node or rank)."""
    return num_nodes > 1 or ranks_per_node > 1


def _params(params: Mapping[str, str], *, equals: bool) -> list[str]:
    out: list[str] = []
    for key, value in params.items():
        flag = key if key.startswith("-") else (f"-{key}" if len(key) == 1 else f"--{key}")
        value = str(value)
        if value == "":
            out.append(flag)
        elif equals and flag.startswith("--"):
            out.append(f"{flag}={value}")
        else:
            out.extend((flag, value))
    return out


def _sets(params: Mapping[str, str], name: str) -> bool:
    """Whether launchParams give the option ``name`` (as ``name``, ``-name`` or ``--name``)."""
    return any(key.lstrip("-") == name for key in params)


def launcher_argv(launcher: str, spec: LaunchSpec) -> list[str]:
    """The launcher's own tokens (without the App command). ValueError for an unknown launcher."""
    if not spec.hosts:
        raise ValueError("a launch needs at least one host")
    rpn = max(1, spec.ranks_per_node)
    if launcher == "mpirun":
        argv = ["mpirun", "-n", str(spec.num_ranks), "--host", ",".join(f"{h}:{rpn}" for h in spec.hosts)]
        if not _sets(spec.launch_params, "map-by") and len(set(spec.hosts)) == len(spec.hosts):
            argv += ["--map-by", f"ppr:{rpn}:node"]
        for name in spec.env_names:
            argv += ["-x", name]
        return argv + _params(spec.launch_params, equals=False)
    if launcher == "mpiexec":
        argv = ["mpiexec", "-n", str(spec.num_ranks), "-ppn", str(rpn), "-hosts", ",".join(spec.hosts)]
        return argv + _params(spec.launch_params, equals=False)
    if launcher == "pals":
        params = spec.launch_params
        argv = ["mpiexec", "-n", str(spec.num_ranks), "--ppn", str(rpn)]
        bind = next((str(v) for k, v in params.items() if k.lstrip("-") == "cpu-bind"), "depth")
        if not _sets(params, "depth") and not _sets(params, "d"):
            threads = max(1, spec.threads_per_rank)
            depth = max(1, threads // max(1, spec.threads_per_core)) if bind == "core" else threads
            argv += ["--depth", str(depth)]
        if not _sets(params, "cpu-bind"):
            argv += ["--cpu-bind", bind]
        if not _sets(params, "hostfile"):
            argv += ["--hosts", ",".join(spec.hosts)]
        return argv + _params(params, equals=False)
    if launcher == "srun":
        cpus = max(1, spec.threads_per_rank // max(1, spec.threads_per_core))
        argv = [
            "srun", "--overlap",
            "-N", str(len(spec.hosts)),
            "-n", str(spec.num_ranks),
            "--ntasks-per-node", str(rpn),
            "--nodelist", ",".join(spec.hosts),
            "--cpus-per-task", str(cpus),
        ]  # fmt: skip
        if spec.gpus_per_rank >= 1 and float(spec.gpus_per_rank).is_integer():
            argv += ["--gpus-per-task", str(int(spec.gpus_per_rank))]
        return argv + _params(spec.launch_params, equals=True)
    if launcher == "none":
        return []
    raise ValueError(f"unknown launcher {launcher!r} (expected one of {', '.join(LAUNCHERS)})")


def launch_command(launcher: str, command: str, spec: LaunchSpec) -> str:
    """The shell command line that starts ``command`` (already rendered and quoted) on
    ``spec.hosts`` through ``launcher``."""
    argv = launcher_argv(launcher, spec)
    if not argv:
        return command
    return " ".join(shlex.quote(a) for a in argv) + " " + command
