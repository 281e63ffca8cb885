"""Distill-VQ: the ListNet loss, the straight-through quantiser, and its faiss export."""

from __future__ import annotations

import json
import math

import faiss
import numpy as np
import pytest
import torch

from densekit.errors import ConfigError
from densekit.index import faiss_kinds
from densekit.training.distill_vq import IVFPQQuantizer, straight_through_onehot
from densekit.training.distill_vq_config import DistillVQConfig
from densekit.training.distill_vq_loss import ListNetDistillLoss
from densekit.training.distill_vq_run import distill_faiss_index

DIM = 32


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((16, DIM))
    docs = unit(centers[rng.integers(0, 16, 1000)] + 0.7 * rng.standard_normal((1000, DIM)))
    queries = unit(docs[rng.integers(0, 1000, 160)] + 0.3 * rng.standard_normal((160, DIM)))
    return docs, queries


def test_listnet_matches_brute_force():
    torch.manual_seed(0)
    t, s = torch.randn(4, 7), torch.randn(4, 7)
    mask = torch.rand(4, 7) > 0.3
    mask[:, 0] = True
    tau = 0.3
    got = ListNetDistillLoss(tau)(t, s, mask)
    total = 0.0
    for i in range(4):
        cols = [j for j in range(7) if mask[i, j]]
        zt = sum(math.exp(t[i, j].item() / tau) for j in cols)
        zs = sum(math.exp(s[i, j].item() / tau) for j in cols)
        for j in cols:
            p = math.exp(t[i, j].item() / tau) / zt
            total -= p * math.log(math.exp(s[i, j].item() / tau) / zs)
    assert got.item() == pytest.approx(total / 4, rel=1e-5)
    # the student matching the teacher gives the teacher's entropy, and a better match a lower loss
    assert ListNetDistillLoss(tau)(t, t).item() < ListNetDistillLoss(tau)(t, s).item()


def test_listnet_gradient_flows_to_student_only():
    t = torch.randn(2, 5, requires_grad=True)
    s = torch.randn(2, 5, requires_grad=True)
    ListNetDistillLoss(0.1)(t, s).backward()
    assert t.grad is None and s.grad is not None and s.grad.abs().sum() > 0


def test_straight_through_is_hard_forward_soft_backward():
    logits = torch.tensor([[1.0, 3.0, 2.0]], requires_grad=True)
    ste, idx = straight_through_onehot(logits, 1.0)
    assert ste.tolist() == [[0.0, 1.0, 0.0]] and idx.tolist() == [1]
    w = torch.tensor([[1.0, 2.0, 4.0]])
    (ste * w).sum().backward()
    soft = torch.softmax(logits.detach(), -1)
    expected = soft * (w - (soft * w).sum())  # gradient of sum(softmax * w)
    assert torch.allclose(logits.grad, expected, atol=1e-6)


@pytest.mark.parametrize("start_kind", ["ivfpq", "opq-ivfpq"])
def test_from_faiss_reproduces_the_start_index(start_kind, vectors):
    docs, queries = vectors
    p = {"nlist": 8, "pq_m": 8, "pq_nbits": 6, **({"opq_niter": 5} if start_kind == "opq-ivfpq" else {})}
    start = faiss_kinds.make_index(start_kind, DIM, p)
    faiss_kinds.train_index(start, docs, p)
    qz = IVFPQQuantizer.from_faiss(start)
    assert qz.has_opq == (start_kind == "opq-ivfpq")
    start.add(docs)
    faiss.extract_index_ivf(start).nprobe = 8
    d_faiss, rows = start.search(queries, len(docs))
    _, full = qz.scores(torch.from_numpy(queries), torch.from_numpy(docs))
    assert np.allclose(np.take_along_axis(full.numpy(), rows, 1), d_faiss, atol=1e-5)


