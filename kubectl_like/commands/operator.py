"""``balsamctl operator --store URL``: mirror balsam.io/v1 resources of a Kubernetes cluster
into the store (kopf; see ``kubectl_like/operator.py``)."""

from __future__ import annotations

import asyncio
import logging

import click

from .._context import common_options, get_ctx


@click.command("operator")
@click.option("--watch-namespace", "watch_namespaces", multiple=True, metavar="NS",
              help="Watch only these cluster namespaces (repeatable; default: the whole cluster).")
@click.option("--server", default=None, metavar="URL",
              help="Kubernetes API server URL without credentials (e.g. from 'kubectl proxy'); "
              "default: in-cluster service account or kubeconfig.")
@click.option("--status-interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Seconds between status copies from the store to each CR.")
@click.option("--no-events", is_flag=True, help="Do not post Kubernetes Events about the handlers.")
@click.option("-v", "--verbose", is_flag=True, help="Log every handler run.")
@common_options
def command(watch_namespaces: tuple[str, ...], server: str | None,
            status_interval: float, no_events: bool, verbose: bool) -> None:
    """Run a Kubernetes operator: jobs.balsam.io (and apps, sites, batchjobs) applied with
    kubectl run on this site's store; their status shows in `kubectl get jobs.balsam.io`.

    \b
    balsamctl crds | kubectl apply -f -
    balsamctl operator --store etcd://127.0.0.1:2379
    kubectl apply -f job.yaml && kubectl get jobs.balsam.io

    A CR in cluster namespace X becomes an object in store namespace X; with -n NS, every
    object goes into store namespace NS.
    """
    import kopf

    from .. import operator as op

    ctx = get_ctx()
    mirror = op.Mirror(ctx.registry, store_namespace=ctx.namespace_flag)
    registry = op.build_registry(mirror, server=server, status_interval=status_interval)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    click.echo(f"operator: mirroring {', '.join(k.PLURAL for k in op.MIRRORED)}.balsam.io into "
               f"{ctx.resolved_store_url()}", err=True)
    asyncio.run(kopf.operator(
        registry=registry,
        settings=op.settings(events=not no_events),
        clusterwide=not watch_namespaces,
        namespaces=list(watch_namespaces),
    ))
