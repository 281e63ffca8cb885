"""The arithmetic behind `densekit bench backends`: FLOPs per token, peak operations per cycle,
runtime parsing, and the int8 matrix product it measures the ceiling with."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from densekit.backends import Runtime
from densekit.bench.backends import flops_per_token, parse_runtimes, peak_ops_per_cycle, theoretical_peak
from densekit.errors import ConfigError, InvalidInputError


def test_flops_per_token_of_minilm_l6_counted_by_hand():
    cfg = SimpleNamespace(hidden_size=384, intermediate_size=1536, num_hidden_layers=6)
    # per layer: Q, K, V, O projections 4 * 2 * 384^2; FFN 2 * 2 * 384 * 1536; QK^T and AV 2 * 2 * 384 * 256
    per_layer = 4 * 2 * 384 * 384 + 2 * 2 * 384 * 1536 + 2 * 2 * 384 * 256
    assert flops_per_token(cfg, 256) == 6 * per_layer == 23_592_960
    assert flops_per_token(cfg, 128) < flops_per_token(cfg, 256)


def test_peak_per_cycle_follows_the_instruction_set():
    avx2 = peak_ops_per_cycle({"avx2", "fma"})
    assert avx2 == {"fp32": 32.0, "bf16": 0.0, "int8": 64.0}
    avx512 = peak_ops_per_cycle({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"})
    assert avx512 == {"fp32": 64.0, "bf16": 128.0, "int8": 256.0}
    peak = theoretical_peak({"cores": 2, "ghz": 2.5}, {"avx2", "fma"})
    assert peak["fp32"] == 160.0 and peak["int8"] == 320.0


def test_runtimes_parse_and_bad_ones_are_named():
    assert parse_runtimes(["torch/fp32", "onnx/int8"]) == {"torch/fp32": Runtime(), "onnx/int8": Runtime("onnx", "int8")}
    with pytest.raises(InvalidInputError, match="expected BACKEND/PRECISION"):
        parse_runtimes(["onnx"])
    with pytest.raises(ConfigError, match="runs fp32 or bf16"):
        parse_runtimes(["torch/int8"])


def test_int8_matmul_graph_runs_in_onnx_runtime():
    pytest.importorskip("onnxruntime")
    from densekit.bench.backends import ort_int8_matmul_gops

    assert ort_int8_matmul_gops(n=64, repeats=1) > 0
