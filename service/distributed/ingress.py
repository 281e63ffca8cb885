"""The ingress deployment: the single-process server's FastAPI app (`create_app`), whose
engines call the encoder, reranker and shard deployments. Every route, schema, limit, error,
API key and metric is therefore the one `densekit serve` has."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from densekit.errors import IndexMismatchError
from densekit.index.manifest import check_encoder_runtime
from densekit.index.sharded_manifest import ShardedManifest
from densekit.service.app import create_app
from densekit.service.distributed.remote_engines import (
    RemoteEmbedEngine,
    RemoteIndexView,
    RemoteLiveView,
    RemoteRerankEngine,
    RemoteShardsEngine,
)
from densekit.service.distributed.wire import RemoteModel
from densekit.service.metrics import ServiceMetrics
from densekit.service.state import ServiceState
from densekit.settings import Settings


@dataclass(frozen=True)
class FanoutOptions:
    allow_partial: bool = False
    timeout_s: float = 30.0  # longest wait for one deployment's answer before it counts as down


def check_encoder_fits(model: RemoteModel, sharded: ShardedManifest) -> None:
    """The encoder replica's model against the index: dimension and runtime (as load_state checks)."""
    if model.dim != sharded.encoder.dim:
        raise IndexMismatchError(f"encoder dim {model.dim} != index dim {sharded.encoder.dim}")
    if model.runtime is not None:
        check_encoder_runtime(sharded.encoder, model.runtime.backend, model.runtime.precision, drift=model.drift)


@serve.deployment
@serve.ingress()
class Ingress:
    def __init__(
        self,
        settings: Settings,
        sharded: ShardedManifest,
        options: FanoutOptions,
        encoder: DeploymentHandle,
        shards: Sequence[DeploymentHandle],
        reranker: DeploymentHandle | None = None,
    ):
        self.settings = settings
        self.sharded = sharded
        self.options = options
        self.encoder = encoder
        self.shards = list(shards)
        self.reranker = reranker

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self.settings, loader=self._load)

    async def _load(self, settings: Settings, metrics: ServiceMetrics) -> ServiceState:
        return await load_remote_state(settings, metrics, self.sharded, self.options, self.encoder, self.shards, self.reranker)


async def load_remote_state(
    settings: Settings,
    metrics: ServiceMetrics,
    sharded: ShardedManifest,
    options: FanoutOptions,
    encoder: Any,
    shards: Sequence[Any],
    reranker: Any = None,
) -> ServiceState:
    """The ingress's ServiceState: remote engines over the deployments' handles (anything whose
    methods offer `.remote(...)`). A shard that is down now does not stop the ingress: /ready
    says so until it is back."""
    timeout = options.timeout_s
    state = ServiceState(settings)
    enc: RemoteModel = await encoder.describe.remote()
    check_encoder_fits(enc, sharded)
    state.encoder = enc  # type: ignore[assignment]  # what the routes read off an Encoder
    state.embed = RemoteEmbedEngine(encoder, enc, timeout, metrics)  # type: ignore[assignment]
    if reranker is not None:
        rr: RemoteModel = await reranker.describe.remote()
        state.reranker = rr  # type: ignore[assignment]
        state.rerank = RemoteRerankEngine(reranker, rr, timeout, metrics)
    for role, model in (("encoder", state.encoder), ("reranker", state.reranker)):
        runtime = getattr(model, "runtime", None)
        if runtime is not None:
            metrics.runtime.labels(role, runtime.backend, runtime.precision).set(1)
    view = RemoteIndexView(sharded)
    search = RemoteShardsEngine(shards, view, options.allow_partial, timeout, metrics)
    await search.health()  # counts, devices and logs for /info
    state.index = view  # type: ignore[assignment]
    state.live = RemoteLiveView(view) if settings.allow_updates else None  # type: ignore[assignment]
    state.search = search  # type: ignore[assignment]
    return state
