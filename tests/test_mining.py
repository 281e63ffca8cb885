"""Hard-negative mining: rank window, false-negative margin, never a judged positive."""

from __future__ import annotations

import random

import pytest

from densekit.training.mining import MiningParams, MiningStats, select_negatives


def _ranked(n=30):
    return [(f"d{i}", 1.0 - i * 0.01) for i in range(n)]


def test_window_and_top_sampling():
    params = MiningParams(rank_start=5, rank_end=15, margin=0.0, num_negatives=3, sampling="top")
    got = select_negatives(_ranked(), set(), positive_score=2.0, params=params, rng=random.Random(0))
    assert [d for d, _ in got] == ["d5", "d6", "d7"]


def test_judged_positives_are_never_negatives():
    params = MiningParams(rank_start=0, rank_end=10, margin=0.0, num_negatives=10, sampling="top")
    stats = MiningStats()
    judged = {"d1", "d3", "d9"}
    got = select_negatives(_ranked(), judged, 2.0, params, random.Random(0), stats)
    assert not {d for d, _ in got} & judged
    assert len(got) == 7 and stats.skipped_judged == 3


def test_margin_drops_candidates_close_to_the_positive():
    params = MiningParams(rank_start=0, rank_end=30, margin=0.05, num_negatives=30, sampling="top")
    stats = MiningStats()
    # best positive 0.9: candidates scoring above 0.85 (d0..d14) are likely false negatives
    got = select_negatives(_ranked(), set(), 0.9, params, random.Random(0), stats)
    assert all(s <= 0.85 + 1e-12 for _, s in got)
    assert stats.skipped_margin == sum(1 for _, s in _ranked() if s > 0.85)


def test_random_sampling_is_seeded_and_within_window():
    params = MiningParams(rank_start=10, rank_end=25, margin=0.0, num_negatives=4, sampling="random")
    a = select_negatives(_ranked(), set(), 2.0, params, random.Random(3))
    b = select_negatives(_ranked(), set(), 2.0, params, random.Random(3))
    assert a == b and len(a) == 4
    assert all(10 <= int(d[1:]) < 25 for d, _ in a)


def test_mining_with_a_model_on_tiny_beir(tmp_path, tiny_beir, tiny_st_model_dir):
    from densekit.data import load_beir
    from densekit.encoder import Encoder
    from densekit.training.mining import mine_hard_negatives, read_mined, write_mined
    from densekit.training.pairs_data import pairs_from_beir

    ds = load_beir(tiny_beir, "test")
    enc = Encoder(str(tiny_st_model_dir), device="cpu")
    params = MiningParams(rank_start=0, rank_end=6, margin=-10.0, num_negatives=3, sampling="top")
    pairs, stats = mine_hard_negatives(enc, ds, pairs_from_beir(ds), params, progress=False)
    assert stats.queries == 3
    for p in pairs:
        judged = {d for d, g in ds.qrels[p.qid].items() if g > 0}
        assert p.neg_ids and not set(p.neg_ids) & judged
        assert p.neg == [f"{ds.corpus[d]['title']} {ds.corpus[d]['text']}" for d in p.neg_ids]
    path = write_mined(pairs, tmp_path / "mined.jsonl")
    back = read_mined(path)
    assert [(p.qid, p.neg_ids, p.pos) for p in back] == [(p.qid, p.neg_ids, p.pos) for p in pairs]


@pytest.mark.parametrize("margin", [-10.0])
def test_grade_zero_judgements_may_be_negatives(tiny_beir, tiny_st_model_dir, margin):
    """q3 judges d1 with grade 0 (judged non-relevant): it is a fair negative."""
    from densekit.data import load_beir
    from densekit.encoder import Encoder
    from densekit.training.mining import mine_hard_negatives
    from densekit.training.pairs_data import pairs_from_beir

    ds = load_beir(tiny_beir, "test")
    enc = Encoder(str(tiny_st_model_dir), device="cpu")
    params = MiningParams(rank_start=0, rank_end=6, margin=margin, num_negatives=6, sampling="top")
    pairs, _ = mine_hard_negatives(enc, ds, pairs_from_beir(ds), params, progress=False)
    q3 = next(p for p in pairs if p.qid == "q3")
    assert "d1" in q3.neg_ids and "d2" not in q3.neg_ids


@pytest.mark.parametrize("fill", ["random", "none"])
def test_short_queries_are_topped_up_with_random_non_positives(tiny_beir, tiny_st_model_dir, fill):
    """A margin that rejects every candidate leaves queries short; 'random' fills them."""
    from densekit.data import load_beir
    from densekit.encoder import Encoder
    from densekit.training.mining import mine_hard_negatives
    from densekit.training.pairs_data import pairs_from_beir

    ds = load_beir(tiny_beir, "test")
    enc = Encoder(str(tiny_st_model_dir), device="cpu")
    params = MiningParams(rank_start=0, rank_end=6, margin=10.0, num_negatives=2, sampling="top", fill_short=fill)
    pairs, stats = mine_hard_negatives(enc, ds, pairs_from_beir(ds), params, progress=False)
    assert stats.queries_short == 3 and stats.skipped_margin > 0
    for p in pairs:
        judged = {d for d, g in ds.qrels[p.qid].items() if g > 0}
        assert not set(p.neg_ids) & judged
        assert len(p.neg_ids) == (2 if fill == "random" else 0)
        assert len(set(p.neg_ids)) == len(p.neg_ids)
    assert stats.filled_random == (6 if fill == "random" else 0)


