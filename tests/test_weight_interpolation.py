"""WiSE-FT: (1 - w) * base + w * tuned, checked tensor by tensor and through the saved models'
embeddings; models that are not the same architecture are refused with a clear error."""

from __future__ import annotations

import pytest
import torch
from cli_support import run_cli

from densekit.errors import InvalidInputError
from densekit.training.weight_interpolation import interpolate_models, interpolate_state_dicts


@pytest.fixture(scope="module")
def base_and_tuned(tiny_st_model_dir, tmp_path_factory):
    """The tiny model and a 'fine-tuned' copy whose every float weight moved by random noise."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_st_model_dir), device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    tuned = tmp_path_factory.mktemp("tuned") / "model"
    model.save(str(tuned))
    return tiny_st_model_dir, tuned


def test_state_dict_interpolation_is_the_straight_line():
    base = {"w": torch.tensor([0.0, 2.0]), "ids": torch.tensor([0, 1])}
    tuned = {"w": torch.tensor([4.0, -2.0]), "ids": torch.tensor([0, 1])}
    mid = interpolate_state_dicts(base, tuned, 0.25)
    assert mid["w"].tolist() == [1.0, 1.0] and mid["ids"].tolist() == [0, 1]
    assert interpolate_state_dicts(base, tuned, 0.0)["w"].tolist() == [0.0, 2.0]
    assert interpolate_state_dicts(base, tuned, 1.0)["w"].tolist() == [4.0, -2.0]


@pytest.mark.parametrize(
    "tuned, words",
    [
        ({"w": torch.zeros(2), "extra": torch.zeros(1), "ids": torch.tensor([0, 1])}, "different parameters"),
        ({"w": torch.zeros(3), "ids": torch.tensor([0, 1])}, "shape"),
        ({"w": torch.zeros(2), "ids": torch.tensor([1, 0])}, "integer values differ"),
    ],
)
def test_other_architectures_are_refused(tuned, words):
    base = {"w": torch.zeros(2), "ids": torch.tensor([0, 1])}
    with pytest.raises(InvalidInputError, match=words):
        interpolate_state_dicts(base, tuned, 0.5)


def test_saved_models_encode_as_their_weights_say(base_and_tuned, tmp_path):
    from sentence_transformers import SentenceTransformer

    base, tuned = base_and_tuned
    folders = interpolate_models(str(base), str(tuned), [0.0, 0.5, 1.0], tmp_path / "wise")
    assert [f.name for f in folders] == ["w0", "w0.5", "w1"]
    texts = ["a cat on a mat", "dense retrieval with faiss"]

    def encode(path):
        return SentenceTransformer(str(path), device="cpu").encode(texts, convert_to_tensor=True)

    assert torch.allclose(encode(folders[0]), encode(base), atol=1e-6)
    assert torch.allclose(encode(folders[2]), encode(tuned), atol=1e-6)
    assert not torch.allclose(encode(folders[1]), encode(base), atol=1e-3)
    b = dict(SentenceTransformer(str(base), device="cpu").named_parameters())
    t = dict(SentenceTransformer(str(tuned), device="cpu").named_parameters())
    m = dict(SentenceTransformer(str(folders[1]), device="cpu").named_parameters())
    for name in b:
        assert torch.allclose(m[name], (b[name] + t[name]) / 2, atol=1e-6), name


def test_cli_writes_one_folder_per_weight_and_refuses_bad_weights(base_and_tuned, tmp_path, capsys):
    base, tuned = base_and_tuned
    out = tmp_path / "wise"
    assert run_cli(["train", "interpolate", "--base", str(base), "--tuned", str(tuned), "-w", "0.3", "-w", "0.7", "--out", str(out)]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["w0.3", "w0.7"]
    assert run_cli(["train", "interpolate", "--base", str(base), "--tuned", str(tuned), "-w", "1.5", "--out", str(tmp_path / "bad")]) == 2
    assert "error: weights must be within [0, 1], got [1.5]" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert run_cli(["train", "interpolate", "--base", str(tmp_path / "nope"), "--tuned", str(tuned), "-w", "0.5", "--out", str(out)]) == 2
    assert "error: base model" in capsys.readouterr().err
    assert run_cli(["train", "interpolate", "--base", str(base), "--tuned", str(tuned), "-w", "0.5", "-w", "0.5", "--out", str(out)]) == 2
    assert "same folder twice" in capsys.readouterr().err
