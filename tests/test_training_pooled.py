"""Pooled bi-encoder training: the datasets list, its validation, and batches drawn from one
dataset at a time."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml

from densekit.errors import ConfigError
from densekit.training.biencoder_config import BiEncoderRunConfig, check_paths
from densekit.training.run_config import validate_config


def _resolver(data_dir: Path):
    from densekit.data.folders import resolve_dataset_folder

    return lambda name: resolve_dataset_folder(name, data_dir)


def _cfg(tmp_path, datasets, **data):
    return {"output_dir": str(tmp_path / "out"), "data": {"datasets": datasets, **data}}


def _error(data: dict, resolve=None) -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        cfg = validate_config(BiEncoderRunConfig, data)
        if resolve is not None:
            check_paths(cfg, resolve)
    return exc.value


def test_unknown_dataset_is_named(tmp_path, data_dir):
    err = _error(_cfg(tmp_path, [{"beir": "scifact"}, {"beir": "no-such-set"}]), _resolver(data_dir))
    assert err.field == "data.datasets.1.beir" and "no-such-set" in err.message


def test_missing_train_split_names_the_splits_and_the_pairs_file(tmp_path, data_dir):
    err = _error(_cfg(tmp_path, [{"beir": "scifact"}, {"beir": "wikiqa"}]), _resolver(data_dir))
    assert err.field == "data.datasets.1.beir_split"
    assert "no 'train' split" in err.message and "its splits: test" in err.message
    assert "wikiqa/train_pairs.jsonl" in err.message


def test_pairs_files_resolve_under_the_data_folder(tmp_path, data_dir):
    cfg = validate_config(
        BiEncoderRunConfig, _cfg(tmp_path, [{"beir": "scifact"}, {"name": "wikiqa", "pairs": ["wikiqa/train_pairs.jsonl"]}])
    )
    found = check_paths(cfg, _resolver(data_dir))
    assert found["data.datasets.1.pairs.0"] == data_dir / "wikiqa" / "train_pairs.jsonl"
    err = _error(_cfg(tmp_path, [{"pairs": ["wikiqa/nothing.jsonl"]}]), _resolver(data_dir))
    assert err.field == "data.datasets.0.pairs.0" and "file not found" in err.message


def test_shape_errors(tmp_path):
    assert _error(_cfg(tmp_path, [{"beir": "a"}], beir="b")).message.startswith("give either data.beir/data.pairs or data.datasets")
    err = _error(_cfg(tmp_path, [{"beir": "a"}, {"beir": "x/a"}]))
    assert err.field == "data" and "['a'] repeats" in err.message
    assert _error(_cfg(tmp_path, [{"beir": "a"}], max_queries=5)).message.startswith("with data.datasets, set max_queries")
    assert _error(_cfg(tmp_path, [{"beir": "a"}, {"name": "w"}])).field == "data.datasets.1"  # an entry with no source
    assert _error(_cfg(tmp_path, [{"beir": "a"}], sampling="random")).field == "data.sampling"
    assert _error(_cfg(tmp_path, [{"beir": "a", "weight": 0}])).field == "data.datasets.0.weight"
    err = _error({**_cfg(tmp_path, [{"beir": "a"}, {"beir": "b"}]), "mining": {"enabled": True, "reuse": "m.jsonl"}})
    assert "pooled runs" in err.message
    err = _error({**_cfg(tmp_path, [{"pairs": ["p.jsonl"]}]), "mining": {"enabled": True}})
    assert "needs data.beir or a datasets entry with beir" in err.message


def test_mask_defaults_on_with_qrels_only(tmp_path):
    with_qrels = validate_config(BiEncoderRunConfig, _cfg(tmp_path, [{"beir": "a"}, {"pairs": ["p.jsonl"]}]))
    pairs_only = validate_config(BiEncoderRunConfig, _cfg(tmp_path, [{"pairs": ["p.jsonl"]}]))
    assert with_qrels.loss.mask_enabled(with_qrels.data) and not pairs_only.loss.mask_enabled(pairs_only.data)
    forced = validate_config(BiEncoderRunConfig, {**_cfg(tmp_path, [{"beir": "a"}]), "loss": {"mask_false_negatives": False}})
    assert not forced.loss.mask_enabled(forced.data)


def _toy_datasets(sizes: dict[str, int]):
    from datasets import Dataset, DatasetDict

    return DatasetDict(
        {
            name: Dataset.from_dict({"anchor": [f"{name} q{i}" for i in range(n)], "positive": [f"{name} p{i}" for i in range(n)]})
            for name, n in sizes.items()
        }
    )


def _batches(tmp_path, model_dir, sizes, sampling, weights=None, batch_size=4):
    """Every batch of one epoch of the trainer's own dataloader, as lists of dataset names."""
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer

    from densekit.training.biencoder import training_arguments
    from densekit.training.losses import InfoNCELoss

    datasets = [{"pairs": [f"{n}.jsonl"], "name": n, **({"weight": weights[n]} if weights else {})} for n in sizes]
    cfg = validate_config(BiEncoderRunConfig, {**_cfg(tmp_path, datasets, sampling=sampling), "train": {"batch_size": batch_size}})
    model = SentenceTransformer(str(model_dir), device="cpu")
    trainer = SentenceTransformerTrainer(
        model=model, args=training_arguments(cfg, "cpu", tmp_path), train_dataset=_toy_datasets(sizes), loss=InfoNCELoss(model)
    )
    return [[text.split()[0] for text in batch] for batch in _batch_anchors(trainer)]


