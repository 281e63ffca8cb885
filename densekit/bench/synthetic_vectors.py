"""Synthetic embedding vectors that keep the structure of real ones, for index scale tests.

Recipe: a Gaussian mixture with diagonal covariances is fitted (EM, k-means++ start) to the
real unit vectors; a synthetic vector is a draw from one component (chosen by the fitted
weights) renormalised to unit length. A diagonal Gaussian spreads its variance over all
dimensions, while real embeddings lie near a low-dimensional surface, so raw draws are far
more isolated than real documents; the noise is therefore scaled by one factor, chosen so a
synthetic corpus as large as the real one has the real corpus's median nearest-neighbour cosine.
Draws are made in fixed-size blocks, block b from generators seeded by (seed, b), so the
first n vectors are the same whatever the total.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BLOCK = 65_536  # rows per seeded block; part of the recipe (changing it changes the vectors)


@dataclass(frozen=True)
class Mixture:
    """A fitted diagonal-covariance Gaussian mixture: weights (k,), means (k, d), variances (k, d)."""

    weights: np.ndarray
    means: np.ndarray
    variances: np.ndarray
    noise_scale: float = 1.0  # multiplies every component's standard deviations

    @property
    def n_components(self) -> int:
        return len(self.weights)

    def save(self, path: Path) -> None:
        tmp = Path(path).with_suffix(".tmp.npz")
        np.savez(tmp, weights=self.weights, means=self.means, variances=self.variances, noise_scale=np.float64(self.noise_scale))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Mixture:
        z = np.load(path, allow_pickle=False)
        return cls(z["weights"], z["means"], z["variances"], float(z["noise_scale"]))


def fit_mixture(vectors: np.ndarray, n_components: int = 128, seed: int = 0, max_iter: int = 100) -> Mixture:
    """Fit the mixture to real vectors (rows)."""
    from sklearn.mixture import GaussianMixture

    gm = GaussianMixture(
        n_components=n_components,
        covariance_type="diag",
        init_params="k-means++",
        max_iter=max_iter,
        reg_covar=1e-6,
        random_state=seed,
    )
    gm.fit(np.asarray(vectors, dtype=np.float64))
    weights = gm.weights_ / gm.weights_.sum()
    return Mixture(weights.astype(np.float64), gm.means_.astype(np.float32), gm.covariances_.astype(np.float32))


def _block(mix: Mixture, b: int, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    # Components and noise from separate streams, so a shorter block is a prefix of a longer one.
    comp = np.random.default_rng([seed, b, 0]).choice(mix.n_components, size=rows, p=mix.weights)
    x = np.random.default_rng([seed, b, 1]).standard_normal((rows, mix.means.shape[1]), dtype=np.float32)
    x *= np.sqrt(mix.variances[comp]) * np.float32(mix.noise_scale)
    x += mix.means[comp]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, comp


def sample_blocks(mix: Mixture, n: int, seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(unit vectors, their component) in blocks of at most BLOCK rows, n rows in all."""
    for b in range((n + BLOCK - 1) // BLOCK):
        yield _block(mix, b, min(BLOCK, n - b * BLOCK), seed)


def sample(mix: Mixture, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n unit vectors (float32) and the component each was drawn from."""
    parts = list(sample_blocks(mix, n, seed))
    if not parts:
        return np.zeros((0, mix.means.shape[1]), np.float32), np.zeros(0, np.int64)
    return np.vstack([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def calibrate_noise(mix: Mixture, real: np.ndarray, seed: int = 0, probes: int = 2000, steps: int = 12) -> Mixture:
    """The mixture with the noise scale (bisection in (0, 1]) at which a synthetic corpus of
    len(real) vectors has the real corpus's median nearest-neighbour cosine."""
    from dataclasses import replace

    rows = np.random.default_rng(seed).choice(len(real), size=min(probes, len(real)), replace=False)
    target = float(np.median(nn_cosine(real, rows)))
    lo, hi = 0.0, 1.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        synth, _ = sample(replace(mix, noise_scale=mid), len(real), seed=seed + 1)
        # more noise, more isolated documents: the median falls as the scale grows
        lo, hi = (mid, hi) if float(np.median(nn_cosine(synth, rows))) > target else (lo, mid)
    return replace(mix, noise_scale=round((lo + hi) / 2, 4))


def top1_cosine(queries: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """Each query's highest inner product with `docs` (cosine for unit vectors)."""
    import faiss

    flat = faiss.IndexFlatIP(docs.shape[1])
    flat.add(np.ascontiguousarray(docs, dtype=np.float32))
    scores, _ = flat.search(np.ascontiguousarray(queries, dtype=np.float32), 1)
    return scores[:, 0]


def nn_cosine(docs: np.ndarray, probes: np.ndarray) -> np.ndarray:
    """Cosine of each probe row of `docs` (row indices) to its nearest other document."""
    import faiss

    flat = faiss.IndexFlatIP(docs.shape[1])
    flat.add(np.ascontiguousarray(docs, dtype=np.float32))
    scores, rows = flat.search(np.ascontiguousarray(docs[probes]), 2)
    own = rows[:, 0] == probes
    return np.where(own, scores[:, 1], scores[:, 0])


def sanity_check(real: np.ndarray, queries: np.ndarray, mix: Mixture, seed: int = 0, probes: int = 2000) -> dict:
    """Does a synthetic corpus look like the real one to real queries? Quantiles (5/25/50/75/95 %)
    of (a) each real query's top-1 cosine against the real docs and against as many synthetic
    docs, (b) each document's nearest-neighbour cosine within its own corpus, and (c) the
    cosine between unrelated documents (random pairs)."""
    synth, _ = sample(mix, len(real), seed=seed + 1)
    rng = np.random.default_rng(seed)
    qs = (5, 25, 50, 75, 95)

    def quant(x: np.ndarray) -> list[float]:
        return [round(float(v), 3) for v in np.percentile(x, qs)]

    def pair_cos(x: np.ndarray) -> np.ndarray:
        a, b = rng.integers(0, len(x), size=(2, 20_000))
        return np.einsum("ij,ij->i", x[a], x[b])

    probe_rows = rng.choice(len(real), size=min(probes, len(real)), replace=False)
    return {
        "noise_scale": mix.noise_scale,
        "percentiles": list(qs),
        "query_top1_real": quant(top1_cosine(queries, real)),
        "query_top1_synthetic": quant(top1_cosine(queries, synth)),
        "doc_nn_real": quant(nn_cosine(real, probe_rows)),
        "doc_nn_synthetic": quant(nn_cosine(synth, probe_rows)),
        "random_pair_real": quant(pair_cos(real)),
        "random_pair_synthetic": quant(pair_cos(synth)),
    }
