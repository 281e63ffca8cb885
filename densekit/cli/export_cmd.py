"""`densekit export`: a bi-encoder or cross-encoder as an ONNX / OpenVINO model, checked.

The export comes from the export cache when the same source, runtime and calibration were
exported before; the quality check runs every time, since it depends on `--data`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from densekit.cli.common import console, resolve_data


def export(
    out: Path = typer.Option(..., "--out", help="model folder to write (atomically replaced)"),
    backend: str = typer.Option(..., "--backend", help="onnx or openvino"),
    precision: str = typer.Option("fp32", "--precision", help="fp32 or int8"),
    model: str = typer.Option(None, "--model", help="bi-encoder folder or name (default: the default bi-encoder)"),
    cross_encoder: str = typer.Option(None, "--cross-encoder", help="export this cross-encoder folder instead of a bi-encoder"),
    calibration_data: Path = typer.Option(
        None,
        "--calibration-data",
        help="int8: static quantisation calibrated on these texts (a BEIR folder, a .txt file or a folder of .txt files); without it int8 is dynamic",
    ),
    data: str = typer.Option(
        None, "--data", help="BEIR folder (or name under DENSEKIT_DATA_DIR) on which nDCG@10 of the export and its source are compared"
    ),
    max_ndcg_drop: float = typer.Option(
        0.005, "--max-ndcg-drop", min=0.0, help="largest nDCG@10 drop allowed before the export is refused"
    ),
    force: bool = typer.Option(False, "--force", help="write the export even when it loses more nDCG@10 than allowed"),
) -> None:
    """Export a model to ONNX Runtime or OpenVINO (fp32 or int8), check it against its source, write it to --out."""
    from densekit.errors import ConfigError
    from densekit.eval.export_guard import check_bi_encoder_export, check_cross_encoder_export
    from densekit.export import calibration_texts, copy_export, export_model
    from densekit.models import resolve_encoder_name

    if model and cross_encoder:
        raise ConfigError("model", "pass --model or --cross-encoder, not both")
    kind = "cross-encoder" if cross_encoder else "bi-encoder"
    source = str(Path(cross_encoder).expanduser()) if cross_encoder else resolve_encoder_name(model)
    texts = calibration_texts(calibration_data) if calibration_data is not None else None
    with console.status(f"exporting {source} to {backend}/{precision}"):
        folder = export_model(
            source, kind, backend, precision, calibration=texts, calibration_source=str(calibration_data) if calibration_data else None
        )
    with console.status("checking the export against its source"):
        if kind == "bi-encoder":
            quality = check_bi_encoder_export(
                source, folder, resolve_data(data) if data else None, max_ndcg_drop=max_ndcg_drop, force=force
            )
        else:
            if data:
                raise ConfigError("data", "the nDCG@10 check covers bi-encoders; a cross-encoder export is checked by score agreement")
            quality = check_cross_encoder_export(source, folder)
    copy_export(folder, out, quality.as_dict())
    line = f"wrote {out} ({backend}/{precision}): cosine to source min {quality.cosine_min:.5f}, mean {quality.cosine_mean:.5f}"
    if quality.ndcg_drop is not None:
        line += f"; nDCG@10 {quality.ndcg_source:.4f} -> {quality.ndcg_export:.4f} (drop {quality.ndcg_drop:+.4f})"
    if quality.forced and not quality.passed:
        line += " [forced past the quality guard]"
    console.print(line, highlight=False)
