"""Helpers of the int8 benchmark scripts on hand-made input: the bound script's split of an
int8 profile, and the ISA script's first-N-pairs val file (no model, no ONNX Runtime run)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tdfast.errors import InputError

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_int8_profile_split_counts_each_node_once():
    bound = _script("bench_int8_bound")
    nodes = {"/model/proj/MatMul/int8/MatMulIntegerToFloat_acc": ("MatMulIntegerToFloat", 2.0),
             "/model/proj/MatMul/int8/QuantizeLinear_q2": ("QuantizeLinear", 0.5),
             "/model/proj/MatMul/int8/Mul_y": ("Mul", 0.25),
             "/model/proj/Add": ("Add", 0.125),  # the bias Add stays the model's own
             "/model/attn/MatMul": ("MatMul", 1.0)}  # attention scores: no weight, not rewritten
    got = bound.split_int8(nodes)
    assert got == {"int8_gemm_ms": 2.0, "quantize_rescale_ms": 0.75, "rest_ms": 1.125, "profiled_ms": 3.875}


def test_first_pairs_keeps_the_first_queries_in_order(tmp_path):
    isa = _script("bench_int8_isa")
    lines = [json.dumps({"qid": i, "query": f"q{i}"}) for i in range(5)]
    val = tmp_path / "val.jsonl"
    val.write_text("\n".join(lines) + "\n\n")
    ds = SimpleNamespace(val=val, video_dirs=(tmp_path / "v",), text_dir=tmp_path / "t")
    work = tmp_path / "work"
    work.mkdir()
    got = isa.first_pairs(ds, 3, work)
    assert [json.loads(x)["qid"] for x in got.val.read_text().splitlines()] == [0, 1, 2]
    assert (got.video_dirs, got.text_dir) == (ds.video_dirs, ds.text_dir)
    assert val.read_text() == "\n".join(lines) + "\n\n"  # the dataset's own file is untouched
    with pytest.raises(InputError, match="--pairs: expected a positive integer, got 0"):
        isa.first_pairs(ds, 0, work)


def test_power_of_two_scales_quantize_like_the_rounded_reference():
    """bench_int8_keep's power-of-two row scale: the rewritten MatMul computes the numpy
    reference with ``s = 2 ** ceil(log2(max|x| / 127))`` (an exact-scaling oracle), and differs
    from the default scale's result (so the variant really changed the graph)."""
    pytest.importorskip("onnxruntime")
    import onnx
    import onnxruntime as ort

    from tdfast.export.int8_rows import quantize_weight, rowwise_matmuls

    keep, bound = _script("bench_int8_keep"), _script("bench_int8_bound")
    proto = bound.matmul_graph(64, 16)
    w = onnx.numpy_helper.to_array(proto.graph.initializer[0])
    assert rowwise_matmuls(proto, set()) == 1
    default = onnx.ModelProto()
    default.CopyFrom(proto)
    assert keep.power_of_two_scales(proto) == 1
    x = np.random.default_rng(3).standard_normal((5, 64)).astype(np.float32) * np.float32([[0.3], [1], [2.5], [7], [100]])
    run = lambda p: ort.InferenceSession(p.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    q_w, w_scale = quantize_weight(w)
    s = np.float32(2.0) ** np.ceil(np.log2(np.abs(x).max(-1, keepdims=True) / np.float32(127)))  # [5, 1]
    want = (np.rint(x / s).astype(np.int64) @ q_w.astype(np.int64)).astype(np.float32) * w_scale * s
    np.testing.assert_allclose(run(proto), want, rtol=1e-6, atol=1e-6 * np.abs(want).max())
    assert np.abs(run(default) - want).max() > 1e-3 * np.abs(want).max()


def test_last_bit_perturbation_moves_each_feature_by_one_or_two_ulp():
    """x * (1 + 2**-23) is x plus 1 to 2 units in x's last place (2**-23 is 1 ulp of 1.0, and x's
    ulp is 2**-23 times its power of two, at most x): the perturbation the keep bench applies."""
    keep = _script("bench_int8_keep")
    seen = {}
    run = lambda v, vm, q, qm: seen.update(v=v, q=q)
    video = np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32)
    query = np.random.default_rng(1).standard_normal((2, 3, 4)).astype(np.float32)
    assert keep.perturbed(run, 0.0, 1) is run  # the unperturbed draw is the runner itself
    keep.perturbed(run, keep.ULP, 1)(video, None, query, None)
    for got, x in ((seen["v"], video), (seen["q"], query)):
        steps = np.abs(got.astype(np.float64) - x) / np.spacing(np.abs(x))  # in units of x's last bit
        assert got.dtype == np.float32 and steps.max() <= 2.0 and 0.3 < (steps > 0).mean() < 0.9
    again = {}
    keep.perturbed(lambda v, vm, q, qm: again.update(v=v), keep.ULP, 1)(video, None, query, None)
    np.testing.assert_array_equal(again["v"], seen["v"])  # a draw is reproducible from its seed
