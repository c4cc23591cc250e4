"""Where a CPU forward's time goes: per-op profiles of eager, compile and ONNX Runtime.

    python -m tdfast.benchmarks.profile --batch-sizes 1,32 --threads 2 \
        --out benchmarks/results/profile_cpu_fp32.json

Per backend and batch size: wall ms per forward (timed without the profiler), the
profiler's ms per forward split into categories (``CATEGORIES``: GEMM, attention,
normalisation, fused compiled code, copies and layout, quantization, the rest), ops per
forward and the top ops. torch backends are read with ``torch.profiler`` (self CPU time
of every op, so nothing is counted twice); ONNX Runtime with its own node profiler
(``SessionOptions.enable_profiling``: one event per node run).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tdfast.benchmarks.timing import interleaved_rounds

# Category -> substrings of op names (torch ops, inductor kernels, ONNX op types), first match wins.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "quantize": ("QuantizeLinear",),  # also DequantizeLinear, DynamicQuantizeLinear (int8 GEMMs are "gemm")
    "gemm": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "_linear_pointwise", "mkl_linear",
             "MatMul", "Gemm"),
    "attention": ("scaled_dot_product", "flash_attention", "Attention", "Softmax", "softmax"),
    "norm": ("layer_norm", "LayerNorm", "SkipLayerNormalization"),
    "fused": ("cpp_fused", "graph_"),
    "copy/layout": ("copy_", "aten::cat", "clone", "contiguous", "Transpose", "Concat", "Reshape",
                    "Expand", "Slice", "Gather", "Unsqueeze", "Squeeze", "aten::empty", "aten::pad",
                    "constant_pad"),
}
PASSIVE = ("aten::view", "aten::as_strided", "aten::t", "aten::transpose", "aten::expand",
           "aten::unsqueeze", "aten::slice", "aten::select", "aten::reshape", "aten::permute",
           "aten::_unsafe_view", "aten::alias", "aten::detach", "aten::split", "aten::chunk",
           "aten::unbind", "aten::squeeze", "aten::narrow", "aten::linear", "aten::matmul",
           "aten::lift_fresh", "aten::resolve_conj", "aten::resolve_neg")  # metadata-only or wrappers whose work is in a child op


WARMUP = 3  # untimed, unprofiled calls first


def categorize(name: str) -> str:
    for cat, keys in CATEGORIES.items():
        if any(k in name for k in keys):
            return cat
    return "other"


def summarize(ops: dict[str, tuple[float, int]], calls: int, wall_ms: float) -> dict[str, Any]:
    """``ops``: name -> (self ms over ``calls`` forwards, count) -> a profile row."""
    by_cat: dict[str, float] = defaultdict(float)
    for name, (ms, _) in ops.items():
        by_cat[categorize(name)] += ms / calls
    total = sum(by_cat.values())
    top = sorted(ops.items(), key=lambda kv: -kv[1][0])[:10]
    counted = sum(n for name, (_, n) in ops.items() if name not in PASSIVE)
    return {
        "wall_ms": round(wall_ms, 4),
        "profiled_ms": round(total, 4),
        "ops_per_forward": round(counted / calls, 1),
        "ms_by_category": {c: round(by_cat[c], 4) for c in (*CATEGORIES, "other") if by_cat[c] > 0},
        "gemm_share": round(by_cat["gemm"] / total, 4) if total else None,
        "top_ops": [{"op": n, "ms": round(ms / calls, 4), "count": c // calls} for n, (ms, c) in top],
    }


def _wall_ms(fn: Callable[[], Any], calls: int) -> float:
    """Median ms of ``calls`` calls of ``fn`` after one untimed call (CPU: nothing to sync)."""
    fn()
    seconds, _ = interleaved_rounds({"fn": fn}, calls, lambda: None)
    return 1e3 * float(np.median(seconds["fn"]))


def profile_torch(fn: Callable[..., Any], args: Sequence[torch.Tensor], calls: int) -> dict[str, Any]:
    """Profile ``fn(*args)`` (a module or compiled module) over ``calls`` forwards."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        for _ in range(WARMUP):  # compile, autotune, first-call allocations
            fn(*args)
        wall = _wall_ms(lambda: fn(*args), calls)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(calls):
                fn(*args)
    ops = {e.key: (e.self_cpu_time_total / 1e3, e.count) for e in prof.key_averages()
           if e.self_cpu_time_total > 0 or e.count}
    ops = {k: v for k, v in ops.items() if not k.startswith(("ProfilerStep", "Torch-Compiled Region",
                                                            "CompiledFunction", "## Call CompiledFxGraph"))}
    return summarize(ops, calls, wall)


