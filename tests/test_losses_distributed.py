"""Gathered in-batch negatives under DDP: 2 CPU processes (gloo) against one process.

Each process holds half of every column; with gather_across_devices the loss each process
computes must equal the single-process loss over the concatenated batch (with the
false-negative mask too, its row keys gathered with the embeddings), and its
embeddings' gradients, averaged over processes as DDP averages parameter gradients, must
equal the single-process gradients of those rows.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from densekit.training.losses import DCLLoss, InfoNCELoss, JudgedRelevance, MWLoss

WORLD = 2
B, H, D = 3, 2, 8


def _judged() -> JudgedRelevance:
    # query 0 (rank 0) is judged relevant to row 4's positive (rank 1), query 3 (rank 1) to row 1's
    return JudgedRelevance.from_pairs([(0, 4), (3, 1)], num_doc_keys=WORLD * B * (1 + H))


def _losses(gather: bool):
    masked = {"gather_across_devices": gather, "mask_false_negatives": True, "judged": _judged()}
    return {
        "infonce": InfoNCELoss(temperature=0.05, symmetric=True, gather_across_devices=gather),
        "dcl": DCLLoss(temperature=0.05, gather_across_devices=gather),
        "mw": MWLoss(temperature=0.1, gather_across_devices=gather),
        "infonce-masked": InfoNCELoss(temperature=0.05, symmetric=True, **masked),
        "dcl-masked": DCLLoss(temperature=0.05, symmetric=True, **masked),
        "mw-masked": MWLoss(temperature=0.1, **masked),
    }


def _full_labels() -> torch.Tensor:
    """[source, query, positive, negatives...] of the global batch: row 5 is another source,
    and row 1's first hard negative is the same text as row 4's positive."""
    n = WORLD * B
    rows = []
    for i in range(n):
        negatives = [n * (1 + h) + i for h in range(H)]
        rows.append([1 if i == 5 else 0, i, i, *negatives])
    rows[1][3] = 4
    return torch.tensor(rows)


def _labels(name: str, rows: slice) -> torch.Tensor | None:
    return _full_labels()[rows] if name.endswith("-masked") else None


def _full_columns() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return [torch.randn(WORLD * B, D, generator=g, dtype=torch.float64) for _ in range(2 + H)]


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        results = {}
        for name, loss_fn in _losses(gather=True).items():
            local = [c[rank * B : (rank + 1) * B].clone().requires_grad_(True) for c in _full_columns()]
            loss = loss_fn.compute_loss_from_embeddings(local, _labels(name, slice(rank * B, (rank + 1) * B)))
            loss.backward()
            results[name] = (loss.detach(), [t.grad.detach() / WORLD for t in local])  # DDP's average
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_gathered_losses_equal_the_single_process_loss_and_gradients(tmp_path):
    from conftest import free_port

    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    for name, loss_fn in _losses(gather=False).items():
        full = [c.clone().requires_grad_(True) for c in _full_columns()]
        expected = loss_fn.compute_loss_from_embeddings(full, _labels(name, slice(None)))
        expected.backward()
        if name.endswith("-masked"):  # the gathered keys mark passages on the other process: the mask matters
            plain = _losses(gather=False)[name.removesuffix("-masked")].compute_loss_from_embeddings(_full_columns())
            assert abs(plain.item() - expected.item()) > 1e-3, name
        for rank in range(WORLD):
            loss, grads = torch.load(tmp_path / f"rank{rank}.pt")[name]
            assert loss.item() == pytest.approx(expected.item(), abs=1e-5), name
            for col, grad in zip(full, grads):
                torch.testing.assert_close(grad, col.grad[rank * B : (rank + 1) * B], atol=1e-5, rtol=0)


def test_gathering_without_a_process_group_is_the_local_loss():
    cols = [c[:B] for c in _full_columns()]
    for name, gathered in _losses(gather=True).items():
        labels = _labels(name, slice(0, B))
        assert gathered.compute_loss_from_embeddings(cols, labels).item() == pytest.approx(
            _losses(gather=False)[name].compute_loss_from_embeddings(cols, labels).item()
        ), name