def _batch_anchors(trainer):
    loader = trainer.get_train_dataloader()
    dataset = loader.dataset  # the ConcatDataset of the DatasetDict's parts
    return [[dataset[i]["anchor"] for i in indices] for indices in loader.batch_sampler]


def test_proportional_batches_never_mix_datasets_and_use_every_row(tmp_path, tiny_st_model_dir):
    sizes = {"scifact": 40, "nfcorpus": 20, "wikiqa": 8}
    batches = _batches(tmp_path, tiny_st_model_dir, sizes, "proportional")
    assert all(len(set(b)) == 1 for b in batches)
    assert Counter(b[0] for b in batches) == {"scifact": 10, "nfcorpus": 5, "wikiqa": 2}
    # ...and in random order, not one dataset after another
    order = [b[0] for b in batches]
    assert order != sorted(order, key=list(sizes).index)


def test_round_robin_takes_datasets_in_turn(tmp_path, tiny_st_model_dir):
    batches = _batches(tmp_path, tiny_st_model_dir, {"a": 40, "b": 12}, "round_robin")
    assert all(len(set(b)) == 1 for b in batches)
    assert [b[0] for b in batches] == ["a", "b"] * 3


def test_weighted_batches_follow_the_weights(tmp_path, tiny_st_model_dir):
    sizes = {"a": 400, "b": 200, "c": 40}
    batches = _batches(tmp_path, tiny_st_model_dir, sizes, "weighted", weights={"a": 1, "b": 1, "c": 2})
    assert len(batches) == 160 and all(len(set(b)) == 1 for b in batches)
    counts = Counter(b[0] for b in batches)
    # expected 40 / 40 / 80 (binomial sd ~5.5); "c" has only 10 batches per pass, so it restarted
    assert abs(counts["a"] - 40) <= 17 and abs(counts["b"] - 40) <= 17 and abs(counts["c"] - 80) <= 20