def ort_node_profile(path: Path, feed: dict[str, np.ndarray], calls: int, threads: int
                     ) -> tuple[dict[str, tuple[str, float]], float]:
    """ONNX Runtime's node profiler over ``calls`` runs of ``path`` on ``feed`` (after
    ``WARMUP`` runs) -> ({node name: (op type, ms per run)}, wall ms per run timed without
    the profiler)."""
    from tdfast.export.ort import make_session

    plain = make_session(path, "cpu", threads)
    wall = _wall_ms(lambda: plain.run(None, feed), calls)
    with tempfile.TemporaryDirectory(prefix="tdfast-ortprof-") as tmp:
        sess = make_session(path, "cpu", threads, profile_prefix=os.path.join(tmp, "ort"))
        for _ in range(WARMUP + calls):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    runs = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    start = runs[WARMUP]  # node events of the warm-up runs come before the first timed run
    nodes: dict[str, tuple[str, float]] = {}
    for e in events:
        if e.get("ts", -1) >= start and e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            name = e["name"].removesuffix("_kernel_time")
            op, ms = nodes.get(name, (e["args"]["op_name"], 0.0))
            nodes[name] = (op, ms + e["dur"] / 1e3 / calls)
    return nodes, wall


def profile_ort(path: Path, feed: dict[str, np.ndarray], calls: int, threads: int) -> dict[str, Any]:
    """Profile an ONNX Runtime session of ``path`` on ``feed`` over ``calls`` runs."""
    nodes, wall = ort_node_profile(path, feed, calls, threads)
    ms: Counter[str] = Counter()
    count: Counter[str] = Counter()
    for op, t in nodes.values():
        ms[op] += t * calls
        count[op] += calls
    return summarize({op: (ms[op], count[op]) for op in ms}, calls, wall)


