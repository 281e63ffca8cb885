"""What the service loads once at start-up: encoder, index (live or read-only) and
(optionally) reranker, and the batching engines in front of them.

The service keeps no state beyond this, so replicas behind one endpoint stay identical
(live document updates aside: they need one writer process per index, see index/live.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from densekit.encoder import Encoder
from densekit.errors import ConfigError, IndexMismatchError
from densekit.index.loading import AnyIndex, AnyLiveIndex, open_index, open_live_index
from densekit.index.manifest import check_encoder_runtime
from densekit.rerankers import Reranker
from densekit.service.engines import EmbedEngine, IndexEngine, RerankEngine
from densekit.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ServiceState:
    settings: Settings
    encoder: Encoder | None = None
    index: AnyIndex | None = None
    reranker: Reranker | None = None
    live: AnyLiveIndex | None = None
    errors: list[str] = field(default_factory=list)
    # Set by the app once the event loop runs (densekit.service.app.attach_engines).
    embed: EmbedEngine | None = None
    rerank: RerankEngine | None = None
    search: IndexEngine | None = None

    @property
    def ready(self) -> bool:
        return self.encoder is not None and (self.settings.index_dir is None or self.index is not None) and self.embed is not None


def cpu_threads(settings: Settings) -> int | None:
    """Intra-op threads for CPU inference: `torch_threads`, or None for torch's default (all
    cores). On a machine with no other load all cores gave 1.4-1.8x the /embed throughput of one thread;
    one thread only won while other processes shared the cores (BENCHMARKS.md)."""
    return settings.torch_threads or None


def load_state(settings: Settings) -> ServiceState:
    state = ServiceState(settings)
    from densekit.devices import resolve_device

    if resolve_device(settings.device) == "cpu":
        import torch

        threads = cpu_threads(settings)
        if threads:
            torch.set_num_threads(threads)
    model = settings.model
    if settings.index_dir is not None:
        if settings.allow_updates:
            try:
                state.live = open_live_index(settings.index_dir, settings.wal_dir, settings.snapshot_every, settings.snapshot_interval_s)
                state.index = state.live.index
            except PermissionError as exc:
                # A read-only mount (e.g. an index baked into an image) with updates left at
                # their default: serve it read-only rather than refuse to start.
                if "allow_updates" in settings.model_fields_set:
                    raise ConfigError("allow_updates", f"live updates need a writable log folder: {exc}") from None
                log.warning("index folder not writable (%s): serving it read-only", exc)
        if state.index is None:
            state.index = open_index(settings.index_dir)
        # Queries must be encoded by the index's own encoder unless the operator says otherwise.
        if "model" not in settings.model_fields_set:
            model = state.index.manifest.encoder.path or state.index.manifest.encoder.name
    state.encoder = Encoder.from_settings(settings, model=model)
    if state.index is not None and state.encoder.dim != state.index.dim:
        raise IndexMismatchError(f"encoder dim {state.encoder.dim} != index dim {state.index.dim}")
    if state.index is not None:
        # Vectors of one runtime against queries of another: a warning, or a refusal past the drift limit.
        runtime = state.encoder.runtime
        check_encoder_runtime(state.index.manifest.encoder, runtime.backend, runtime.precision, drift=state.encoder.drift)
    if state.index is not None:  # GPU copy for search when faiss has GPU support (settings.faiss_device)
        state.index.to_device(settings.faiss_device, state.encoder.device)
    if settings.reranker:
        from densekit.rerankers import load_reranker_from_settings

        state.reranker = load_reranker_from_settings(settings)
    return state


def close_state(state: ServiceState) -> None:
    if state.live is not None:
        state.live.close(snapshot=True)
        state.live = None
