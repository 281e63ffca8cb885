"""Paired significance tests on per-query metric values of two runs over the same queries.

Two tests, the ones ranx offers for comparing IR systems:

- **Fisher's randomisation (permutation) test** (Smucker, Allan & Carterette, CIKM 2007):
  under H0 the labels A/B of each query's pair are exchangeable, so flipping the sign of
  each per-query difference at random gives the null distribution of the mean difference.
  Two-sided p = (1 + #{|mean(perm)| >= |mean(observed)|}) / (1 + n_permutations): the "+1"
  counts the observed labelling itself (Phipson & Smyth 2010), so p is never 0 and two
  identical runs get exactly p = 1. With few queries (2^n <= n_permutations) every sign
  pattern is enumerated and p is exact.
- **Paired Student's t-test** on the differences (scipy.stats.ttest_rel).

Effect size: the mean difference (B - A), its relative change, and Cohen's d_z (mean
difference over the standard deviation of the differences), with the wins/ties/losses.

The global ROC-AUC pools every query's pairs, so it has no per-query value to pair:
`bootstrap_global_auc` resamples queries with replacement instead (a paired bootstrap: both
runs are scored on the same resampled queries) and reports the difference of the two
global AUCs with its 95% percentile interval and the share of resamples where B <= A.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from densekit.errors import InvalidInputError
from densekit.eval.auc import AucPairs


@dataclass
class PairedTest:
    metric: str
    n_queries: int
    mean_a: float
    mean_b: float
    mean_diff: float  # B - A
    relative_diff: float | None  # (B - A) / A
    cohens_d: float | None
    ci95_low: float | None
    ci95_high: float | None
    wins: int  # queries where B > A
    ties: int
    losses: int
    p_randomisation: float
    n_permutations: int
    exact: bool
    p_ttest: float
    t_statistic: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def randomisation_test(a: np.ndarray, b: np.ndarray, n_permutations: int = 10_000, seed: int = 42) -> tuple[float, int, bool]:
    """Two-sided paired randomisation test of mean(b - a) = 0. Returns (p, permutations, exact)."""
    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    n = len(diff)
    if n == 0:
        raise InvalidInputError("no paired queries to test")
    observed = abs(diff.mean())
    # Sums of float differences are not exact: a permuted mean equal to the observed one up to
    # rounding must count as "at least as extreme", or identical runs would not get p = 1.
    tol = 1e-12 * max(1.0, float(np.abs(diff).max()))
    if n <= 20 and 2**n <= n_permutations:
        signs = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1  # every sign pattern
        means = np.abs(signs @ diff) / n
        # The identity pattern is among them, so no +1 correction: p is exact.
        return float(np.mean(means >= observed - tol)), int(2**n), True
    rng = np.random.default_rng(seed)
    count = 0
    done = 0
    chunk = 2000  # bounds memory at chunk x n signs
    while done < n_permutations:
        m = min(chunk, n_permutations - done)
        signs = rng.integers(0, 2, size=(m, n), dtype=np.int8) * 2 - 1
        count += int(np.sum(np.abs(signs @ diff) / n >= observed - tol))
        done += m
    return (count + 1) / (n_permutations + 1), n_permutations, False


def paired_ttest(a: np.ndarray, b: np.ndarray) -> tuple[float, float | None]:
    """(two-sided p, t). All-zero differences carry no evidence against H0: p = 1."""
    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if len(diff) < 2 or np.allclose(diff, diff[0], rtol=0, atol=1e-15):
        # Constant differences: zero variance. Equal runs -> p = 1; a constant non-zero
        # shift is as significant as it gets (t is infinite).
        if len(diff) and abs(diff[0]) > 1e-15 and len(diff) >= 2:
            return 0.0, math.copysign(math.inf, diff[0])
        return 1.0, None
    res = stats.ttest_rel(b, a)
    return float(res.pvalue), float(res.statistic)


def compare_paired(
    a: dict[str, float], b: dict[str, float], metric: str = "ndcg@10", n_permutations: int = 10_000, seed: int = 42
) -> PairedTest:
    """Compare per-query values of run A and run B on the queries both have."""
    qids = sorted(set(a) & set(b))
    if not qids:
        raise InvalidInputError(f"the two runs share no query with a value for {metric}")
    va = np.array([a[q] for q in qids], dtype=np.float64)
    vb = np.array([b[q] for q in qids], dtype=np.float64)
    diff = vb - va
    n = len(qids)
    p_rand, n_perm, exact = randomisation_test(va, vb, n_permutations, seed)
    p_t, t = paired_ttest(va, vb)
    sd = float(diff.std(ddof=1)) if n > 1 else 0.0
    mean_diff = float(diff.mean())
    ci: tuple[float | None, float | None]
    if n > 1 and sd > 0:
        half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        ci = (mean_diff - half, mean_diff + half)
        d = mean_diff / sd
    else:
        ci = (mean_diff, mean_diff) if n > 1 else (None, None)
        d = None
    mean_a = float(va.mean())
    return PairedTest(
        metric=metric,
        n_queries=n,
        mean_a=mean_a,
        mean_b=float(vb.mean()),
        mean_diff=mean_diff,
        relative_diff=(mean_diff / mean_a) if mean_a else None,
        cohens_d=d,
        ci95_low=ci[0],
        ci95_high=ci[1],
        wins=int(np.sum(diff > 0)),
        ties=int(np.sum(diff == 0)),
        losses=int(np.sum(diff < 0)),
        p_randomisation=p_rand,
        n_permutations=n_perm,
        exact=exact,
        p_ttest=p_t,
        t_statistic=t,
    )


@dataclass
class AucBootstrap:
    n_queries: int
    auc_a: float
    auc_b: float
    diff: float  # B - A
    ci95_low: float
    ci95_high: float
    p_diff_le_0: float  # share of resamples where B - A <= 0
    resamples: int
    seed: int

    def to_dict(self) -> dict:
        return asdict(self)


class _PooledPairs:
    """One run's AUC pairs laid out once so that the global AUC of any weighting of the
    queries (a bootstrap resample: query -> how often it was drawn) costs a few bincounts."""

    def __init__(self, pairs: AucPairs, qids: list[str]):
        pos = [np.asarray(pairs.pos.get(q, []), dtype=np.float64) for q in qids]
        neg = [np.asarray(pairs.neg.get(q, []), dtype=np.float64) for q in qids]
        self.pos_q = np.repeat(np.arange(len(qids)), [len(p) for p in pos])
        self.neg_q = np.repeat(np.arange(len(qids)), [len(n) for n in neg])
        scores = np.concatenate([*pos, *neg]) if qids else np.zeros(0)
        # Ties between a positive and a negative count 1/2, as in auc_score: group equal scores.
        values, inverse = np.unique(scores, return_inverse=True)
        self.n_values = len(values)
        self.pos_v, self.neg_v = inverse[: len(self.pos_q)], inverse[len(self.pos_q) :]

    def auc(self, weights: np.ndarray) -> float:
        wp, wn = weights[self.pos_q], weights[self.neg_q]
        n_pos, n_neg = wp.sum(), wn.sum()
        if n_pos == 0 or n_neg == 0:
            return math.nan
        neg_at = np.bincount(self.neg_v, weights=wn, minlength=self.n_values)
        below = np.cumsum(neg_at) - neg_at
        return float(np.sum(wp * (below[self.pos_v] + 0.5 * neg_at[self.pos_v])) / (n_pos * n_neg))


def bootstrap_global_auc(pairs_a: AucPairs, pairs_b: AucPairs, resamples: int = 1000, seed: int = 0) -> AucBootstrap:
    """Paired bootstrap over queries of global AUC(B) - global AUC(A), on the queries both
    runs have positives for (see the module doc)."""
    qids = sorted(set(pairs_a.pos) & set(pairs_b.pos))
    if not qids:
        raise InvalidInputError("the two runs share no query with a relevant document")
    if resamples < 1:
        raise InvalidInputError(f"resamples must be at least 1, got {resamples}")
    a, b = _PooledPairs(pairs_a, qids), _PooledPairs(pairs_b, qids)
    ones = np.ones(len(qids))
    auc_a, auc_b = a.auc(ones), b.auc(ones)
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples)
    for i in range(resamples):
        w = np.bincount(rng.integers(0, len(qids), len(qids)), minlength=len(qids)).astype(np.float64)
        diffs[i] = b.auc(w) - a.auc(w)
    lo, hi = np.nanpercentile(diffs, [2.5, 97.5])
    return AucBootstrap(
        n_queries=len(qids),
        auc_a=auc_a,
        auc_b=auc_b,
        diff=auc_b - auc_a,
        ci95_low=float(lo),
        ci95_high=float(hi),
        p_diff_le_0=float(np.mean(diffs[~np.isnan(diffs)] <= 0)),
        resamples=resamples,
        seed=seed,
    )
