"""Index scale benchmark: the synthetic-vector sampler, chunked exact search, a tiny run and its resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from densekit.bench import scale, scale_data
from densekit.bench.synthetic_vectors import BLOCK, Mixture, calibrate_noise, fit_mixture, nn_cosine, sample


def _clustered(n: int, d: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around k well-separated random directions, and each one's cluster."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    label = rng.integers(0, k, size=n)
    x = centres[label] + 0.08 * rng.standard_normal((n, d)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), label


@pytest.fixture(scope="module")
def mixture() -> Mixture:
    real, _ = _clustered(1200, 16, 4, seed=0)
    return fit_mixture(real, n_components=4, seed=0)


def test_mixture_samples_are_unit_vectors_with_the_fitted_components(mixture):
    x, comp = sample(mixture, 4000, seed=3)
    assert x.dtype == np.float32 and x.shape == (4000, 16)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    # each draw lies nearest its own component's (normalised) mean
    means = mixture.means / np.linalg.norm(mixture.means, axis=1, keepdims=True)
    assert np.mean(np.argmax(x @ means.T, axis=1) == comp) > 0.99
    # components are drawn in proportion to the fitted weights
    freq = np.bincount(comp, minlength=4) / len(comp)
    np.testing.assert_allclose(freq, mixture.weights, atol=0.03)


def test_mixture_sampling_is_deterministic_and_prefix_stable(mixture):
    a, _ = sample(mixture, 50, seed=1)
    b, _ = sample(mixture, 50, seed=1)
    c, _ = sample(mixture, 50, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    longer, _ = sample(mixture, BLOCK + 10, seed=1)  # a larger corpus starts with the same vectors
    np.testing.assert_array_equal(longer[:50], a)


def test_noise_calibration_matches_the_real_nearest_neighbour_cosine(mixture):
    real, _ = _clustered(1200, 16, 4, seed=0)
    tuned = calibrate_noise(mixture, real, probes=300)
    assert 0 < tuned.noise_scale < 1
    rows = np.arange(300)
    synth, _ = sample(tuned, len(real), seed=1)
    assert np.median(nn_cosine(synth, rows)) == pytest.approx(np.median(nn_cosine(real, rows)), abs=0.01)
    raw, _ = sample(mixture, len(real), seed=1)
    assert np.median(nn_cosine(raw, rows)) < np.median(nn_cosine(synth, rows))  # raw draws are more isolated


def test_chunked_reads_and_exact_search_match_in_memory(tmp_path):
    x, _ = _clustered(103, 8, 3, seed=5)
    path = tmp_path / "v.npy"
    np.save(path, x)
    np.testing.assert_array_equal(scale_data.read_rows(path, 10, 20), x[10:20])
    rows = np.array([2, 50, 51, 102])
    np.testing.assert_array_equal(scale_data.gather_rows(path, rows, 103, chunk=7), x[rows])
    q = x[:5] + 0.01
    s, r = scale_data.exact_topk(path, 90, q, 4, chunk=7)
    want = np.argsort(-(q @ x[:90].T), axis=1, kind="stable")[:, :4]
    np.testing.assert_array_equal(r, want)
    np.testing.assert_allclose(s, np.take_along_axis(q @ x[:90].T, want, axis=1), rtol=1e-5)


def _prepared(out, dim: int = 32) -> None:
    real, _ = _clustered(1500, dim, 8, seed=1)
    queries, _ = _clustered(300, dim, 8, seed=2)
    scale_data.prepare_from_arrays(out, real, queries, queries[:50], {"sets": ["test"]}, n_components=8)


def test_tiny_run_writes_sane_results_and_resumes(tmp_path):
    out = tmp_path / "scale"
    _prepared(out)
    lock = tmp_path / "cpu.lock"
    rows = scale.run(out, [2000], ["flat", "ivf"], data_dir=tmp_path, lock=str(lock))
    by_kind = {r["kind"]: r for r in rows}
    assert set(by_kind) == {"flat", "ivf"}, rows
    flat, ivf = by_kind["flat"], by_kind["ivf"]
    assert flat["points"][0]["recall@10"] == 1.0
    d = 32
    # the flat file holds 4*d bytes of vector and an 8-byte id per row, plus a header
    assert flat["code_bytes_per_vector"] == 4 * d
    assert 4 * d + 8 <= flat["index_bytes_per_vector"] <= 4 * d + 8 + 0.5
    assert ivf["build_params"]["nlist"] == 51 and ivf["train_s"] > 0
    assert 0.5 < ivf["points"][0]["recall@10"] <= 1.0
    for r in rows:
        assert r["n"] == 2000 and r["add_s"] > 0 and r["points"][0]["qps_1"] > 0 and r["points"][0]["qps_256"] > 0
        # the peak counts from the start of the build: a 256 kB index costs a few MB, not the imports' transient memory
        assert 0 <= r["rss_after_build_mb"] <= r["peak_rss_build_mb"] < 50
    meta = json.loads((out / "data" / "data.json").read_text())
    assert meta["real_vectors"] == 1500 and len(meta["sanity"]["query_top1_synthetic"]) == 5
    assert "| flat | exact | 1.000 |" in scale.report(out)

    # a second run skips every finished cell
    assert scale.run(out, [2000], ["flat", "ivf"], data_dir=tmp_path, lock=str(lock)) == []
    assert len(scale.read_results(out)) == 2

    # a failed cell is run again; finished ones are not
    scale.append_result(out, {"kind": "ivfpq", "n": 2000, "error": "exit -9"})
    again = scale.run(out, [2000], ["flat", "ivfpq"], data_dir=tmp_path, lock=str(lock))
    assert [r["kind"] for r in again] == ["ivfpq"] and "error" not in again[0]
    assert again[0]["code_bytes_per_vector"] == 16


def test_a_refitted_mixture_redraws_the_synthetic_vectors(tmp_path):
    out = tmp_path / "scale"
    _prepared(out)
    path = scale_data.ensure_vectors(out, 1600)
    scale_data.ensure_ground_truth(out, 1600)
    first = np.load(path)
    assert scale_data.vectors_ready(out, 1600) and not scale_data.vectors_ready(out, 1601)
    assert scale_data.ensure_vectors(out, 1550) == path and (out / "data" / "gt-1600.npy").is_file()  # long enough, same mixture
    mix_path = out / "data" / "mixture.npz"
    mix = Mixture.load(mix_path)
    Mixture(mix.weights, mix.means, mix.variances, noise_scale=mix.noise_scale / 2).save(mix_path)
    assert not scale_data.vectors_ready(out, 1600)
    second = np.load(scale_data.ensure_vectors(out, 1600))
    np.testing.assert_array_equal(second[:1500], first[:1500])  # the real rows
    assert not np.allclose(second[1500:], first[1500:])
    assert not (out / "data" / "gt-1600.npy").exists()  # ground truth of the old vectors is gone


def test_scaling_exponent_recovers_a_power_law():
    pts = [(n, 3.0 * n**0.5) for n in (1_000, 10_000, 100_000)]
    assert scale.scaling_exponent(pts) == pytest.approx(0.5)
    assert scale.scaling_exponent([(1000, 1.0)]) is None
