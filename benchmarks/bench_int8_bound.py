"""How much int8 can speed up a checkpoint's forward: per-node profiles and the Amdahl bound.

    python benchmarks/bench_int8_bound.py --ckpt CKPT --batch 32 --out benchmarks/results/int8_bound_<ckpt>.json

For the fp32 and int8 ONNX graphs of a checkpoint at one shape (``--batch`` pairs of
``--video-len`` clips and ``--query-len`` tokens, one ONNX Runtime thread):

- both graphs' forward wall time, interleaved in one run, and their ratio;
- ONNX Runtime's per-node profile of each: the share of the fp32 forward spent in the
  MatMuls the int8 graph rewrites (``rewritten_share``), and in all MatMuls with a constant
  weight (``const_matmul_share``). Even if int8 made those MatMuls free, the forward could
  not get faster than ``1 / (1 - share)``: ``bound`` and ``bound_all``;
- where the int8 graph's time goes: its integer GEMMs (``MatMulIntegerToFloat``), the
  per-row quantization and rescaling around them, and everything else;
- ``matmul_widths``: one MatMul alone (``rows`` = batch x video length rows), fp32 against
  the row-wise int8 rewrite, for square and FFN-like weight shapes: where int8 pays off.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from tdfast.benchmarks.machine import machine_info
from tdfast.benchmarks.matrix import make_pairs
from tdfast.benchmarks.profile import WARMUP, ort_node_profile
from tdfast.benchmarks.record import make_record, write_record
from tdfast.benchmarks.timing import interleaved_rounds
from tdfast.errors import InputError
from tdfast.export import ensure_export
from tdfast.export.ort import make_session
from tdfast.model.checkpoint import load_config

INT8_TAG = "/int8/"  # tdfast.export.int8_rows names every node it adds "<MatMul name>/int8/..."
WIDTHS = ((32, 32), (64, 64), (128, 128), (256, 256), (256, 1024), (1024, 256))  # (K, N) of W [K, N]


def matmul_graph(k: int, n: int, seed: int = 0):
    """``y = x @ W``: x [R, k] (dynamic R), W a random constant [k, n]."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).standard_normal((k, n)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["R", k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["R", n])],
                              [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def width_sweep(rows: int, rounds: int, work: Path) -> list[dict]:
    """fp32 against row-wise int8 for one MatMul of each ``WIDTHS`` shape, ``rows`` rows."""
    import onnx

    from tdfast.export.int8_rows import rowwise_matmuls

    out = []
    for k, n in WIDTHS:
        fp32, int8 = matmul_graph(k, n), matmul_graph(k, n)
        rowwise_matmuls(int8, set())
        paths = {name: work / f"mm_{k}x{n}_{name}.onnx" for name in ("fp32", "int8")}
        for name, proto in (("fp32", fp32), ("int8", int8)):
            onnx.save(proto, str(paths[name]))
        sessions = {name: make_session(p, "cpu", threads=1) for name, p in paths.items()}
        feed = {"x": np.random.default_rng(1).standard_normal((rows, k)).astype(np.float32)}
        calls = {name: (lambda s=s: s.run(None, feed)) for name, s in sessions.items()}
        for fn in calls.values():
            for _ in range(WARMUP):
                fn()
        seconds, _ = interleaved_rounds(calls, rounds, lambda: None)
        ms = {name: 1e3 * float(np.median(t)) for name, t in seconds.items()}
        out.append({"k": k, "n": n, "rows": rows, "fp32_ms": round(ms["fp32"], 4), "int8_ms": round(ms["int8"], 4),
                    "speedup": round(ms["fp32"] / ms["int8"], 3)})
        print(f"MatMul [{rows}, {k}] x [{k}, {n}]: fp32 {ms['fp32']:.3f} ms, int8 {ms['int8']:.3f} ms "
              f"({out[-1]['speedup']:.2f}x)", flush=True)
    return out


def split_int8(nodes: dict[str, tuple[str, float]]) -> dict[str, float]:
    """ms per forward of the int8 graph: integer GEMMs, the quantization around them, the rest."""
    gemm = sum(ms for op, ms in nodes.values() if op == "MatMulIntegerToFloat")
    around = sum(ms for name, (op, ms) in nodes.items() if INT8_TAG in name and op != "MatMulIntegerToFloat")
    total = sum(ms for _, ms in nodes.values())
    return {"int8_gemm_ms": round(gemm, 4), "quantize_rescale_ms": round(around, 4),
            "rest_ms": round(total - gemm - around, 4), "profiled_ms": round(total, 4)}


def main(argv: list[str] | None = None) -> int:
    import tempfile

    import onnx
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", type=Path, required=True)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--video-len", type=int, help="clips per video (default: the model's max_video_len, at most 75)")
    p.add_argument("--query-len", type=int, help="tokens per query (default: max_query_len, at most 32)")
    p.add_argument("--calls", type=int, default=30, help="profiled and timed forwards per graph (default 30)")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    config = load_config(a.ckpt)
    L = a.video_len or min(75, config.max_video_len)
    M = a.query_len or min(32, config.max_query_len)
    for flag, v in (("--batch", a.batch), ("--video-len", L), ("--query-len", M), ("--calls", a.calls)):
        if v < 1:
            raise InputError(f"{flag}: expected a positive integer, got {v}")
    videos, queries = make_pairs(config, a.batch, L, M)
    feed = {"video": np.stack(videos), "video_mask": np.ones((a.batch, L), bool),
            "query": np.stack(queries), "query_mask": np.ones((a.batch, M), bool)}
    paths = {"fp32": Path(ensure_export(a.ckpt, "onnx")), "int8": Path(ensure_export(a.ckpt, "onnx-int8"))}
    int8_proto = onnx.load(str(paths["int8"]), load_external_data=False)
    rewritten = {n.name.split(INT8_TAG)[0] for n in int8_proto.graph.node if INT8_TAG in n.name}
    fp32_proto = onnx.load(str(paths["fp32"]), load_external_data=False)
    weights = {t.name for t in fp32_proto.graph.initializer}
    const_mm = {n.name for n in fp32_proto.graph.node if n.op_type == "MatMul" and n.input[1] in weights}

    sessions = {name: make_session(path, "cpu", threads=1) for name, path in paths.items()}
    calls = {name: (lambda s=s: s.run(None, feed)) for name, s in sessions.items()}
    for fn in calls.values():
        for _ in range(WARMUP):
            fn()
    seconds, _ = interleaved_rounds(calls, a.calls, lambda: None)
    wall = {name: 1e3 * float(np.median(t)) for name, t in seconds.items()}
    profiles = {name: ort_node_profile(path, feed, a.calls, threads=1)[0] for name, path in paths.items()}

    fp32 = profiles["fp32"]
    total = sum(ms for _, ms in fp32.values())
    share = sum(ms for name, (_, ms) in fp32.items() if name in rewritten) / total
    share_all = sum(ms for name, (_, ms) in fp32.items() if name in const_mm) / total
    rows = [{"graph": "fp32", "wall_ms": round(wall["fp32"], 4), "profiled_ms": round(total, 4),
             "const_matmuls": len(const_mm), "rewritten_matmuls": len(rewritten & const_mm),
             "rewritten_share": round(share, 4), "const_matmul_share": round(share_all, 4),
             "bound": round(1 / (1 - share), 3), "bound_all": round(1 / (1 - share_all), 3)},
            {"graph": "int8", "wall_ms": round(wall["int8"], 4), "speedup": round(wall["fp32"] / wall["int8"], 3),
             **split_int8(profiles["int8"])}]
    print(f"fp32 {wall['fp32']:.2f} ms, int8 {wall['int8']:.2f} ms ({rows[1]['speedup']:.2f}x); the MatMuls int8 "
          f"rewrites are {100 * share:.1f}% of the fp32 forward (bound {rows[0]['bound']:.2f}x; all weight "
          f"MatMuls {100 * share_all:.1f}%, bound {rows[0]['bound_all']:.2f}x)", flush=True)
    with tempfile.TemporaryDirectory(prefix="tdfast-int8-bound-") as tmp:
        widths = width_sweep(a.batch * L, a.calls, Path(tmp))
    from tdfast.export.onnx_export import file_sha256
    from tdfast.model.checkpoint import WEIGHTS_NAME

    # The weights' digest names the model: the path is a scratch directory of the machine that ran.
    setup = {"ckpt": str(a.ckpt), "weights_sha256": file_sha256(a.ckpt / WEIGHTS_NAME)[:16], "batch": a.batch, "video_len": L, "query_len": M, "threads": 1,
             "calls": a.calls, "command": " ".join(["python", "benchmarks/bench_int8_bound.py",
                                                     *(argv if argv is not None else sys.argv[1:])])}
    write_record(make_record("profile", __doc__.split("\n\n")[0], machine_info("cpu"), setup, rows,
                             matmul_widths=widths), a.out)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
