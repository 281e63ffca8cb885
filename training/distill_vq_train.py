"""The Distill-VQ training loop over precomputed (frozen) document and query vectors."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import faiss
import numpy as np
import torch
from tqdm.auto import tqdm

from densekit.training.distill_vq import IVFPQQuantizer
from densekit.training.distill_vq_config import DistillTrain
from densekit.training.distill_vq_loss import ListNetDistillLoss


@dataclass
class DistillHistory:
    steps: int = 0
    seconds: float = 0.0
    loss: list[float] = field(default_factory=list)  # mean loss per epoch

    def as_dict(self) -> dict:
        return {"steps": self.steps, "seconds": round(self.seconds, 2), "epoch_loss": [round(x, 5) for x in self.loss]}


def teacher_topk(docs: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k document rows of every query by inner product (the teacher's ranking)."""
    flat = faiss.IndexFlatIP(docs.shape[1])
    flat.add(np.ascontiguousarray(docs, dtype=np.float32))
    _, rows = flat.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(docs)))
    return rows


def step_candidates(topk_rows: np.ndarray, n_docs: int, random_negatives: int, rng: np.random.Generator) -> np.ndarray:
    """The documents a step scores: every batch query's teacher top-k (in-batch documents for
    the other queries) plus random corpus documents, deduplicated."""
    rows = [topk_rows.ravel()]
    if random_negatives:
        rows.append(rng.integers(0, n_docs, size=random_negatives))
    cand = np.unique(np.concatenate(rows))
    return cand[cand >= 0]


def distill_quantizer(
    quantizer: IVFPQQuantizer,
    docs: np.ndarray,
    queries: np.ndarray,
    cfg: DistillTrain,
    seed: int = 1234,
    device: str = "cpu",
    progress: bool = True,
) -> DistillHistory:
    """Train `quantizer` in place so its quantised scores reproduce the dense scores q.d."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    quantizer.to(device)
    quantizer.train()
    d_all = torch.from_numpy(np.ascontiguousarray(docs, dtype=np.float32)).to(device)
    q_all = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(device)
    with torch.no_grad():
        # Documents are frozen; the OPQ rotation is fixed: rotate once.
        d_rot = quantizer.rotate(d_all)
        q_rot = quantizer.rotate(q_all)
    topk = teacher_topk(docs, queries, cfg.teacher_topk)
    loss_fn = ListNetDistillLoss(cfg.temperature)
    opt = torch.optim.Adam(
        [
            {"params": [quantizer.centroids], "lr": cfg.lr_centroids},
            {"params": [quantizer.codebooks], "lr": cfg.lr_codebooks},
        ]
    )
    total_steps = cfg.epochs * math.ceil(len(queries) / cfg.batch_size)
    # Linear decay: with a constant rate the training loss crept back up after a few epochs
    # on NFCorpus (assignments keep flipping under large codebook steps).
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / total_steps if cfg.lr_schedule == "linear" else 1.0)
    hist = DistillHistory()
    t0 = time.perf_counter()
    n_q = len(queries)
    steps_per_epoch = math.ceil(n_q / cfg.batch_size)
    bar = tqdm(total=cfg.epochs * steps_per_epoch, desc="distill-vq", disable=not progress)
    for _ in range(cfg.epochs):
        order = rng.permutation(n_q)
        total = 0.0
        for s in range(steps_per_epoch):
            batch = order[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            cand = torch.from_numpy(step_candidates(topk[batch], len(docs), cfg.random_negatives, rng)).to(device)
            q = q_all[batch]
            teacher = q @ d_all[cand].T
            out = quantizer(d_rot[cand])
            qr = q_rot[batch]
            loss = loss_fn(teacher, qr @ out.full.T)
            if cfg.ivf_loss_weight:
                loss = loss + cfg.ivf_loss_weight * loss_fn(teacher, qr @ out.coarse.T)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            value = float(loss.detach())
            total += value
            hist.steps += 1
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
        hist.loss.append(total / steps_per_epoch)
    bar.close()
    quantizer.eval()
    quantizer.to("cpu")
    hist.seconds = time.perf_counter() - t0
    return hist
