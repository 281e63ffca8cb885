"""Bi-encoder losses against brute-force references written with plain loops."""

from __future__ import annotations

import math

import pytest
import torch

from densekit.training.losses import DCLLoss, InfoNCELoss, MWLoss
from densekit.training.losses.batch_scores import batch_scores

SHAPES = [(1, 1), (2, 0), (3, 1), (4, 2), (5, 0), (6, 3)]  # (B queries, H hard negatives)


def _columns(b: int, h: int, d: int = 8, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed + 31 * b + h)
    return [torch.randn(b, d, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2 + h)]


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum() / (a.norm() * b.norm())


def _passages(cols):
    """The batch's passages as (owner query, column, row) in the loss's column-major order."""
    b = cols[0].shape[0]
    return [(i, c, i) for c in range(1, len(cols)) for i in range(b)]


def _ref_contrastive(cols, tau, symmetric, decoupled):
    """InfoNCE written out one query at a time; `decoupled` (DCL) drops the positive pair from
    every denominator."""
    q = cols[0]
    b = q.shape[0]
    total = 0.0
    for i in range(b):
        pos = _cos(q[i], cols[1][i]) / tau
        denom = sum(torch.exp(_cos(q[i], cols[c][r]) / tau) for _, c, r in _passages(cols) if not (decoupled and c == 1 and r == i))
        total = total - (pos - torch.log(denom))
    loss = total / b
    if symmetric:
        back = 0.0
        for i in range(b):
            pos = _cos(q[i], cols[1][i]) / tau
            denom = sum(torch.exp(_cos(q[j], cols[1][i]) / tau) for j in range(b) if not (decoupled and j == i))
            back = back - (pos - torch.log(denom))
        loss = (loss + back / b) / 2
    return loss


def ref_infonce(cols, tau, symmetric=False):
    return _ref_contrastive(cols, tau, symmetric, decoupled=False)


def ref_dcl(cols, tau, symmetric=False):
    return _ref_contrastive(cols, tau, symmetric, decoupled=True)


def ref_mw(cols, tau, reduction="sum"):
    q = cols[0]
    b = q.shape[0]
    negatives = [_cos(q[k], cols[c][r]) for k in range(b) for _, c, r in _passages(cols) if not (c == 1 and r == k)]
    total = 0.0
    for i in range(b):
        pos = _cos(q[i], cols[1][i])
        per_pos = 0.0
        for s in negatives:
            per_pos = per_pos - torch.log(torch.sigmoid((pos - s) / tau))
        if reduction == "mean":
            per_pos = per_pos / len(negatives)
        total = total + per_pos
    return total / b