@pytest.mark.parametrize("start_kind", ["ivfpq", "opq-ivfpq"])
def test_exported_index_scores_equal_torch_quantiser(start_kind, vectors):
    docs, queries = vectors
    cfg = DistillVQConfig(
        data="-",
        out="-",
        index={"start_kind": start_kind, "nlist": 8, "pq_m": 8, "pq_nbits": 6, "opq_niter": 5},
        train={
            "epochs": 2,
            "batch_size": 32,
            "teacher_topk": 16,
            "random_negatives": 32,
            "lr_codebooks": 1e-3,
            "lr_centroids": 1e-3,
            "ivf_loss_weight": 1.0,
        },
    )
    start, qz, exported, hist = distill_faiss_index(docs, queries[:128], cfg, progress=False)
    assert hist.steps == 8
    # training moved the parameters, so this compares the *trained* quantiser, not the start one
    assert not np.allclose(
        qz.codebooks.detach().numpy().ravel(),
        faiss.vector_to_array(faiss.downcast_index(faiss.extract_index_ivf(start)).pq.centroids),
        atol=1e-6,
    )
    exported.add_with_ids(docs, np.arange(len(docs), dtype=np.int64))
    faiss.extract_index_ivf(exported).nprobe = 8  # every list: faiss scores every document
    d_faiss, rows = exported.search(queries[128:], len(docs))
    coarse, full = qz.scores(torch.from_numpy(queries[128:]), torch.from_numpy(docs))
    assert np.allclose(np.take_along_axis(full.numpy(), rows, 1), d_faiss, atol=1e-5)
    # faiss's own list assignment is the torch module's argmax
    out = qz(qz.rotate(torch.from_numpy(docs)))
    ivf = faiss.extract_index_ivf(exported)
    lists = np.empty(len(docs), dtype=np.int64)
    for li in range(ivf.nlist):
        ids = faiss.rev_swig_ptr(ivf.invlists.get_ids(li), ivf.invlists.list_size(li)).copy()
        lists[ids] = li
    assert (lists == out.lists.numpy()).all()


def test_distillation_lowers_the_loss(vectors):
    docs, queries = vectors
    cfg = DistillVQConfig(
        data="-",
        out="-",
        index={"start_kind": "ivfpq", "nlist": 8, "pq_m": 4, "pq_nbits": 4},
        train={"epochs": 6, "batch_size": 32, "lr_codebooks": 2e-3, "lr_centroids": 2e-3},
    )
    _, _, _, hist = distill_faiss_index(docs, queries, cfg, progress=False)
    assert hist.loss[-1] < hist.loss[0]


def test_from_faiss_refuses_other_indexes():
    with pytest.raises(ConfigError):
        IVFPQQuantizer.from_faiss(faiss.IndexFlatIP(DIM))
    l2 = faiss.IndexIVFPQ(faiss.IndexFlatL2(DIM), DIM, 4, 4, 4)
    with pytest.raises(ConfigError, match="inner-product"):
        IVFPQQuantizer.from_faiss(l2)


def test_config_errors_name_the_field(tmp_path):
    from densekit.training.run_config import load_yaml_config

    p = tmp_path / "run.yaml"
    p.write_text("data: x\nout: y\ntrain: {epochs: 0}\n")
    with pytest.raises(ConfigError) as e:
        load_yaml_config(DistillVQConfig, p)
    assert e.value.field == "train.epochs"
    p.write_text("data: x\nout: y\nqueries: {source: made-up}\n")
    with pytest.raises(ConfigError) as e:
        load_yaml_config(DistillVQConfig, p)
    assert e.value.field == "queries.source"


def test_cli_distill_index_writes_a_loadable_index(tiny_beir, tiny_st_model_dir, tmp_path):
    from typer.testing import CliRunner

    from densekit import index
    from densekit.cli.main import app

    out = tmp_path / "dist"
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"data: {tiny_beir}\nout: {out}\nmodel: {tiny_st_model_dir}\ndevice: cpu\n"
        "queries: {source: titles}\n"
        "index: {start_kind: ivfpq, nlist: 2, pq_m: 4, pq_nbits: 2, nprobe: 2}\n"
        "train: {epochs: 2, batch_size: 4, teacher_topk: 3, random_negatives: 2}\n"
    )
    r = CliRunner().invoke(app, ["train", "distill-index", "--config", str(cfg), "--no-progress"])
    assert r.exit_code == 0, r.output
    idx = index.load(out)
    assert idx.manifest.kind == "distilled" and idx.manifest.search_params == {"nprobe": 2}
    assert idx.manifest.bytes_per_vector == 1 and idx.manifest.build_params["distill"]["n_queries"] == 6
    assert (out / "resolved_config.yaml").is_file()
    assert json.loads((out / "distill_history.json").read_text())["steps"] == 4
    from densekit.encoder import Encoder

    q = Encoder(str(tiny_st_model_dir), device="cpu").encode_queries(["capital of France"])
    assert len(idx.search(q, 3)[0]) == 3
