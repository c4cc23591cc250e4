"""tdfast.benchmarks.profile: op categories, per-forward arithmetic, warm-up runs left out."""
from __future__ import annotations

import pytest
import torch

from tdfast.benchmarks.profile import categorize, markdown, profile_ort, profile_torch, summarize


@pytest.mark.parametrize("name, cat", [
    ("aten::addmm", "gemm"), ("aten::bmm", "gemm"), ("mkldnn::_linear_pointwise", "gemm"),
    ("MatMulInteger", "gemm"), ("FusedMatMul", "gemm"), ("DynamicQuantizeLinear", "quantize"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"), ("Softmax", "attention"),
    ("aten::native_layer_norm", "norm"), ("LayerNormalization", "norm"),
    ("cpp_fused_add_native_layer_norm_0", "norm"), ("cpp_fused_relu_3", "fused"),
    ("aten::copy_", "copy/layout"), ("Transpose", "copy/layout"), ("aten::sin", "other"),
])
def test_categories(name, cat):
    assert categorize(name) == cat


def test_summarize_divides_by_calls_and_skips_metadata_ops():
    ops = {"aten::addmm": (30.0, 60), "aten::native_layer_norm": (6.0, 20), "aten::view": (0.5, 400),
           "aten::relu": (4.0, 20)}
    row = summarize(ops, calls=10, wall_ms=5.0)
    assert row["profiled_ms"] == pytest.approx(4.05)
    assert row["ms_by_category"] == {"gemm": 3.0, "norm": 0.6, "other": 0.45}
    assert row["gemm_share"] == pytest.approx(3.0 / 4.05, abs=1e-4)
    assert row["ops_per_forward"] == 10.0  # 60 + 20 + 20 over 10 calls; views are free
    assert row["top_ops"][0] == {"op": "aten::addmm", "ms": 3.0, "count": 6}
    assert "| x | 1 | 5.00 | 4.05 | 3.00 | 0.60 | 0.45 | 74% | 10 | - |" in markdown([{**row, "backend": "x", "batch": 1}])


def test_torch_profile_counts_one_forward():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4)).eval()
    x = torch.randn(3, 8)
    for calls in (2, 5):  # the warm-up calls are not in the counts
        row = profile_torch(net, (x,), calls)
        gemms = [o for o in row["top_ops"] if categorize(o["op"]) == "gemm"]
        assert sum(o["count"] for o in gemms) == 2
        # addmm x2, their bias copies x2, relu and the clamp_min it dispatches to
        assert row["ops_per_forward"] == 6.0


def test_ort_profile_leaves_out_the_warmup_runs(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper
    import numpy as np

    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], np.eye(4, dtype=np.float32).ravel().tolist())
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"]),
                               helper.make_node("Softmax", ["z"], ["out"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 4])], [w])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    feed = {"x": np.ones((2, 4), np.float32)}
    for calls in (2, 4):
        row = profile_ort(path, feed, calls, threads=1)
        assert row["ops_per_forward"] == pytest.approx(3.0, abs=0.01)  # MatMul, Relu, Softmax per run
        assert set(row["ms_by_category"]) <= {"gemm", "attention", "other"}


def test_linear_shapes_and_their_flop_weighted_rate():
    from tdfast.benchmarks.profile import gemm_efficiency, linear_shapes

    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16),
                              torch.nn.Linear(16, 16)).eval()
    shapes = linear_shapes(net, (torch.randn(2, 5, 8),))
    assert dict(shapes) == {(10, 8, 16): 1, (10, 16, 16): 2}
    got = gemm_efficiency(shapes, calls=3)
    per = {(r["rows"], r["in"], r["out"]): r for r in got["per_shape"]}
    # the overall rate is total FLOPs over total time, each shape's time = its FLOPs / its rate
    flops = {s: 2 * s[0] * s[1] * s[2] * n for s, n in shapes.items()}
    seconds = sum(flops[s] / (per[s]["gflops"] * 1e9) for s in flops)
    assert got["gflops"] == pytest.approx(sum(flops.values()) / seconds / 1e9, rel=0.02)