def test_weighted_sampler_restarts_on_a_new_shuffle_and_checks_weights():
    from torch.utils.data import BatchSampler, ConcatDataset, RandomSampler
    from torch.utils.data import Dataset as TorchDataset

    from densekit.training.dataset_sampling import WeightedBatchSampler

    class Rows(TorchDataset):
        def __init__(self, n):
            self.n = n

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            return i

    import torch

    parts = [Rows(8), Rows(2)]
    samplers = [BatchSampler(RandomSampler(p, generator=torch.Generator().manual_seed(0)), 2, False) for p in parts]
    sampler = WeightedBatchSampler(ConcatDataset(parts), samplers, seed=3, weights=[1, 9])
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5
    assert all(all(i < 8 for i in b) or all(i >= 8 for i in b) for b in batches)
    assert sum(all(i >= 8 for i in b) for b in batches) >= 3  # the 1-batch dataset was drawn again after running out
    with pytest.raises(ValueError, match="one positive weight per dataset"):
        WeightedBatchSampler(ConcatDataset(parts), samplers, weights=[1])


def _train_split(tiny_beir: Path, dst: Path) -> Path:
    shutil.copytree(tiny_beir, dst)
    (dst / "qrels" / "train.tsv").write_text((dst / "qrels" / "test.tsv").read_text())
    return dst


def test_pooled_run_trains_on_every_dataset_with_the_mask(tmp_path, tiny_beir, tiny_st_model_dir):
    """End to end with a tiny model: two BEIR sets (mined) and a pairs file; the mask is on
    (qrels present) and knows the judged pairs; batches come from one dataset each."""
    from densekit.cli.common import resolve_data
    from densekit.training.biencoder import run_biencoder
    from densekit.training.run_config import load_yaml_config

    a = _train_split(tiny_beir, tmp_path / "set-a")
    b = _train_split(tiny_beir, tmp_path / "set-b")
    pairs = tmp_path / "extra.jsonl"
    pairs.write_text(
        "".join(json.dumps({"query": f"question {i}", "pos": [f"answer {i}"], "neg": [f"other {i}"]}) + "\n" for i in range(6))
    )
    out = tmp_path / "run"
    cfg = {
        "model": str(tiny_st_model_dir),
        "output_dir": str(out),
        "device": "cpu",
        "data": {
            "datasets": [{"beir": str(a)}, {"beir": str(b), "weight": 2}, {"name": "extra", "pairs": [str(pairs)]}],
            "sampling": "weighted",
        },
        "mining": {"enabled": True, "rank_start": 0, "rank_end": 6, "margin": None, "relative_margin": 0.05, "num_negatives": 2},
        "train": {"batch_size": 2, "max_steps": 3, "warmup_ratio": 0.0, "max_seq_length": 32},
        "eval": {"before": False, "after": False},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = run_biencoder(load_yaml_config(BiEncoderRunConfig, path), resolve_data, progress=False)
    assert result.train["steps"] == 3 and (out / "model" / "config.json").is_file()
    summary = json.loads((out / "summary.json").read_text())
    data = summary["data"]
    assert set(data["datasets"]) == {"set-a", "set-b", "extra"}
    assert data["datasets"]["set-a"]["mining"]["queries"] == 3
    assert (out / "hard_negatives-set-a.jsonl").is_file() and (out / "hard_negatives-set-b.jsonl").is_file()
    assert data["false_negative_mask"]["enabled"] and data["false_negative_mask"]["judged_pairs"] > 0
    assert data["examples"]["rows"] == 3 + 3 + 6


@pytest.mark.parametrize("name", ["pooled-infonce", "pooled-mw"])
def test_shipped_pooled_configs_validate_against_the_shared_data(name, data_dir):
    from densekit.training.run_config import load_yaml_config

    path = Path(__file__).resolve().parents[1] / "configs" / "biencoder" / f"{name}.yaml"
    cfg = load_yaml_config(BiEncoderRunConfig, path)
    found = check_paths(cfg, _resolver(data_dir))
    assert [src.label() for src in cfg.data.datasets] == ["scifact", "nfcorpus", "squad_subset", "wikiqa"]
    assert found["data.datasets.3.pairs.0"].name == "train_pairs.jsonl"
    assert cfg.loss.mask_enabled(cfg.data) and cfg.mining.relative_margin == 0.05 and cfg.data.sampling == "weighted"