def linear_shapes(model: torch.nn.Module, args: Sequence[torch.Tensor]) -> Counter[tuple[int, int, int]]:
    """(rows, in, out) of every ``nn.Linear`` call in one forward of ``model(*args)`` -> calls."""
    shapes: Counter[tuple[int, int, int]] = Counter()

    def hook(mod: torch.nn.Linear, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0]
        shapes[(x.numel() // x.shape[-1], mod.in_features, mod.out_features)] += 1

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    try:
        with torch.inference_mode():
            model(*args)
    finally:
        for h in handles:
            h.remove()
    return shapes


def gemm_efficiency(shapes: Counter[tuple[int, int, int]], calls: int = 20) -> dict[str, Any]:
    """GFLOP/s of ``F.linear`` alone at each (rows, in, out) of ``shapes`` (median of ``calls``),
    and their FLOP-weighted rate: what the model's GEMMs reach when nothing else runs."""
    flops, seconds, per_shape = 0.0, 0.0, []
    for (n, k, m), count in sorted(shapes.items(), key=lambda kv: -kv[0][0] * kv[0][1] * kv[0][2] * kv[1]):
        x, w, b = torch.randn(n, k), torch.randn(m, k), torch.randn(m)
        with torch.inference_mode():
            ms = _wall_ms(lambda: torch.nn.functional.linear(x, w, b), calls)
        f = 2.0 * n * k * m
        flops, seconds = flops + f * count, seconds + ms / 1e3 * count
        per_shape.append({"rows": n, "in": k, "out": m, "calls": count, "gflops": round(f / ms / 1e6, 2)})
    return {"gflops": round(flops / seconds / 1e9, 2), "gemm_ms_per_forward": round(1e3 * seconds, 3),
            "per_shape": per_shape}


def profile_cpu(ckpt: Path, batches: Sequence[int], video_len: int, query_len: int, threads: int,
                calls: int, backends: Sequence[str] = ("eager", "compile", "onnxruntime", "onnxruntime-int8"),
                log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Profile rows (backend, batch, and ``summarize``'s fields) for a checkpoint on CPU fp32."""
    from tdfast.retrieval.backends import make_runner
    from tdfast.benchmarks.matrix import make_pairs
    from tdfast.model.tddetr import TDDETR
    from tdfast.export import ensure_export

    torch.set_num_threads(threads)
    model = TDDETR.from_pretrained(ckpt).eval()
    rows = []
    for b in batches:
        v, q = make_pairs(model.config, b, video_len, query_len)
        args = (torch.from_numpy(np.stack(v)), torch.ones(b, video_len, dtype=torch.bool),
                torch.from_numpy(np.stack(q)), torch.ones(b, query_len, dtype=torch.bool))
        feed = dict(zip(("video", "video_mask", "query", "query_mask"), (a.numpy() for a in args)))
        alone = gemm_efficiency(linear_shapes(model, args))
        log(f"B={b}: the model's linear layers alone run at {alone['gflops']:.1f} GFLOP/s "
            f"({alone['gemm_ms_per_forward']:.2f} ms per forward)")
        for name in backends:
            if name.startswith("onnxruntime"):
                fmt = "onnx-int8" if name.endswith("int8") else "onnx"
                row = profile_ort(Path(ensure_export(ckpt, fmt)), feed, calls, threads)
            else:
                runner = make_runner(name, model, torch.device("cpu"), torch.float32, ckpt)
                row = profile_torch(runner.fn, args, calls)
            rows.append({"backend": name, "batch": b, "video_len": video_len, "query_len": query_len,
                         "linear_alone": {k: alone[k] for k in ("gflops", "gemm_ms_per_forward")}, **row})
            log(f"{name} B={b}: wall {row['wall_ms']:.2f} ms, GEMM {100 * (row['gemm_share'] or 0):.0f}% "
                f"of {row['profiled_ms']:.2f} profiled ms, {row['ops_per_forward']:.0f} ops/forward")
    return rows


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The docs/benchmarks.md table of profile rows."""
    cats = [c for c in (*CATEGORIES, "other") if any(c in r["ms_by_category"] for r in rows)]
    head = "| backend | B | wall ms | profiled ms | " + " | ".join(cats) + " | GEMM share | ops/forward | % of peak |"
    lines = [head, "|" + "---|" * (len(cats) + 7)]
    for r in rows:
        cells = " | ".join(f"{r['ms_by_category'].get(c, 0):.2f}" for c in cats)
        pct = f"{r['pct_of_peak']:.0f}%" if "pct_of_peak" in r else "-"
        lines.append(f"| {r['backend']} | {r['batch']} | {r['wall_ms']:.2f} | {r['profiled_ms']:.2f} | {cells} | "
                     f"{100 * (r['gemm_share'] or 0):.0f}% | {r['ops_per_forward']:.0f} | {pct} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from tdfast.benchmarks.machine import machine_info
    from tdfast.benchmarks.record import make_record, write_record
    from tdfast.benchmarks.roofline import flops_per_pair, gemm_peak
    from tdfast.model.tddetr import TDDETR
    from tdfast.threads import default_threads

    p = argparse.ArgumentParser(prog="python -m tdfast.benchmarks.profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", type=Path, help="checkpoint directory (default: the preset, random init)")
    p.add_argument("--preset", default="qvhighlights")
    p.add_argument("--batch-sizes", default="1,32", help="batch sizes (default 1,32)")
    p.add_argument("--video-len", type=int, default=75)
    p.add_argument("--query-len", type=int, default=32)
    p.add_argument("--threads", type=int, default=default_threads())
    p.add_argument("--calls", type=int, default=20, help="profiled forwards per cell (default 20)")
    p.add_argument("--out", type=Path, help="write the JSON record here")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tdfast-profile-") as tmp:
        ckpt = a.ckpt
        if ckpt is None:
            from tdfast import TDDETR, TDDETRConfig

            torch.manual_seed(0)
            ckpt = TDDETR(TDDETRConfig.from_name(a.preset)).save_pretrained(Path(tmp) / "ckpt")
        torch.set_num_threads(a.threads)
        peak = gemm_peak("cpu", torch.float32)
        print(f"GEMM peak {peak['gflops']:.1f} GFLOP/s")
        flops = flops_per_pair(TDDETR.from_pretrained(ckpt), a.video_len, a.query_len)
        rows = profile_cpu(ckpt, [int(b) for b in a.batch_sizes.split(",")], a.video_len, a.query_len, a.threads,
                           a.calls)
    for r in rows:
        r["pct_of_peak"] = round(100 * flops * r["batch"] / (r["wall_ms"] / 1e3) / 1e9 / peak["gflops"], 2)
        r["linear_alone"]["pct_of_peak"] = round(100 * r["linear_alone"]["gflops"] / peak["gflops"], 2)
    print(markdown(rows))
    if a.out is not None:
        setup = {"ckpt": str(a.ckpt) if a.ckpt else f"{a.preset} preset, random init (seed 0)",
                 "threads": a.threads, "calls": a.calls, "dtype": "float32"}
        write_record(make_record("profile", __doc__.split("\n\n")[0], machine_info("cpu"), setup, rows,
                                        gemm_peak=peak, flops_per_pair=flops), a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
