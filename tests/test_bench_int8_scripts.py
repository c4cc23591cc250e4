"""Helpers of the int8 benchmark scripts on hand-made input: the bound script's split of an
int8 profile, and the ISA script's first-N-pairs val file (no model, no ONNX Runtime run)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

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
