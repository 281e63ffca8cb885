"""Pooled reranker training: several datasets, batches from one at a time, a held-out dev
split and the learning curve measured on it, length-packed LLM batches.

Tiny random models and tiny BEIR folders made in tmp_path keep each test to a few seconds."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from densekit.errors import ConfigError
from densekit.training.rerank.config import RerankerRunConfig
from densekit.training.run_config import validate_config

QUERIES = {
    "q1": "what is the capital of France",
    "q2": "library for vector similarity search",
    "q3": "pets descended from wolves",
    "q4": "small carnivorous mammals kept at home",
    "q5": "programming language named after a snake",
    "q6": "capital city of Italy",
}
TRAIN = {"q1": "d3", "q2": "d5", "q3": "d2", "q4": "d1", "q5": "d4", "q6": "d6"}


def _beir(folder: Path, train: dict[str, str], dev: dict[str, str] | None = None) -> Path:
    """A BEIR folder over the shared six-document corpus with a train split (and a dev split)."""
    from service_support import write_corpus

    write_corpus(folder)
    (folder / "qrels").mkdir()
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items()))
    for split, qrels in (("train", train), ("dev", dev)):
        if qrels:
            lines = "".join(f"{q}\t{d}\t1\n" for q, d in qrels.items())
            (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + lines)
    return folder


@pytest.fixture()
def two_sets(tmp_path) -> tuple[Path, Path]:
    """set-a: six training queries (its dev queries are held out of them); set-b: four
    training queries and its own dev split of two other queries (as NFCorpus has)."""
    a = _beir(tmp_path / "set-a", TRAIN)
    b = _beir(tmp_path / "set-b", {q: TRAIN[q] for q in ("q1", "q2", "q3", "q4")}, dev={q: TRAIN[q] for q in ("q5", "q6")})
    return a, b


def _resolve(name: str) -> Path:
    p = Path(name)
    if not p.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {name}")
    return p


def _cfg(out: Path, datasets: list[dict], model: str, retriever: str, kind: str, **over) -> dict:
    cfg = {
        "kind": kind,
        "model": model,
        "output_dir": str(out),
        "seed": 0,
        "data": {"datasets": datasets, "sampling": "weighted"},
        "negatives": {"retriever": retriever, "top_k": 4, "hard": 2, "random": 1},
        "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "train": {"max_steps": 4, "queries_per_batch": 2, "batch_size": 4, "max_length": 96, "logging_steps": 2, "device": "cpu"},
        "eval": {"dev": {"queries": 2, "top_n": 4, "batch_size": 8}, "every_steps": 2},
    }
    for key, value in over.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
    return cfg


def _error(data: dict) -> ConfigError:
    from densekit.training.rerank.run import check_paths

    with pytest.raises(ConfigError) as exc:
        check_paths(validate_config(RerankerRunConfig, data), _resolve)
    return exc.value


def test_bad_pooled_configs_name_the_key(tmp_path, two_sets):
    a, b = (str(p) for p in two_sets)
    base = _cfg(tmp_path / "out", [{"beir": a}, {"beir": b}], "m", "r", "cross-encoder")
    err = _error({**base, "data": {"datasets": [{"beir": a}, {"beir": str(tmp_path / "no-such-set")}]}})
    assert err.field == "data.datasets.1.beir" and "no-such-set" in err.message
    for fraction in (0, 1.5):
        err = _error({**base, "eval": {"dev": {"fraction": fraction}}})
        assert err.field == "eval.dev.fraction"
    err = _error({**base, "eval": {"dev": {"queries": 5, "fraction": 0.1}}})
    assert err.field == "eval.dev" and "not both" in err.message
    err = _error({**base, "eval": {"every_steps": 10}})
    assert "eval.every_steps needs eval.dev" in err.message
    err = _error({**base, "negatives": {"reuse": "m.jsonl"}})
    assert "negatives.reuse" in err.message and "mined" in err.message
    err = _error({**base, "data": {"datasets": [{"beir": a}, {"beir": a}]}})
    assert "repeats" in err.message
    err = _error({**base, "data": {"datasets": [{"beir": a}, {"beir": b, "mined": str(tmp_path / "gone.jsonl")}]}})
    assert err.field == "data.datasets.1.mined"
    assert not (tmp_path / "out").exists()


def test_dev_split_is_held_out_and_reproducible(tmp_path, two_sets, tiny_st_model_dir):
    """set-a holds two training queries out; set-b draws its dev queries from its dev qrels
    and keeps every training query; the same seed draws the same dev queries."""
    from densekit.training.rerank.train_data import load_training_data

    a, b = two_sets
    cfg = validate_config(
        RerankerRunConfig, _cfg(tmp_path / "out", [{"beir": str(a)}, {"beir": str(b)}], "m", str(tiny_st_model_dir), "llm")
    )
    data = load_training_data(cfg, tmp_path / "out", _resolve, progress=False, write=False)
    dev = {d.name: d for d in data.dev}
    assert set(dev) == {"set-a", "set-b"}
    held = set(dev["set-a"].dataset.queries)
    assert len(held) == 2 and dev["set-a"].source == "held out of 'train'"
    assert set(dev["set-b"].dataset.queries) == {"q5", "q6"} and dev["set-b"].source == "qrels split 'dev'"
    trained = Counter((g.dataset, g.qid) for g in data.groups)
    assert {q for (name, q) in trained if name == "set-a"} == set(TRAIN) - held  # dev queries never train
    assert {q for (name, q) in trained if name == "set-b"} == {"q1", "q2", "q3", "q4"}
    for d in data.dev:  # each dev query's dense top-n, the queries' judgements kept whole
        assert set(d.first_stage) == set(d.dataset.queries) and all(0 < len(hits) <= 5 for hits in d.first_stage.values())
    again = load_training_data(cfg, tmp_path / "out", _resolve, progress=False, write=False)
    assert [sorted(d.dataset.queries) for d in again.dev] == [sorted(d.dataset.queries) for d in data.dev]


def test_pairs_dataset_holds_pairs_out_with_their_own_candidates(tiny_st_model_dir):
    from densekit.data.pairs import TrainingPair
    from densekit.encoder import Encoder
    from densekit.training.rerank.config import DevConfig
    from densekit.training.rerank.dev_split import pairs_dev, retrieve_first_stage

    pairs = [TrainingPair(query=f"question {i}", pos=[f"answer {i}"], neg=[f"wrong {i}.{j}" for j in range(3)]) for i in range(6)]
    dev, rest = pairs_dev("wikiqa", pairs, DevConfig(queries=2), seed=0)
    assert len(dev.dataset.queries) == 2 and len(rest) == 4
    assert not set(dev.dataset.queries.values()) & {p.query for p in rest}
    retrieve_first_stage(dev, Encoder(str(tiny_st_model_dir), device="cpu"), top_n=20)
    for qid, hits in dev.first_stage.items():
        assert set(hits) == set(dev.candidates[qid]) and len(hits) == 4  # only its own candidates
        assert sum(dev.dataset.qrels[qid].values()) == 1
    with pytest.raises(ConfigError, match="leaves none to train on"):
        pairs_dev("wikiqa", pairs[:2], DevConfig(queries=5), seed=0)


def _run(cfg: dict, tmp_path: Path) -> dict:
    from densekit.training.rerank.run import train_reranker
    from densekit.training.run_config import load_yaml_config

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return train_reranker(load_yaml_config(RerankerRunConfig, path), _resolve, log=lambda m: None, progress=False)


def _resume(cfg: dict, tmp_path: Path) -> dict:
    from densekit.training.rerank.run import train_reranker
    from densekit.training.run_config import load_yaml_config

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return train_reranker(load_yaml_config(RerankerRunConfig, path), _resolve, log=lambda m: None, progress=False, resume=True)


def _curve_checks(out: Path, steps: list[int], names: set[str]) -> dict:
    curve = json.loads((out / "learning_curve.json").read_text())
    assert [p["step"] for p in curve["points"]] == steps
    for p in curve["points"]:
        assert set(p["datasets"]) == names and all(0.0 <= v <= 1.0 for v in p["datasets"].values())
        assert 0.0 <= p["pooled"] <= 1.0
    assert set(curve["datasets"]) == names and all(v["queries"] == 2 for v in curve["datasets"].values())
    assert (out / "learning_curve.png").stat().st_size > 1000
    return curve


def test_pooled_cross_encoder_run_with_learning_curve(tmp_path, two_sets, tiny_st_model_dir):
    a, b = two_sets
    out = tmp_path / "ce"
    cfg = _cfg(
        out,
        [{"beir": str(a), "weight": 2}, {"beir": str(b)}],
        str(tiny_st_model_dir.parent / "bert"),
        str(tiny_st_model_dir),
        "cross-encoder",
        lora={"enabled": False},
        train={"max_steps": 5, "learning_rate": 1e-3, "max_length": 64, "save_steps": 4, "save_total_limit": 1},
    )
    summary = _run(cfg, tmp_path)  # checkpoints pickle the weighted sampler with the trainer's arguments
    _curve_checks(out, [0, 2, 4, 5], {"set-a", "set-b"})  # at start, every 2 steps, and after the last
    assert (out / "mined-set-a.jsonl").is_file() and (out / "mined-set-b.jsonl").is_file()
    assert summary["datasets"]["set-a"]["dev"] == {"queries": 2, "from": "held out of 'train'"}
    assert summary["datasets"]["set-b"]["dev"] == {"queries": 2, "from": "qrels split 'dev'"}
    mined_qids = {json.loads(line)["qid"] for line in (out / "mined-set-a.jsonl").read_text().splitlines()}
    assert len(mined_qids) == 4  # six training queries, two held out for dev
    assert summary["learning_curve"]["last"]["step"] == 5 and (out / "model").is_dir()

    # Resumed from its checkpoint with more steps: the groups it trained on (not a new mining
    # run), the curve's points so far kept, new ones added.
    cfg["train"]["max_steps"] = 6
    resumed = _resume(cfg, tmp_path)
    assert resumed["datasets"]["set-a"]["mined"] == str(out / "mined-set-a.jsonl")
    _curve_checks(out, [0, 2, 4, 5, 6], {"set-a", "set-b"})  # 5: the first run's last step


def test_pooled_cross_encoder_batches_come_from_one_dataset(tmp_path, two_sets, tiny_st_model_dir):
    from densekit.training.rerank.cross_trainer import build_cross_trainer
    from densekit.training.rerank.train_data import RerankGroup

    cfg = validate_config(
        RerankerRunConfig,
        _cfg(tmp_path, [{"beir": "x/a"}, {"beir": "x/b", "weight": 3}], str(tiny_st_model_dir.parent / "bert"), "r", "cross-encoder"),
    )
    groups = [
        RerankGroup(f"{name} query {i}", [f"{name} pos {i}"], [f"{name} neg {i}.{j}" for j in range(3)], dataset=name)
        for name in ("a", "b")
        for i in range(10)
    ]
    trainer = build_cross_trainer(cfg, groups, tmp_path / "model", log=lambda m: None, progress=False)
    loader = trainer.get_train_dataloader()
    rows = loader.dataset
    batches = [[rows[i]["query"].split()[0] for i in idx] for idx in loader.batch_sampler]
    assert batches and all(len(set(b)) == 1 for b in batches)
    counts = Counter(b[0] for b in batches)
    assert counts["b"] > counts["a"] > 0  # weight 3 vs 1


def _llm_groups():
    from densekit.training.rerank.train_data import RerankGroup

    out = []
    for name, n in (("a", 6), ("b", 3)):
        for i in range(n):
            long = " ".join(["word"] * (3 + 7 * i))  # prompt lengths that differ between groups
            out.append(
                RerankGroup(f"{name} query {i}", [f"{name} relevant {i} {long}"], [f"{name} other {i}.{j}" for j in range(3)], dataset=name)
            )
    return out


def _llm_cfg(tmp_path, tiny_llm_dir, objective="sft", **train):
    return validate_config(
        RerankerRunConfig,
        _cfg(
            tmp_path,
            [{"pairs": ["a.jsonl"], "name": "a"}, {"pairs": ["b.jsonl"], "name": "b", "weight": 2}],
            str(tiny_llm_dir),
            "r",
            "llm",
            objective=objective,
            negatives={"hard": 2, "random": 0},
            train={"max_steps": 8, **train},
        ),
    )


def test_pooled_llm_batches_come_from_one_dataset_same_for_sft_and_cl(tmp_path, tiny_llm_dir):
    from densekit.training.rerank.llm_trainer import build_trainer

    quiet = lambda m: None  # noqa: E731
    sft, _ = build_trainer(_llm_cfg(tmp_path, tiny_llm_dir, "sft"), _llm_groups(), tmp_path / "sft", quiet, False)
    cl, _ = build_trainer(_llm_cfg(tmp_path, tiny_llm_dir, "cl"), _llm_groups(), tmp_path / "cl", quiet, False)
    loader = sft.get_train_dataloader()
    names = [[sft.train_dataset[i]["dataset"] for i in idx] for idx in loader.batch_sampler]
    assert len(names) == 8 and all(len(b) == 2 and len(set(b)) == 1 for b in names)
    assert {b[0] for b in names} == {"a", "b"}
    a = [x["input_ids"] for x in sft.get_train_dataloader()]
    b = [x["input_ids"] for x in cl.get_train_dataloader()]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_packing_keeps_the_draws_and_cuts_padding(tmp_path, tiny_llm_dir):
    """With pack_window the run sees the same draws (a permutation within each window) in
    batches of one dataset, with fewer padded positions; SFT and CL stay identical."""
    from densekit.training.rerank.llm_trainer import build_trainer

    quiet = lambda m: None  # noqa: E731
    plain, _ = build_trainer(_llm_cfg(tmp_path, tiny_llm_dir, max_steps=12), _llm_groups(), tmp_path / "p", quiet, False)
    packed, _ = build_trainer(_llm_cfg(tmp_path, tiny_llm_dir, max_steps=12, pack_window=6), _llm_groups(), tmp_path / "k", quiet, False)
    packed_cl, _ = build_trainer(
        _llm_cfg(tmp_path, tiny_llm_dir, "cl", max_steps=12, pack_window=6), _llm_groups(), tmp_path / "c", quiet, False
    )

    def draws(trainer):
        return sorted(json.dumps(trainer.train_dataset[i], sort_keys=True) for i in range(len(trainer.train_dataset)))

    assert draws(plain) == draws(packed)
    loader = packed.get_train_dataloader()
    assert all(len({packed.train_dataset[i]["dataset"] for i in idx}) == 1 for idx in loader.batch_sampler)
    pad = lambda t: sum(int((x["attention_mask"] == 0).sum()) for x in t.get_train_dataloader())  # noqa: E731
    assert pad(packed) < pad(plain)
    a = [x["input_ids"] for x in packed.get_train_dataloader()]
    b = [x["input_ids"] for x in packed_cl.get_train_dataloader()]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_pooled_llm_run_with_dev_curve_and_short_documents(tmp_path, two_sets, tiny_llm_dir, tiny_st_model_dir):
    from densekit.rerankers import load_reranker

    a, b = two_sets
    out = tmp_path / "llm"
    cfg = _cfg(
        out,
        [{"beir": str(a)}, {"beir": str(b), "weight": 2}],
        str(tiny_llm_dir),
        str(tiny_st_model_dir),
        "llm",
        train={"max_length": 160, "max_doc_tokens": 12, "pack_window": 2, "learning_rate": 1e-2},
        eval={"dev": {"queries": 2, "top_n": 4, "at_start": False}, "every_steps": 2},
    )
    _run(cfg, tmp_path)
    _curve_checks(out, [2, 4], {"set-a", "set-b"})
    meta = json.loads((out / "model" / "densekit_reranker.json").read_text())
    assert meta["max_doc_tokens"] == 12
    rr = load_reranker(str(out / "model"), device="cpu")
    long_doc = " ".join(["paris"] * 80)
    (ids,) = rr.prompt.encode_many("capital of France", [long_doc])
    (full,) = load_reranker(str(tiny_llm_dir), device="cpu", max_length=160).prompt.encode_many("capital of France", [long_doc])
    assert len(full) == 160 and len(ids) < 160 - 20  # the document part was cut to 12 tokens, the rest of the prompt kept
    assert ids[-8:] == full[-8:]


def test_single_dataset_dev_curve_keeps_mined_jsonl(tmp_path, two_sets, tiny_st_model_dir):
    """A one-dataset config with eval.dev: the same files as before (mined.jsonl) plus the curve."""
    a, _ = two_sets
    out = tmp_path / "single"
    cfg = _cfg(out, [], str(tiny_st_model_dir.parent / "bert"), str(tiny_st_model_dir), "cross-encoder", lora={"enabled": False})
    cfg["data"] = {"beir": str(a)}
    cfg["train"].update(max_steps=2, max_length=64)
    _run(cfg, tmp_path)
    assert (out / "mined.jsonl").is_file()
    curve = json.loads((out / "learning_curve.json").read_text())
    assert [p["step"] for p in curve["points"]] == [0, 2] and set(curve["datasets"]) == {"set-a"}


@pytest.mark.parametrize("name", ["pooled-minilm-ce", "pooled-smollm2-sft", "pooled-smollm2-cl"])
def test_shipped_pooled_reranker_configs_validate(name, data_dir):
    from densekit.data.folders import resolve_dataset_folder
    from densekit.training.dataset_sources import check_source_paths
    from densekit.training.run_config import load_yaml_config

    path = Path(__file__).resolve().parents[1] / "configs" / "rerank" / f"{name}.yaml"
    cfg = load_yaml_config(RerankerRunConfig, path)
    check_source_paths(
        cfg.data.model_copy(update={"datasets": [d.model_copy(update={"mined": None}) for d in cfg.data.datasets]}),
        lambda n: resolve_dataset_folder(n, data_dir),
    )
    assert [src.label() for src in cfg.data.datasets] == ["scifact", "nfcorpus", "squad_subset", "wikiqa"]
    assert cfg.eval.dev is not None and cfg.eval.every_steps
