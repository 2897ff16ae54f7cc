"""The node agent: registers a ``Node`` under a store lease, launches the jobs bound to it,
enforces wall time, reports results and occupancy (ARCHITECTURE.md §5, docs/design.md).

    from nodeagent import NodeAgent, main
    NodeAgent(registry, name="n1", cpus=64, gpus=8, site_config=cfg).start()
    main(["--site", "/path/to/site", "--cpus", "64", "--gpus", "8"])   # the CLI
"""

from __future__ import annotations

from ._agent import NodeAgent, default_node_name
from ._cli import build_parser, main
from ._launch import GpuPinning
from .launchers import LAUNCHERS, LaunchSpec, launch_command, launcher_argv, needs_launcher

__all__ = [
    "GpuPinning",
    "LAUNCHERS",
    "LaunchSpec",
    "NodeAgent",
    "build_parser",
    "default_node_name",
    "launch_command",
    "launcher_argv",
    "main",
    "needs_launcher",
]
