"""The in-batch false-negative mask: which passages it removes, and the masked losses against
loop references that skip the masked (query, passage) pairs."""

from __future__ import annotations

import pytest
import torch

from densekit.training.losses import DCLLoss, InfoNCELoss, JudgedRelevance, MWLoss, false_negative_mask
from densekit.training.row_keys import RowKeys

B, H = 3, 1  # passages, column-major: p0 p1 p2 n0 n1 n2 (indices 0..5)
P0, P1, P2, N0, N1, N2 = range(6)


def _columns(seed: int = 0, b: int = B, h: int = H) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 8, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2 + h)]


def _cos(a, b):
    return (a * b).sum() / (a.norm() * b.norm())


def _score(cols, i, j):
    """s(q_i, passage j), passage j = column 1 + j // B, row j % B."""
    b = cols[0].shape[0]
    return _cos(cols[0][i], cols[1 + j // b][j % b])


def _n_passages(cols):
    return cols[0].shape[0] * (len(cols) - 1)


def ref_infonce(cols, tau, masked, symmetric=False):
    b = cols[0].shape[0]
    total = 0.0
    for i in range(b):
        denom = sum(torch.exp(_score(cols, i, j) / tau) for j in range(_n_passages(cols)) if (i, j) not in masked)
        total = total - (_score(cols, i, i) / tau - torch.log(denom))
    loss = total / b
    if symmetric:
        back = 0.0
        for i in range(b):
            denom = sum(torch.exp(_score(cols, k, i) / tau) for k in range(b) if (k, i) not in masked)
            back = back - (_score(cols, i, i) / tau - torch.log(denom))
        loss = (loss + back / b) / 2
    return loss


def ref_dcl(cols, tau, masked, symmetric=False):
    """A query with no negative left contributes 0."""
    b = cols[0].shape[0]
    total = 0.0
    for i in range(b):
        negs = [torch.exp(_score(cols, i, j) / tau) for j in range(_n_passages(cols)) if j != i and (i, j) not in masked]
        if negs:
            total = total - (_score(cols, i, i) / tau - torch.log(sum(negs)))
    loss = total / b
    if symmetric:
        back = 0.0
        for i in range(b):
            negs = [torch.exp(_score(cols, k, i) / tau) for k in range(b) if k != i and (k, i) not in masked]
            if negs:
                back = back - (_score(cols, i, i) / tau - torch.log(sum(negs)))
        loss = (loss + back / b) / 2
    return loss


def ref_mw(cols, tau, masked, reduction="sum"):
    b = cols[0].shape[0]
    negatives = [_score(cols, k, j) for k in range(b) for j in range(_n_passages(cols)) if j != k and (k, j) not in masked]
    total = 0.0
    for i in range(b):
        per_pos = sum(-torch.log(torch.sigmoid((_score(cols, i, i) - s) / tau)) for s in negatives)
        if reduction == "mean":
            per_pos = per_pos / len(negatives)
        total = total + per_pos
    return total / b


def _hand_built():
    """Row i: source 0, query key i, positive key i, hard negative key 3+i, except row 1's
    hard negative, which is the same text as p0 (key 0). Query 0 is judged relevant to p1
    (another row's positive) and n2 (another row's hard negative); query 2 to its own
    positive only."""
    labels = torch.tensor([[0, 0, 0, 3], [0, 1, 1, 0], [0, 2, 2, 5]])
    judged = JudgedRelevance.from_pairs([(0, 1), (0, 5), (2, 2)], num_doc_keys=6)
    expected = {(0, P1), (0, N2), (0, N1)}  # judged, judged, identical to p0
    return labels, judged, expected


def test_mask_removes_judged_positives_and_identical_texts_only():
    labels, judged, expected = _hand_built()
    mask = false_negative_mask(labels, judged.codes, judged.num_doc_keys)
    assert {tuple(x) for x in torch.nonzero(mask).tolist()} == expected
    # Without the judgements only the identical text is left.
    assert {tuple(x) for x in torch.nonzero(false_negative_mask(labels)).tolist()} == {(0, N1)}


def test_mask_never_covers_a_query_s_own_positive():
    labels = torch.tensor([[0, 0, 7, 8], [0, 1, 7, 9]])  # both positives the same text
    judged = JudgedRelevance.from_pairs([(0, 7), (1, 7)], num_doc_keys=10)
    mask = false_negative_mask(labels, judged.codes, judged.num_doc_keys)
    assert not mask[0, 0] and not mask[1, 1]
    assert mask[0, 1] and mask[1, 0]


def test_other_sources_are_masked():
    labels = torch.tensor([[0, 0, 0, 3], [0, 1, 1, 4], [1, 2, 2, 5]])
    mask = false_negative_mask(labels)
    other = {(0, P2), (0, N2), (1, P2), (1, N2), (2, P0), (2, P1), (2, N0), (2, N1)}
    assert {tuple(x) for x in torch.nonzero(mask).tolist()} == other


def _check(loss_fn, ref_fn, cols, labels):
    got = loss_fn.compute_loss_from_embeddings(cols, labels)
    got_grads = torch.autograd.grad(got, cols)
    want = ref_fn(cols)
    want_grads = torch.autograd.grad(want, cols)
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-9), (float(got), float(want))
    for g, w in zip(got_grads, want_grads):
        assert torch.allclose(g, w, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("symmetric", [False, True])
def test_masked_infonce_matches_loop_reference(masked, symmetric):
    labels, judged, expected = _hand_built()
    loss = InfoNCELoss(temperature=0.05, symmetric=symmetric, mask_false_negatives=masked, judged=judged)
    _check(loss, lambda c: ref_infonce(c, 0.05, expected if masked else set(), symmetric), _columns(), labels)


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("symmetric", [False, True])
def test_masked_dcl_matches_loop_reference(masked, symmetric):
    labels, judged, expected = _hand_built()
    loss = DCLLoss(temperature=0.1, symmetric=symmetric, mask_false_negatives=masked, judged=judged)
    _check(loss, lambda c: ref_dcl(c, 0.1, expected if masked else set(), symmetric), _columns(1), labels)


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_masked_mw_matches_loop_reference(masked, reduction):
    labels, judged, expected = _hand_built()
    loss = MWLoss(temperature=0.1, reduction=reduction, mask_false_negatives=masked, judged=judged)
    _check(loss, lambda c: ref_mw(c, 0.1, expected if masked else set(), reduction), _columns(2), labels)


def test_the_mask_changes_the_loss_and_unmasked_rows_match_the_plain_loss():
    labels, judged, _ = _hand_built()
    cols = _columns(3)
    plain = InfoNCELoss(temperature=0.05).compute_loss_from_embeddings(cols)
    masked = InfoNCELoss(temperature=0.05, mask_false_negatives=True, judged=judged).compute_loss_from_embeddings(cols, labels)
    assert not torch.isclose(plain, masked)
    # Keys that mark nothing (all distinct, nothing judged) give the plain loss.
    distinct = torch.tensor([[0, 0, 0, 3], [0, 1, 1, 4], [0, 2, 2, 5]])
    assert torch.isclose(InfoNCELoss(temperature=0.05, mask_false_negatives=True).compute_loss_from_embeddings(cols, distinct), plain)


def test_separate_sources_give_the_row_weighted_mean_of_separate_losses():
    """With rows of two datasets in one (gathered) batch, each query sees only its own
    dataset's passages: the loss is the row-weighted mean of the two datasets' losses."""
    cols = _columns(4)
    labels = torch.tensor([[0, 0, 0, 3], [0, 1, 1, 4], [1, 2, 2, 5]])
    for cls in (InfoNCELoss, DCLLoss):
        mixed = cls(temperature=0.05, mask_false_negatives=True).compute_loss_from_embeddings(cols, labels)
        a = cls(temperature=0.05).compute_loss_from_embeddings([c[:2] for c in cols])
        b = cls(temperature=0.05).compute_loss_from_embeddings([c[2:] for c in cols])
        assert torch.isclose(mixed, (2 * a + b) / 3), cls.__name__


def test_dcl_row_with_every_negative_masked_is_zero_and_gradients_finite():
    cols = _columns(5, b=2, h=0)  # passages p0, p1
    labels = torch.tensor([[0, 0, 0], [0, 1, 1]])
    judged = JudgedRelevance.from_pairs([(0, 1)], num_doc_keys=2)  # p1 is relevant to q0: q0 has no negative
    loss = DCLLoss(temperature=0.1, symmetric=True, mask_false_negatives=True, judged=judged)
    value = loss.compute_loss_from_embeddings(cols, labels)
    grads = torch.autograd.grad(value, cols)
    assert torch.isfinite(value) and all(torch.isfinite(g).all() for g in grads)
    assert torch.isclose(value, ref_dcl(cols, 0.1, {(0, 1)}, symmetric=True))


def test_mask_needs_labels_of_the_right_shape():
    cols = _columns()
    loss = MWLoss(mask_false_negatives=True)
    with pytest.raises(ValueError, match="'label' column"):
        loss.compute_loss_from_embeddings(cols, None)
    with pytest.raises(ValueError, match="4 integer keys"):
        loss.compute_loss_from_embeddings(cols, torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="integers"):
        loss.compute_loss_from_embeddings(cols, torch.zeros(3, 4))


def test_row_keys_and_label_column():
    from densekit.data.pairs import TrainingPair
    from densekit.training.pairs_data import build_rows

    keys = RowKeys()
    pairs = [TrainingPair("q1", ["shared text", "p2"], ["n1"]), TrainingPair("q2", ["p3"], ["shared text"])]
    cols, _ = build_rows(pairs, 1, seed=0, keys=keys, source=4)
    assert list(cols) == ["anchor", "positive", "negative_1", "label"]
    shared = keys.doc("shared text")
    assert cols["label"][0] == [4, keys.query("q1"), shared, keys.doc("n1")]
    assert cols["label"][2] == [4, keys.query("q2"), keys.doc("p3"), shared]  # same text, same key
    keys.add_judged("q2", ["p2"])
    judged = keys.relevance()
    code = keys.query("q2") * judged.num_doc_keys + keys.doc("p2")
    assert judged.codes.tolist() == [code]


def test_masked_losses_through_the_sentence_transformers_contract(tiny_st_model_dir):
    """forward(features, labels) with the label tensor the data collator builds."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_st_model_dir), device="cpu")
    texts = [["q a", "q b"], ["pos a", "pos b"], ["neg a", "neg b"]]
    features = [model.preprocess(col) for col in texts]
    labels = torch.tensor([[0, 0, 0, 2], [0, 1, 1, 3]])
    judged = JudgedRelevance.from_pairs([(0, 1)], num_doc_keys=4)  # "pos b" is relevant to "q a"
    for cls in (InfoNCELoss, MWLoss, DCLLoss):
        masked = cls(model, mask_false_negatives=True, judged=judged)
        value = masked(features, labels)
        assert value.ndim == 0 and torch.isfinite(value)
        assert not torch.isclose(value, cls(model)(features, None)), cls.__name__
        assert masked.get_config_dict()["mask_false_negatives"] is True