# Relative margin, max_score and the reference positive, as sentence-transformers'
# mine_hard_negatives defines them, on a toy score table.
TOY = [("judged", 0.95), ("a", 0.90), ("b", 0.78), ("c", 0.75), ("d", 0.60), ("e", -0.10)]


def _keep(positive_score, judged=("judged",), **params):
    base = {"rank_start": 0, "rank_end": 10, "margin": None, "num_negatives": 10, "sampling": "top"}
    stats = MiningStats()
    got = select_negatives(TOY, set(judged), positive_score, MiningParams(**{**base, **params}), random.Random(0), stats)
    return [d for d, _ in got], stats


def test_relative_margin_drops_candidates_above_a_fraction_of_the_positive():
    # positive 0.8, relative margin 0.05: ceiling 0.8 - 0.8 * 0.05 = 0.76; a (0.90) and b (0.78) go
    kept, stats = _keep(0.8, relative_margin=0.05)
    assert kept == ["c", "d", "e"]
    assert stats.skipped_relative_margin == 2 and stats.skipped_judged == 1 and stats.skipped_margin == 0


def test_relative_margin_never_keeps_a_judged_positive_even_far_below_the_ceiling():
    kept, stats = _keep(2.0, judged=("judged", "d", "e"), relative_margin=0.5)  # ceiling 1.0: nothing too close
    assert kept == ["a", "b", "c"] and stats.skipped_judged == 3


def test_relative_margin_with_a_negative_positive_score_stays_below_it():
    # s+ = -0.05: ceiling -0.05 - 0.05 * 0.5 = -0.075 (not (1 - m) * s+ = -0.025, above s+)
    kept, _ = _keep(-0.05, relative_margin=0.5)
    assert kept == ["e"]


def test_max_score_and_margins_combine():
    kept, stats = _keep(0.8, max_score=0.7)
    assert kept == ["d", "e"] and stats.skipped_max_score == 3
    # absolute margin 0.03 -> ceiling 0.77 (drops a, b); relative 0.1 -> 0.72 (drops c); max 0.65 (nothing more: d is 0.60)
    kept, stats = _keep(0.8, margin=0.03, relative_margin=0.1, max_score=0.65)
    assert kept == ["d", "e"]
    assert (stats.skipped_margin, stats.skipped_relative_margin, stats.skipped_max_score) == (2, 1, 0)


def test_no_reference_positive_means_no_margin_but_max_score_still_applies():
    kept, _ = _keep(float("inf"), margin=0.05, relative_margin=0.05)
    assert kept == ["a", "b", "c", "d", "e"]
    kept, _ = _keep(float("inf"), relative_margin=0.05, max_score=0.8)
    assert kept == ["b", "c", "d", "e"]


def test_reference_is_the_best_or_the_weakest_positive():
    from densekit.training.mining import reference_score

    assert reference_score([0.4, 0.9, 0.6]) == 0.9
    assert reference_score([0.4, 0.9, 0.6], "weakest") == 0.4
    assert reference_score([]) == float("inf")
    with pytest.raises(ValueError, match="positive_reference"):
        reference_score([0.1], "median")


def test_mining_config_exposes_the_filters(tmp_path, tiny_beir):
    from densekit.errors import ConfigError
    from densekit.training.biencoder_config import BiEncoderRunConfig
    from densekit.training.run_config import validate_config

    base = {"output_dir": str(tmp_path), "data": {"beir": str(tiny_beir)}}
    cfg = validate_config(BiEncoderRunConfig, base)
    assert (cfg.mining.margin, cfg.mining.relative_margin, cfg.mining.max_score, cfg.mining.positive_reference) == (
        0.05,
        None,
        None,
        "best",
    )
    cfg = validate_config(BiEncoderRunConfig, {**base, "mining": {"margin": None, "relative_margin": 0.05, "max_score": 0.9}})
    assert cfg.mining.margin is None and cfg.mining.relative_margin == 0.05
    with pytest.raises(ConfigError) as exc:
        validate_config(BiEncoderRunConfig, {**base, "mining": {"relative_margin": 1.5}})
    assert exc.value.field == "mining.relative_margin"
    with pytest.raises(ConfigError) as exc:
        validate_config(BiEncoderRunConfig, {**base, "mining": {"positive_reference": "median"}})
    assert exc.value.field == "mining.positive_reference"


@pytest.mark.parametrize(
    "args,field",
    [
        (["--margin", "abc"], "--margin"),
        (["--relative-margin", "1.5"], "--relative-margin"),
        (["--positive-reference", "x"], "--positive-reference"),
        (["--rank-start", "20", "--rank-end", "20"], "--rank-end"),
        (["--sampling", "best"], "--sampling"),
        (["--num-negatives", "0"], "--num-negatives"),
    ],
)
def test_mine_cli_refuses_bad_filters_before_loading_anything(tmp_path, args, field):
    from typer.testing import CliRunner

    from densekit.cli.main import app

    res = CliRunner().invoke(app, ["train", "mine", "--data", str(tmp_path), "--out", str(tmp_path / "m.jsonl"), *args])
    assert res.exit_code != 0
    assert field in (str(res.exception) + res.output)
    assert not (tmp_path / "m.jsonl").exists()
