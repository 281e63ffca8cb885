"""SFT and CL reranker losses against brute-force references written from the equations."""

from __future__ import annotations

import math

import pytest
import torch

from densekit.training.rerank.losses import GroupSoftmaxCLLoss, YesNoSFTLoss


def _sft_reference(z, mean_docs=False):
    total = 0.0
    for group in z:
        q = 0.0
        for j, (zy, zn) in enumerate(group):
            p_yes = math.exp(zy) / (math.exp(zy) + math.exp(zn))
            q += -math.log(p_yes) if j == 0 else -math.log(1 - p_yes)
        total += q / (len(group) if mean_docs else 1)
    return total / len(z)


def _cl_reference(z, tau=1.0):
    total = 0.0
    for group in z:
        ys = [g[0] / tau for g in group]
        total += -math.log(math.exp(ys[0]) / sum(math.exp(y) for y in ys))
    return total / len(z)


@pytest.mark.parametrize("B,G", [(1, 2), (3, 5), (4, 1)])
def test_sft_matches_brute_force(B, G):
    torch.manual_seed(B * 10 + G)
    z = torch.randn(B, G, 2) * 3
    ref = _sft_reference(z.tolist())
    assert YesNoSFTLoss()(z).item() == pytest.approx(ref, rel=1e-5)
    assert YesNoSFTLoss("mean_docs")(z).item() == pytest.approx(_sft_reference(z.tolist(), True), rel=1e-5)


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_cl_matches_brute_force(tau):
    torch.manual_seed(1)
    z = torch.randn(3, 6, 2) * 2
    assert GroupSoftmaxCLLoss(tau)(z).item() == pytest.approx(_cl_reference(z.tolist(), tau), rel=1e-5)


def test_docstring_examples():
    assert YesNoSFTLoss()(torch.tensor([[[3.0, 0.0], [0.0, 2.0]]])).item() == pytest.approx(0.1755, abs=1e-4)
    assert GroupSoftmaxCLLoss()(torch.tensor([[[2.0, 5.0], [0.0, 1.0], [0.0, -3.0]]])).item() == pytest.approx(0.2395, abs=1e-4)


def test_cl_ignores_z_no_and_sft_does_not():
    z = torch.randn(2, 4, 2)
    z2 = z.clone()
    z2[..., 1] += torch.randn(2, 4)
    assert GroupSoftmaxCLLoss()(z).item() == pytest.approx(GroupSoftmaxCLLoss()(z2).item())
    assert YesNoSFTLoss()(z).item() != pytest.approx(YesNoSFTLoss()(z2).item())


def test_gradients_push_positive_up_negatives_down():
    z = torch.zeros(1, 3, 2, requires_grad=True)
    for loss in (YesNoSFTLoss(), GroupSoftmaxCLLoss()):
        z.grad = None
        loss(z).backward()
        assert z.grad[0, 0, 0] < 0  # raising z_yes(pos) lowers the loss
        assert (z.grad[0, 1:, 0] > 0).all()  # raising z_yes(neg) raises it


def test_bad_shape_is_rejected():
    with pytest.raises(ValueError):
        YesNoSFTLoss()(torch.zeros(2, 3))
    with pytest.raises(ValueError):
        GroupSoftmaxCLLoss(0.0)
