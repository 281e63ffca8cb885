"""`densekit serve --engine ray`: the Ray Serve application of a sharded index, and running it.

Deployments: `shard-00000` ... (one per shard, `shard_replicas` each), `encoder`, `reranker`
(when a reranker is configured) and `ingress` (the FastAPI app), all in one application bound
to `settings.host:settings.port` on the cluster's HTTP proxies. Every replica reads the index
folder and models at the same path, so on several machines they must sit on shared storage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application

from densekit.errors import ConfigError
from densekit.index.sharded_manifest import ShardedManifest, is_sharded, read_sharded_manifest
from densekit.service.distributed import ingress, replicas
from densekit.service.distributed.ingress import FanoutOptions
from densekit.settings import Settings

APP_NAME = "densekit"
# The deployments (typed loosely: Ray's decorators hide `.options` from the type checker).
_SHARD: Any = replicas.ShardReplica
_ENCODER: Any = replicas.EncoderReplica
_RERANKER: Any = replicas.RerankerReplica
_INGRESS: Any = ingress.Ingress
# A killed shard replica is noticed (and replaced) within about this many seconds.
HEALTH_CHECK_PERIOD_S = 2.0
HEALTH_CHECK_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ServeOptions:
    shard_replicas: int = 1
    encoder_replicas: int = 1
    reranker_replicas: int = 1
    autoscale: tuple[int, int] | None = None  # (min, max) replicas of every stateless deployment
    allow_partial: bool = False
    call_timeout_s: float = 30.0
    replica_cpus: float = 1.0  # CPUs each encoder, reranker and shard replica reserves
    replica_gpus: float = 0.0  # GPUs each encoder and reranker replica reserves


def parse_autoscale(text: str) -> tuple[int, int]:
    """'MIN:MAX' -> (min, max) replicas."""
    lo, sep, hi = text.partition(":")
    try:
        low, high = int(lo), int(hi)
    except ValueError:
        raise ConfigError("autoscale", f"expected MIN:MAX replicas, e.g. 1:4; got {text!r}") from None
    if not sep or low < 0 or high < max(1, low):
        raise ConfigError("autoscale", f"expected MIN:MAX with 0 <= MIN <= MAX and MAX >= 1; got {text!r}")
    return low, high


def check_serve_options(settings: Settings, options: ServeOptions) -> ShardedManifest:
    """The sharded manifest of the index to serve, once the options fit it (ConfigError otherwise)."""
    if settings.index_dir is None:
        raise ConfigError("index", "--engine ray serves a sharded index: give --index SHARDED_DIR")
    if not is_sharded(settings.index_dir):
        raise ConfigError(
            "index",
            f"{settings.index_dir} is not a sharded index folder (no sharded_manifest.json): --engine ray serves one deployment per "
            "shard; build one with `densekit index build --from-embeddings EMB_DIR --shards S`, or serve this folder without --engine ray",
        )
    for name in ("shard_replicas", "encoder_replicas", "reranker_replicas"):
        if getattr(options, name) < 1:
            raise ConfigError(name.replace("_", "-"), "must be at least 1")
    if options.call_timeout_s <= 0:
        raise ConfigError("call-timeout-s", "must be positive")
    if settings.allow_updates and (options.shard_replicas > 1):
        raise ConfigError(
            "shard-replicas", "live document updates need one writer per shard: --shard-replicas 1, or serve the index --read-only"
        )
    return read_sharded_manifest(settings.index_dir)


def _replicas(fixed: int, autoscale: tuple[int, int] | None) -> dict[str, Any]:
    if autoscale is None:
        return {"num_replicas": fixed}
    low, high = autoscale
    return {"autoscaling_config": {"min_replicas": low, "max_replicas": high, "initial_replicas": max(1, low)}}


def build_application(settings: Settings, options: ServeOptions) -> Application:
    """The bound application (nothing runs yet)."""
    sharded = check_serve_options(settings, options)
    settings = settings.model_copy(update={"index_dir": Path(settings.index_dir or "").resolve()})
    # Queries are encoded by the index's own encoder unless the operator says otherwise (as load_state does).
    model = settings.model if "model" in settings.model_fields_set else (sharded.encoder.path or sharded.encoder.name)
    models = {"num_cpus": options.replica_cpus, "num_gpus": options.replica_gpus}
    health = {"health_check_period_s": HEALTH_CHECK_PERIOD_S, "health_check_timeout_s": HEALTH_CHECK_TIMEOUT_S}
    # Shards scale with the others only when read-only: a live shard has exactly one writer.
    shard_scale = options.autoscale if not settings.allow_updates else None
    shards = [
        _SHARD.options(
            name=entry.name,
            ray_actor_options={"num_cpus": options.replica_cpus},
            **health,
            **_replicas(options.shard_replicas, shard_scale),
        ).bind(settings, i)
        for i, entry in enumerate(sharded.shards)
    ]
    encoder = _ENCODER.options(
        name="encoder",
        ray_actor_options=models,
        max_queued_requests=settings.max_queue,
        **_replicas(options.encoder_replicas, options.autoscale),
    ).bind(settings, model)
    reranker = None
    if settings.reranker:
        reranker = _RERANKER.options(
            name="reranker",
            ray_actor_options=models,
            max_queued_requests=settings.max_queue,
            **_replicas(options.reranker_replicas, options.autoscale),
        ).bind(settings)
    fanout = FanoutOptions(allow_partial=options.allow_partial, timeout_s=options.call_timeout_s)
    # The ingress only waits on the others: it reserves no CPU.
    return _INGRESS.options(name="ingress", ray_actor_options={"num_cpus": 0}, **_replicas(1, options.autoscale)).bind(
        settings, sharded, fanout, encoder, shards, reranker
    )


def deploy(settings: Settings, options: ServeOptions) -> float:
    """Run the application on the connected cluster, its HTTP proxy on settings.host:port;
    returns once every deployment is up, with the seconds that took."""
    app = build_application(settings, options)
    t0 = time.perf_counter()
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    return time.perf_counter() - t0


def undeploy() -> None:
    serve.delete(APP_NAME)
