"""``nodeagent [--site DIR] [--store URL] [-n NAMESPACE] [--name NAME] [--cpus N] [--gpus G]
[--gpu-platform nvidia|amd|intel] [--gpu-tiles T] [--batch-job NAME] [--lease-ttl S]``: run one node
agent in the foreground until SIGTERM/SIGINT (or until the process named by
``$BALSAM_AGENT_SUPERVISOR=PID:TICKS``, an allocation's runner, ends)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from apis import ApiError, Registry, load_site_config, open_registry_waiting, resolve_store_url
from apis._forkserver import prefork
from apis._modes import apply_umask
from store.process import tune_gc

from ._agent import NodeAgent
from ._fence import SUPERVISOR_ENV, parse_supervisor, runner_gone
from ._launch import GPU_VARIABLES, GpuPinning

#: Default of ``--lease-ttl`` when set (``balsamctl up`` passes its own to its allocation's agents).
LEASE_TTL_ENV = "BALSAM_NODE_LEASE_TTL"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nodeagent",
        description="Run the jobs that the placement reconciler binds to this node.",
    )
    p.add_argument("--site", metavar="DIR", help="site directory (default: $BALSAM_SITE_PATH or the current one)")
    p.add_argument("--store", metavar="URL", help="store URL (default: $BALSAM_STORE or the site's settings)")
    p.add_argument("-n", "--namespace", help="namespace of the jobs to run (default: the site's)")
    p.add_argument("--name", help="Node name (default: this host's name)")
    p.add_argument("--hostname", help="host name MPI launchers use for this node (default: this host's)")
    p.add_argument("--cpus", type=int, help="CPUs to offer (default: this machine's); more simulates a bigger node")
    p.add_argument("--gpus", type=int, default=0, help="GPUs to offer (default: 0)")
    p.add_argument("--gpu-platform", choices=sorted(GPU_VARIABLES), default="nvidia",
                   help="how jobs are pinned to their GPUs: CUDA_VISIBLE_DEVICES (nvidia, the default), "
                        "ROCR_VISIBLE_DEVICES (amd), ZE_AFFINITY_MASK (intel)")
    p.add_argument("--gpu-tiles", type=int, default=1, metavar="T",
                   help="tiles per GPU: --gpus counts tiles, named GPU.TILE (Aurora: --gpus 12 --gpu-tiles 2)")
    p.add_argument("--batch-job", metavar="NAME", help="the BatchJob whose allocation this node belongs to")
    p.add_argument("--lease-ttl", type=float, default=None, metavar="S",
                   help="seconds after which the Node vanishes if this agent stops renewing "
                        f"(default: ${LEASE_TTL_ENV}, else 10)")
    p.add_argument("--kill-grace", type=float, default=5.0, metavar="S",
                   help="seconds between SIGTERM and SIGKILL when a job is killed (default: 5)")
    p.add_argument("--no-acquire", dest="acquire", action="store_false", default=None,
                   help="never take jobs itself in a claim window: run only what placement binds here "
                        "(default: the site's agents_acquire setting, off)")
    p.add_argument("-v", "--verbose", action="store_true", help="also log to stderr")
    return p


def _open_registry(url: str, supervisor: tuple[int, str] | None) -> Registry | None:
    """The store, waited for while it does not answer (an allocation may start us during a
    store outage); None if we are stopped, or our allocation's runner ends, meanwhile."""
    stopped: list[str] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopped.append(f"stopped by {signal.Signals(signum).name} while waiting for the store")

    def give_up() -> str:
        if stopped:
            return stopped[0]
        return runner_gone(supervisor)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return open_registry_waiting(url, say=lambda line: print(line, file=sys.stderr, flush=True),
                                     give_up=give_up)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a node agent; returns the exit status (0 after a clean SIGTERM/SIGINT shutdown)."""
    args = build_parser().parse_args(argv)
    tune_gc("agent")  # the process's GC settings, here and only here (store/process.py)
    # A log line that cannot be written (the site's disk full) is lost, not printed as a
    # "--- Logging error ---" traceback on stderr: the agent rides a full disk out (issue 12).
    logging.raiseExceptions = False
    if args.cpus is not None and args.cpus < 1:
        print("error: --cpus must be at least 1", file=sys.stderr)
        return 2
    if args.gpus < 0:
        print("error: --gpus must not be negative", file=sys.stderr)
        return 2
    if args.gpu_tiles < 1:
        print("error: --gpu-tiles must be at least 1", file=sys.stderr)
        return 2
    if args.lease_ttl is None:
        try:
            args.lease_ttl = float(os.environ.get(LEASE_TTL_ENV) or 10.0)
        except ValueError:
            print(f"error: {LEASE_TTL_ENV} must be a number of seconds", file=sys.stderr)
            return 2
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        site = load_site_config(args.site)
        apply_umask(site.sharing)  # job workdirs, job.out, logs: private unless the site is group-shared
        if args.namespace:
            site = dataclasses.replace(site, namespace=args.namespace)
        if args.site:
            os.environ["BALSAM_SITE_PATH"] = str(site.path)
        # The Python apps' fork server, forked now (no thread, no store connection yet) from
        # this process, whose imports it shares: ~2 ms instead of a new interpreter's ~0.35 s
        # of CPU that delayed the site's first Python job (issue 14).
        logs = site.logs_path
        python_server = prefork(logs / "pyapps-forkserver.log" if logs.is_dir() else None)
        supervisor = parse_supervisor(os.environ.get(SUPERVISOR_ENV))
        registry = _open_registry(resolve_store_url(args.store, args.site), supervisor)
        if registry is None:
            return 0
        if hasattr(registry.store, "wake_own_writes"):
            # SQLite: our own job writes need not wake our watches (they follow what others
            # bind to us); one poller wake-up and catch-up fewer per agent commit.
            setattr(registry.store, "wake_own_writes", False)  # noqa: B010 - not on every Store
        agent = NodeAgent(
            registry, name=args.name, cpus=args.cpus, gpus=args.gpus, hostname=args.hostname,
            batch_job=args.batch_job, site_config=site, lease_ttl=args.lease_ttl, kill_grace=args.kill_grace,
            gpu_pinning=GpuPinning(args.gpu_platform, args.gpu_tiles),
            supervisor=supervisor, warm_python=python_server, acquire=args.acquire,
        )  # fmt: skip
    except (ApiError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    def on_signal(signum: int, frame: FrameType | None) -> None:
        agent.stop(f"stopped by {signal.Signals(signum).name}", wait=False)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        agent.run()
    except ApiError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - one line, not a trace; the log has it
        print(f"error: node agent failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0