def _check(loss_fn, ref_fn, cols):
    got = loss_fn.compute_loss_from_embeddings(cols)
    got_grads = torch.autograd.grad(got, cols)
    want = ref_fn(cols)
    want_grads = torch.autograd.grad(want, cols)
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-9), (float(got), float(want))
    for g, w in zip(got_grads, want_grads):
        assert torch.allclose(g, w, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("b,h", SHAPES)
@pytest.mark.parametrize("tau", [0.05, 1.0])
@pytest.mark.parametrize("symmetric", [False, True])
def test_infonce_matches_loop_reference(b, h, tau, symmetric):
    _check(InfoNCELoss(temperature=tau, symmetric=symmetric), lambda c: ref_infonce(c, tau, symmetric), _columns(b, h))


@pytest.mark.parametrize("b,h", [s for s in SHAPES if s[0] * (1 + s[1]) >= 2])  # DCL needs one negative
@pytest.mark.parametrize("symmetric", [False, True])
def test_dcl_matches_loop_reference(b, h, symmetric):
    if symmetric and b < 2:
        pytest.skip("the symmetric term needs another query")
    _check(DCLLoss(temperature=0.1, symmetric=symmetric), lambda c: ref_dcl(c, 0.1, symmetric), _columns(b, h))


@pytest.mark.parametrize("b,h", SHAPES)
@pytest.mark.parametrize("tau", [0.01, 0.5])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_mw_matches_loop_reference(b, h, tau, reduction):
    _check(MWLoss(temperature=tau, reduction=reduction), lambda c: ref_mw(c, tau, reduction), _columns(b, h))


def test_mw_compares_positives_across_queries():
    """A positive of query 0 must be penalised by a high negative of query 1 (not only its own)."""
    scores = torch.tensor([[0.9, 0.1], [0.95, 0.2]], dtype=torch.float64)
    # Query 1's positive (0.2) sits below query 1's negative (0.95): per-query loss is high for q1.
    # For q0 the only cross-query negative above its positive is s(q1, p0) = 0.95.
    loss = MWLoss(temperature=0.1).loss_from_scores(scores)
    negs = [0.1, 0.95]  # S-: s(q0,p1), s(q1,p0)
    want = sum(-math.log(1 / (1 + math.exp(-(p - s) / 0.1))) for p in (0.9, 0.2) for s in negs) / 2
    assert loss.item() == pytest.approx(want, rel=1e-12)


def _shift_rows(scores: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    return scores + shift[:, None]


@pytest.mark.parametrize("b,h", [(3, 0), (4, 2)])
def test_per_query_constant_leaves_infonce_unchanged(b, h):
    scores = batch_scores(_columns(b, h))
    shift = torch.linspace(-0.7, 0.9, b, dtype=torch.float64)
    for loss in (InfoNCELoss(temperature=0.05), DCLLoss(temperature=0.05)):
        assert torch.allclose(loss.loss_from_scores(scores), loss.loss_from_scores(_shift_rows(scores, shift)), atol=1e-10)


@pytest.mark.parametrize("b,h", [(3, 0), (4, 2)])
def test_per_query_constant_changes_mw(b, h):
    scores = batch_scores(_columns(b, h)).detach()
    shift = torch.linspace(-0.7, 0.9, b, dtype=torch.float64)
    mw = MWLoss(temperature=0.05)
    before, after = mw.loss_from_scores(scores), mw.loss_from_scores(_shift_rows(scores, shift))
    assert not torch.allclose(before, after, rtol=1e-3)
    # The same constant for every query shifts positives and negatives alike: no change.
    same = torch.full((b,), 0.3, dtype=torch.float64)
    assert torch.allclose(before, mw.loss_from_scores(_shift_rows(scores, same)), atol=1e-10)


def test_dot_similarity_uses_raw_products():
    cols = _columns(3, 1)
    raw = batch_scores(cols, "dot")
    assert torch.allclose(raw[0, 0], (cols[0][0] * cols[1][0]).sum())
    assert torch.allclose(raw[1, 3 + 2], (cols[0][1] * cols[2][2]).sum())


@pytest.mark.parametrize("cls", [InfoNCELoss, MWLoss, DCLLoss])
@pytest.mark.parametrize("tau", [0.0, -0.1])
def test_non_positive_temperature_is_rejected(cls, tau):
    with pytest.raises(ValueError, match="temperature"):
        cls(temperature=tau)


def test_mw_rejects_unknown_reduction():
    with pytest.raises(ValueError, match="reduction"):
        MWLoss(reduction="max")


def test_losses_plug_into_sentence_transformers_contract(tiny_st_model_dir):
    """forward(sentence_features, labels) over tokenised columns gives a differentiable scalar."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_st_model_dir), device="cpu")
    texts = [["a query", "another query"], ["its positive", "second positive"], ["a hard negative", "one more"]]
    features = [model.preprocess(col) for col in texts]
    for loss in (InfoNCELoss(model), MWLoss(model), DCLLoss(model)):
        value = loss(features, None)
        assert value.ndim == 0 and torch.isfinite(value)
        value.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads)
        model.zero_grad()
