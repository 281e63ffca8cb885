"""Weight-space interpolation of a fine-tuned bi-encoder with the model it started from (WiSE-FT).

    theta(w) = (1 - w) * theta_base + w * theta_tuned,    0 <= w <= 1

(Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022). w = 0 is the base
model, w = 1 the fine-tuned one. Fine-tuning moves the weights towards the training domains;
part of the way back keeps most of that gain while giving back less of what the base model did
well elsewhere, because the two models lie in one basin of the loss (the second starts from
the first), where a straight line between them stays low. The weight is a choice made on data
that is not a test split (`densekit train interpolate` writes one model per weight; evaluate
each on a dev split and keep the best).

Only floating-point tensors are interpolated; integer buffers (position ids) must be equal in
both models and are kept. The result is written as the fine-tuned model's folder (its
configuration, tokenizer, pooling and normalisation modules), so it loads wherever that one
does.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from densekit.atomic import atomic_dir
from densekit.errors import InvalidInputError, ModelLoadError


def interpolate_state_dicts(base: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor], weight: float) -> dict[str, torch.Tensor]:
    """(1 - weight) * base + weight * tuned for every floating-point tensor; InvalidInputError
    when the two are not the same architecture (other keys, shapes, or integer buffers)."""
    if not 0.0 <= weight <= 1.0:
        raise InvalidInputError(f"weight must be within [0, 1], got {weight}")
    if set(base) != set(tuned):
        only = sorted(set(base) ^ set(tuned))
        raise InvalidInputError(f"the models have different parameters ({len(only)} differ, e.g. {only[:3]}): not the same architecture")
    out: dict[str, torch.Tensor] = {}
    for name, t in tuned.items():
        b = base[name]
        if b.shape != t.shape:
            raise InvalidInputError(f"parameter {name}: shape {tuple(b.shape)} in the base model, {tuple(t.shape)} in the tuned one")
        if t.is_floating_point():
            # In float32 whatever the stored precision, so that w and 1 - w are not rounded twice.
            out[name] = torch.lerp(b.detach().float().cpu(), t.detach().float().cpu(), weight).to(t.dtype)
        elif torch.equal(b.cpu(), t.cpu()):
            out[name] = t.detach().cpu().clone()
        else:
            raise InvalidInputError(f"parameter {name}: integer values differ between the models, so they cannot be interpolated")
    return out


def load_for_interpolation(path: str, what: str):
    """A SentenceTransformer on the CPU (interpolation needs no accelerator); ModelLoadError naming `what` when it cannot load."""
    from sentence_transformers import SentenceTransformer

    from densekit.models import resolve_encoder_name

    try:
        return SentenceTransformer(resolve_encoder_name(path), device="cpu")
    except Exception as exc:  # any loader failure (missing, corrupt weights, bad config) is the user's input
        raise ModelLoadError(f"{what} {path!r} cannot be loaded as a sentence-transformers model: {exc}") from None


def write_interpolated(base_model, tuned_model, targets: list[tuple[float, Path]]) -> None:
    """Write (1 - w) * base + w * tuned to each (w, folder) of `targets`, atomically, from two
    loaded SentenceTransformer models; `tuned_model` ends holding its own weights again."""
    base_state = base_model.state_dict()
    tuned_state = {k: v.detach().clone() for k, v in tuned_model.state_dict().items()}
    try:
        for w, folder in targets:
            tuned_model.load_state_dict(interpolate_state_dicts(base_state, tuned_state, w))
            with atomic_dir(folder) as tmp:
                tuned_model.save(str(tmp))
    finally:
        tuned_model.load_state_dict(tuned_state)


def interpolate_models(base: str, tuned: str, weights: list[float], out: str | Path) -> list[Path]:
    """Write `out/w<weight>/` for each weight (a sentence-transformers folder); returns the folders.
    Each is written atomically, so an interrupted run leaves no half-written model."""
    if not weights:
        raise InvalidInputError("no weight given")
    bad = [w for w in weights if not 0.0 <= w <= 1.0]
    if bad:
        raise InvalidInputError(f"weights must be within [0, 1], got {bad}")
    targets = [(w, Path(out) / f"w{w:g}") for w in weights]
    names = [folder.name for _, folder in targets]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"weights name the same folder twice ({', '.join(names)}): give each weight once")
    write_interpolated(load_for_interpolation(base, "base model"), load_for_interpolation(tuned, "fine-tuned model"), targets)
    return [folder for _, folder in targets]
