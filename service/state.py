"""What the service loads once at start-up: encoder, index and (optionally) reranker.

The service keeps no state beyond this, so replicas behind one endpoint stay identical.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from densekit.encoder import Encoder
from densekit.settings import Settings
from index.dense_index import DenseIndex, load_index

log = logging.getLogger(__name__)


@dataclass
class ServiceState:
    settings: Settings
    encoder: Encoder | None = None
    index: DenseIndex | None = None
    reranker: object | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return self.encoder is not None and (self.settings.index_dir is None or self.index is not None)


def load_state(settings: Settings) -> ServiceState:
    state = ServiceState(settings)
    model = settings.model
    if settings.index_dir is not None:
        state.index = load_index(settings.index_dir)
        # Queries must be encoded by the index's own encoder unless the operator says otherwise.
        if "model" not in settings.model_fields_set:
            model = state.index.manifest.encoder.path or state.index.manifest.encoder.name
    state.encoder = Encoder(model, device=settings.device, dtype=settings.dtype, batch_size=settings.batch_size)
    if state.index is not None and state.encoder.dim != state.index.dim:
        from densekit.errors import IndexMismatchError

        raise IndexMismatchError(f"encoder dim {state.encoder.dim} != index dim {state.index.dim}")
    if state.index is not None:  # GPU copy for search when faiss has GPU support (settings.faiss_device)
        state.index.to_device(settings.faiss_device, state.encoder.device)
    return state
