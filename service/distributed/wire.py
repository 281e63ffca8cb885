"""What crosses between the ingress and the model and shard replicas: plain picklable records.

Errors travel as `RemoteFailure` records rather than raised exceptions: densekit's errors take
named arguments (ConfigError(field, message)) that pickling an exception does not restore, and
the ingress must tell a refused request (422/404/409, as the single-process server answers)
from a replica that is down (503).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from densekit import errors
from densekit.backends import Runtime
from densekit.service.batching import BatcherStopped, QueueFull

# Raised by a replica's own batcher; the ingress answers them as the single-process server does (429, 503).
_BATCHER_ERRORS: dict[str, type[Exception]] = {"QueueFull": QueueFull, "BatcherStopped": BatcherStopped}


@dataclass(eq=False)  # hashed by identity: the rerank routes cache a tokenizer per model object
class RemoteModel:
    """What the routes read off a model that runs in another process: its served name, shape
    and runtime, the line /info shows, and (a reranker) the tokenizer the /v2/rerank route cuts
    documents with."""

    name: str
    runtime: Runtime | None
    device: str
    summary: str
    max_length: int
    dim: int | None = None
    normalize: bool = False
    drift: float | None = None
    score_mode: str = "yes_no"
    tokenizer: Any = None


@dataclass(frozen=True)
class RemoteFailure:
    """A densekit error raised in a replica, to be raised again in the ingress."""

    kind: str
    message: str
    field: str | None = None

    @classmethod
    def of(cls, exc: Exception) -> RemoteFailure:
        if isinstance(exc, errors.ConfigError):
            return cls("ConfigError", exc.message, exc.field)
        return cls(type(exc).__name__, str(exc))

    def error(self) -> Exception:
        if self.kind == "ConfigError":
            return errors.ConfigError(self.field or "?", self.message)
        if self.kind in _BATCHER_ERRORS:
            return _BATCHER_ERRORS[self.kind](self.message)
        cls = getattr(errors, self.kind, None)
        if isinstance(cls, type) and issubclass(cls, errors.DensekitError) and self.kind not in ("DataFormatError", "BenchmarkStepError"):
            return cls(self.message)
        return RuntimeError(f"{self.kind}: {self.message}")


@dataclass
class Answer:
    """A replica's answer: `value`, or `failure` for a refused request; `timings` (ms per
    stage) for the response headers; a shard's document count after the call."""

    value: Any = None
    failure: RemoteFailure | None = None
    timings: dict[str, float] = field(default_factory=dict)
    documents: int | None = None

    def unwrap(self) -> Any:
        if self.failure is not None:
            raise self.failure.error()
        return self.value


@dataclass
class TooLong:
    """An input over the encoder's length when the client asked not to truncate."""

    position: int
    tokens: int
    limit: int


@dataclass
class Embedded:
    vectors: np.ndarray
    counts: list[int]
