"""Exporting a bi-encoder or cross-encoder to ONNX / OpenVINO, in fp32 or int8.

An export is a copy of the source model folder plus the graph (`onnx/model*.onnx` or
`openvino/openvino_model.xml`) and `densekit_export.json`, so the folder still loads under
torch too (the quality check compares both). The transformer network is traced with
torch.onnx (the TorchScript exporter, which needs no extra package); int8 is ONNX Runtime's
dynamic quantisation, or its static (QDQ) quantisation when calibration texts are given.
OpenVINO reads the ONNX graph and saves it as its own IR. Exports are cached by content:
the source's fingerprint, the runtime and the calibration texts.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import shutil
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from densekit.atomic import atomic_dir
from densekit.backends import EXPORT_METADATA, KINDS, ExportMetadata, Runtime, check_runtime, require_backend, write_export_metadata
from densekit.errors import ConfigError, DatasetNotFoundError, ModelLoadError
from densekit.fingerprint import model_fingerprint

log = logging.getLogger(__name__)

# Bumped when the export procedure changes, so cached exports of older code are not reused.
EXPORT_VERSION = 1
OPSET = 17
CALIBRATION_LIMIT = 256
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# Written by the export itself; a source folder that holds them (an export of an export) is
# copied without them.
EXPORT_OUTPUTS = ("onnx", "openvino", EXPORT_METADATA)


def calibration_texts(source: str | Path, limit: int = CALIBRATION_LIMIT) -> list[str]:
    """Texts for static quantisation: a BEIR folder's documents (`corpus.jsonl`), or a text
    file / a folder of `.txt` files, one text per non-empty line."""
    path = Path(source).expanduser()
    texts: list[str] = []
    if path.is_dir() and (path / "corpus.jsonl").is_file():
        with (path / "corpus.jsonl").open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    doc = json.loads(line)
                    texts.append((str(doc.get("title") or "") + " " + str(doc.get("text") or "")).strip())
                if len(texts) >= limit:
                    break
    else:
        files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
        if not path.exists() or not files:
            raise DatasetNotFoundError(f"calibration data not found: {path} (a BEIR folder, a .txt file or a folder of .txt files)")
        for f in files:
            texts.extend(line.strip() for line in f.read_text(encoding="utf-8").splitlines() if line.strip())
    texts = [t for t in texts if t][:limit]
    if not texts:
        raise DatasetNotFoundError(f"calibration data {path} holds no text")
    return texts


def export_cache_root() -> Path:
    from densekit.settings import Settings

    return Path(Settings().cache_dir) / "exports"


def export_key(source: str | Path, kind: str, runtime: Runtime, calibration: Sequence[str] | None) -> str:
    h = hashlib.sha256(f"v{EXPORT_VERSION}|{kind}|{runtime}|".encode())
    h.update(model_fingerprint(source).encode())
    if calibration is not None:
        for t in calibration:
            h.update(hashlib.sha1(t.encode("utf-8")).digest())
    return h.hexdigest()[:32]


def export_model(
    source: str | Path,
    kind: str = "bi-encoder",
    backend: str = "onnx",
    precision: str = "fp32",
    calibration: Sequence[str] | None = None,
    calibration_source: str | None = None,
    use_cache: bool = True,
) -> Path:
    """The folder of `source` exported to `backend`/`precision` (from the cache when an export
    of the same content exists). `calibration` texts make int8 static; without them int8 is
    dynamic. Raises ConfigError for an impossible request, ModelLoadError when the source
    cannot be loaded or traced, BackendUnavailableError when a runtime is not installed."""
    if kind not in KINDS:
        raise ConfigError("kind", f"unknown model kind '{kind}' (use {', '.join(KINDS)})")
    runtime = check_runtime(backend, precision)
    if runtime.backend == "torch":
        raise ConfigError("backend", "export writes an onnx or openvino model; torch runs the source folder itself")
    if calibration is not None and runtime.precision != "int8":
        raise ConfigError("calibration_data", "calibration texts only steer int8 quantisation")
    require_backend(runtime.backend)
    src = Path(source).expanduser()
    if not src.is_dir():
        raise ModelLoadError(f"export needs a local model folder, got '{source}'")
    key = export_key(src, kind, runtime, calibration)
    final = export_cache_root() / key
    if use_cache and (final / EXPORT_METADATA).is_file():
        return final
    with atomic_dir(final) as tmp:
        _copy_source(src, tmp)
        file_name, quantization = _write_graph(src, tmp, kind, runtime, calibration)
        meta = ExportMetadata(
            kind=kind,
            source=str(src),
            source_fingerprint=model_fingerprint(src),
            backend=runtime.backend,
            precision=runtime.precision,
            file_name=file_name,
            quantization=quantization,
            calibration=None if calibration is None else {"source": calibration_source, "texts": len(calibration)},
            created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        )
        write_export_metadata(tmp, meta)
    return final


def copy_export(folder: str | Path, out: str | Path, quality: dict[str, Any] | None = None) -> Path:
    """Copy an export (from the cache) to `out`, recording `quality` in its metadata."""
    from densekit.backends import read_export_metadata

    meta = read_export_metadata(folder)
    if meta is None:
        raise ModelLoadError(f"{folder} is not an exported model folder")
    with atomic_dir(out) as tmp:
        shutil.copytree(folder, tmp, dirs_exist_ok=True)
        write_export_metadata(tmp, meta.model_copy(update={"quality": quality}))
    return Path(out)


def _copy_source(src: Path, dst: Path) -> None:
    for item in src.iterdir():
        if item.name in EXPORT_OUTPUTS or item.name.startswith("."):
            continue
        if item.is_dir():
            shutil.copytree(item, dst / item.name)
        else:
            shutil.copy2(item, dst / item.name)


def _load_torch(src: Path, kind: str):
    try:
        if kind == "bi-encoder":
            from sentence_transformers import SentenceTransformer

            return SentenceTransformer(str(src), device="cpu")
        from sentence_transformers import CrossEncoder

        return CrossEncoder(str(src), device="cpu")
    except Exception as exc:  # IO, config and architecture errors come in many types
        raise ModelLoadError(f"cannot load {kind} '{src}' for export: {exc}") from exc


def _tokenize(model: Any, kind: str, texts: Sequence[str]) -> dict[str, Any]:
    limit = getattr(model, "max_seq_length", None) or 512
    if kind == "cross-encoder":
        # Pairs of neighbouring texts stand in for (query, document) pairs.
        firsts, seconds = list(texts), list(texts[1:]) + list(texts[:1])
        return dict(model.tokenizer(firsts, seconds, padding=True, truncation=True, max_length=limit, return_tensors="pt"))
    return dict(model.tokenizer(list(texts), padding=True, truncation=True, max_length=limit, return_tensors="pt"))


def _write_graph(src: Path, dst: Path, kind: str, runtime: Runtime, calibration: Sequence[str] | None) -> tuple[str, str | None]:
    model = _load_torch(src, kind)
    onnx_dir = dst / "onnx"
    onnx_dir.mkdir()
    fp32_graph = onnx_dir / "model.onnx"
    _trace(model, kind, fp32_graph)
    graph, quantization = fp32_graph, None
    if runtime.precision == "int8":
        graph = onnx_dir / "model_qint8.onnx"
        if calibration is None:
            _quantize_dynamic(fp32_graph, graph)
            quantization = "dynamic"
        else:
            _quantize_static(fp32_graph, graph, model, kind, calibration)
            quantization = "static"
        fp32_graph.unlink()
    if runtime.backend == "openvino":
        import openvino as ov

        xml = dst / "openvino" / "openvino_model.xml"
        xml.parent.mkdir()
        ov.save_model(ov.convert_model(str(graph)), str(xml), compress_to_fp16=False)
        shutil.rmtree(onnx_dir)
        return str(xml.relative_to(dst)), quantization
    return str(graph.relative_to(dst)), quantization


def _trace(model: Any, kind: str, out: Path) -> None:
    import torch

    from densekit.exported_runtime import graph_output_name

    net = model[0].model.eval()
    # Padding in the example keeps the attention mask's code path in the traced graph.
    example = _tokenize(model, kind, ["a short text", "a somewhat longer text, so that the batch needs padding"])
    names = [n for n in INPUT_NAMES if n in example]
    output = graph_output_name(net, kind)

    class Traced(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return getattr(self.net(**dict(zip(names, args)), return_dict=True), output)

    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes[output] = {0: "batch", 1: "sequence"} if output == "last_hidden_state" else {0: "batch"}
    try:
        # The tracer warns about shape checks it freezes; the padded example keeps the ones
        # that matter (the attention mask) on the traced path.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                Traced(),
                tuple(example[n] for n in names),
                str(out),
                dynamo=False,
                input_names=names,
                output_names=[output],
                dynamic_axes=axes,
                opset_version=OPSET,
            )
    except Exception as exc:  # tracing fails with many exception types on unsupported layers
        raise ModelLoadError(f"cannot trace the model to ONNX: {exc}") from exc


def _quantize_dynamic(fp32_graph: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32_graph), str(out), weight_type=QuantType.QInt8)


def _quantize_static(fp32_graph: Path, out: Path, model: Any, kind: str, texts: Sequence[str]) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    batches = [_tokenize(model, kind, texts[i : i + 8]) for i in range(0, len(texts), 8)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it: Iterator[dict[str, Any]] = iter([{k: v.numpy() for k, v in b.items() if k in INPUT_NAMES} for b in batches])

        def get_next(self) -> dict[str, Any] | None:
            return next(self.it, None)

    quantize_static(
        str(fp32_graph),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
