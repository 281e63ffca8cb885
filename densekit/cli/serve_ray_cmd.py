"""`densekit serve --engine ray`: deploy a sharded index on Ray Serve and keep it up until
Ctrl-C or SIGTERM, then take the application down (a cluster this command started goes too)."""

from __future__ import annotations

import signal
import threading

from densekit.cli.common import console
from densekit.settings import Settings


def serve_on_ray(
    settings: Settings,
    address: str | None,
    shard_replicas: int,
    encoder_replicas: int,
    reranker_replicas: int,
    autoscale: str | None,
    allow_partial: bool,
    call_timeout_s: float,
    replica_cpus: float,
    replica_gpus: float,
) -> None:
    from densekit.index.ray_cluster import connect, require_ray

    require_ray()
    from densekit.service.distributed.deploy import ServeOptions, check_serve_options, deploy, parse_autoscale, undeploy

    options = ServeOptions(
        shard_replicas=shard_replicas,
        encoder_replicas=encoder_replicas,
        reranker_replicas=reranker_replicas,
        autoscale=parse_autoscale(autoscale) if autoscale else None,
        allow_partial=allow_partial,
        call_timeout_s=call_timeout_s,
        replica_cpus=replica_cpus,
        replica_gpus=replica_gpus,
    )
    sharded = check_serve_options(settings, options)  # before any cluster starts
    import ray
    from ray import serve

    started_here = address is None
    joined = connect(address)
    took = deploy(settings, options)
    console.print(
        f"serving {settings.index_dir} ({len(sharded.shards)} shards, {sharded.doc_count} documents) on Ray Serve at "
        f"http://{settings.host}:{settings.port} (cluster {joined:.1f}s, deployments up in {took:.1f}s); Ctrl-C stops it"
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    undeploy()
    if started_here:
        serve.shutdown()
        ray.shutdown()
