"""Running an exported graph (ONNX Runtime or OpenVINO) inside a sentence-transformers model.

The graph replaces only the transformer network (`model[0].model`): tokenisation, prompts,
pooling, normalisation and the cross-encoder's activation stay sentence-transformers' own, so
an exported model encodes exactly as its source does, only the matrix work runs elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from densekit.backends import ExportMetadata, require_backend
from densekit.errors import ModelLoadError

# What each kind of model's transformer returns, under the name sentence-transformers reads.
OUTPUT_NAME = {"bi-encoder": "last_hidden_state", "cross-encoder": "logits"}


def graph_output_name(net: Any, kind: str) -> str:
    """The output the traced network hands on: a cross-encoder whose network is a bare
    encoder (its scoring head is a later sentence-transformers module, e.g. a mean-pooling
    head) hands on token vectors, like a bi-encoder."""
    if kind == "cross-encoder" and not type(net).__name__.endswith("ForSequenceClassification"):
        return OUTPUT_NAME["bi-encoder"]
    return OUTPUT_NAME[kind]


def _torch_module_base():
    import torch

    return torch.nn.Module


class _GraphModel(_torch_module_base()):  # type: ignore[misc]
    """A parameter-free torch module whose forward runs a compiled graph on numpy arrays."""

    def __init__(self, config: Any, output_name: str, input_names: list[str]):
        super().__init__()
        self.config = config
        self.output_name = output_name
        self.input_names = input_names

    @property
    def device(self):
        import torch

        return torch.device("cpu")

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def forward(self, **features: Any) -> dict[str, Any]:
        import torch

        feeds = {}
        for name in self.input_names:
            value: Any = features.get(name)
            if value is None and name == "token_type_ids":
                value = torch.zeros_like(features["input_ids"])
            feeds[name] = value.detach().cpu().numpy().astype(np.int64)
        return {self.output_name: torch.from_numpy(np.ascontiguousarray(self._run(feeds)))}


class OnnxRuntimeModel(_GraphModel):
    def __init__(self, graph: Path, config: Any, output_name: str, threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads > 0:
            opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(graph), sess_options=opts, providers=["CPUExecutionProvider"])
        super().__init__(config, output_name, [i.name for i in self.session.get_inputs()])

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, feeds)[0]


class OpenVinoModel(_GraphModel):
    def __init__(self, graph: Path, config: Any, output_name: str, threads: int, precision: str):
        import openvino as ov

        props: dict[str, Any] = {}
        if threads > 0:
            props["INFERENCE_NUM_THREADS"] = threads
        if precision == "fp32":
            # OpenVINO would pick bf16 by itself on CPUs that have it; fp32 means fp32.
            props["INFERENCE_PRECISION_HINT"] = "f32"
        self.compiled = ov.Core().compile_model(str(graph), "CPU", props)
        super().__init__(config, output_name, [i.get_any_name() for i in self.compiled.inputs])

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.compiled(feeds)[0])


def attach_graph(st_model: Any, folder: str | Path, meta: ExportMetadata, threads: int = 0) -> None:
    """Swap the transformer network of a loaded SentenceTransformer / CrossEncoder for the
    exported graph that `meta` names; `threads` 0 keeps the runtime's default."""
    require_backend(meta.backend)
    graph = Path(folder).expanduser() / meta.file_name
    transformer = st_model[0]
    config = transformer.model.config
    output = graph_output_name(transformer.model, meta.kind)
    try:
        if meta.backend == "onnx":
            runtime: _GraphModel = OnnxRuntimeModel(graph, config, output, threads)
        else:
            runtime = OpenVinoModel(graph, config, output, threads, meta.precision)
    except Exception as exc:  # runtimes raise their own exception types for unreadable graphs
        raise ModelLoadError(f"cannot load {meta.backend} graph {graph}: {exc}") from exc
    transformer.model = runtime
    transformer.model_forward_params = None
