"""``python -m controllers`` / ``balsamctl controller-manager``: run the reconcilers of one
site until SIGTERM/SIGINT, standing by while another manager leads."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from apis import ApiError, load_site_config, open_registry_waiting, resolve_store_url
from apis._modes import apply_umask
from store.process import tune_gc

from ._manager import ControllerManager
from .hookpool import ProcessHookRunner


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="balsamctl controller-manager")
    p.add_argument("--site", default=None)
    p.add_argument("--store", default=None)
    p.add_argument("-n", "--namespace", default=None)
    p.add_argument("--identity", default=None)
    p.add_argument("--lease-ttl", type=float, default=15.0)
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--hook-workers", type=int, default=None, metavar="N",
                   help="lifecycle hooks that may run at once (default: one per CPU)")
    p.add_argument("--hook-timeout", type=float, default=300.0, metavar="S",
                   help="seconds a hook may run before it is killed and its job FAILED, unless its App "
                        "says otherwise (default: 300)")
    args = p.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        url = resolve_store_url(args.store, args.site)
        namespace = args.namespace or "default"
        log_file = None
        site_path = None
        try:
            cfg = load_site_config(args.site)
            site_path = cfg.path
            namespace = args.namespace or cfg.namespace
            apply_umask(cfg.sharing)  # logs, hooks' files: private unless the site is group-shared
            cfg.logs_path.mkdir(parents=True, exist_ok=True)
            log_file = cfg.logs_path / "controller-manager.log"
        except ApiError:
            pass  # a bare --store works without a site directory
        logging.basicConfig(
            filename=log_file, level=args.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
        )
        # Started during a store outage (up restarts us, an operator starts us): wait for it.
        registry = open_registry_waiting(
            url, say=lambda line: print(line, file=sys.stderr, flush=True),
            give_up=lambda: "stopped while waiting for the store" if stop.is_set() else "")
        if registry is None:
            return 0
        hooks = ProcessHookRunner(store_url=url, site_path=site_path, workers=args.hook_workers,
                                  timeout=args.hook_timeout,
                                  log_dir=site_path / "logs" if site_path is not None else None,
                                  namespace=namespace)
        mgr = ControllerManager(registry, namespace, args.identity, args.lease_ttl, hooks=hooks, freeze_gc=True)
    except ApiError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    tune_gc("manager")  # store/process.py: why these thresholds
    # A log line that cannot be written (the site's disk full) is lost, not printed as a
    # "--- Logging error ---" traceback: the manager rides a full disk out (issue 12).
    logging.raiseExceptions = False
    return mgr.run(stop)


if __name__ == "__main__":
    sys.exit(main())
