"""Fused TD interaction vs the eager block vs torch.compile of the eager block.

What is measured: one TD layer's interaction (``TDCrossAttention.forward``: temporal
differences, flow projection, both query projections, both text K/V sets, two attentions,
the official beta merge, both output projections) at D = 256, 8 heads, M = 32 text tokens,
TDEM on, beta = 0.7 (qvhighlights), for B in {1, 32, 256} x L in {75, 150}.

GPU (one command, also the kernels-bench step of benchmarks/run_gpu.sh):
    python benchmarks/bench_kernels.py --device cuda --dtype bf16 \
        --out benchmarks/results/kernels_<gpu>_bf16.json
  Timer: ``triton.testing.do_bench`` median (warmup 25 ms, rep 100 ms; L2 flushed before
  every call, so weights and inputs are read from HBM), plus ``do_bench_cudagraph``
  median (launch overhead removed). Bandwidth = the minimum bytes a fused layer must
  move (x, text, mask bias, out, weights once) / time, against the GPU's peak (spec
  sheet) and against a measured device-to-device copy. ``--sweep`` also times the
  kernel's tiles (every ``all_configs`` choice, for the installed Triton and for 3.9) to
  re-pick defaults.

CPU (runs anywhere): ``python benchmarks/bench_kernels.py --device cpu`` times the eager
block and the float64 reference with a wall-clock median (the kernel itself only runs
on CPU in Triton's interpreter, which is a correctness tool, not a timing target).
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch

from tdfast.benchmarks import machine_info, make_record, summarize_ms, write_record
from tdfast.benchmarks.machine import load_average
from tdfast.benchmarks.timing import gpu_timers, interleaved_rounds, synchronizer, warm_up
from tdfast.devices import DTYPES, SHORT_DTYPE_NAMES
from tdfast.model.attention import mask_to_bias
from tdfast.model.td_interaction import TDCrossAttention, td_interaction_reference

# Spec-sheet HBM bandwidth, bytes/s, by a substring of torch.cuda.get_device_name().
PEAK_BANDWIDTH = {"H200": 4.8e12, "H100 80GB HBM3": 3.35e12, "H100 PCIe": 2.0e12,
                  "H100": 3.35e12, "A100-SXM4-80GB": 2.039e12, "A100": 1.555e12,
                  "L40S": 0.864e12, "A10G": 0.6e12, "RTX 4090": 1.008e12}


def make_case(batch: int, video_len: int, text_len: int, dim: int, heads: int, dtype: torch.dtype,
              device: str, seed: int = 0):
    """A TD layer, its start token and a padded batch: layer, start, video, pos [B, L, D],
    text [B, M, D], mask [B, M], bias [B, 1, 1, M]."""
    torch.manual_seed(seed)
    layer = TDCrossAttention(dim, heads, 0.0, True, 0.7).to(device=device, dtype=dtype).eval()
    start = torch.randn(dim, device=device, dtype=dtype)
    video = torch.randn(batch, video_len, dim, device=device, dtype=dtype)
    pos = torch.randn(batch, video_len, dim, device=device, dtype=dtype)
    text = torch.randn(batch, text_len, dim, device=device, dtype=dtype)
    lengths = torch.randint(1, text_len + 1, (batch,), device=device)
    mask = torch.arange(text_len, device=device)[None, :] < lengths[:, None]  # [B, M] ragged
    return layer, start, video, pos, text, mask, mask_to_bias(mask, dtype)


def traffic_bytes(batch: int, video_len: int, text_len: int, dim: int, elem: int) -> int:
    """Bytes a perfectly fused layer moves through HBM: read video, pos, text, the [B, M] bias
    and 10 D x D weights (flow 2, queries 2, K/V 4, outputs 2) once, write s."""
    acts = 3 * batch * video_len * dim + batch * text_len * dim + batch * text_len
    return (acts + 10 * dim * dim) * elem


def flops(batch: int, video_len: int, text_len: int, dim: int) -> int:
    """Multiply-adds x 2: flow projection (2 D x D), two query projections, four text
    projections (K, V per branch), two attentions (QK^T and PV each), two output projections."""
    b, n, m, d = batch, video_len, text_len, dim
    return 2 * (6 * b * n * d * d + 4 * b * m * d * d + 2 * 2 * b * n * m * d)


def copy_bandwidth(device: str) -> float:
    """Measured device-to-device copy, bytes read + written per second (1 GiB buffers)."""
    import triton.testing

    src = torch.empty(2**28, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), return_mode="median")
    return 2 * src.numel() * 4 / (ms * 1e-3)


def bench_gpu(args, dtype: torch.dtype) -> tuple[dict, list[dict]]:
    from tdfast.kernels import all_configs
    from tdfast.kernels.fuse import FusedTDCrossAttention
    from tdfast.kernels.packing import pack_weights
    from tdfast.kernels.td_interaction import td_interaction

    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    name = torch.cuda.get_device_name()
    spec = next((v for k, v in PEAK_BANDWIDTH.items() if k in name), None)
    meta = {"peak_bandwidth_spec": spec, "copy_bandwidth_measured": copy_bandwidth("cuda"),
            "timer": "triton.testing.do_bench median, warmup 25 ms, rep 100 ms, L2 flushed per "
                     "call; graph_us: do_bench_cudagraph median"}
    peak = spec or meta["copy_bandwidth_measured"]
    rows = []
    for batch, video_len in itertools.product(args.batches, args.video_lens):
        layer, start, video, pos, text, mask, bias = make_case(batch, video_len, args.text_len,
                                                               args.dim, args.heads, dtype, "cuda")
        w = layer.weights(start)
        packed = pack_weights(w, args.heads, layer.beta, dtype)
        fused_module = FusedTDCrossAttention(layer)
        compiled = torch.compile(layer, dynamic=False)
        ref = td_interaction_reference(video, pos, text, mask, w, args.heads, layer.beta)
        variants = {
            "eager": lambda: layer(video, pos, start, text, bias),
            "compile": lambda: compiled(video, pos, start, text, bias),
            "fused": lambda: td_interaction(video, pos, start, text, bias, packed),
            "fused_module": lambda: fused_module(video, pos, start, text, bias),  # as fuse_model runs it
        }
        if args.sweep:
            # the installed Triton's tiles and those fitted on 3.9: under Triton 3.6 the latter
            # spill, and this times whether that costs more than 16-row tiles' weight re-reads
            sweep = {c.name + c.kv_name: c for version in (None, "3.9.0")
                     for c in all_configs(dtype, args.dim, args.heads, args.tf32, triton_version=version)}
            for cfg in sweep.values():
                variants[f"fused[{cfg.name}/{cfg.kv_name}]"] = (
                    lambda cfg=cfg: td_interaction(video, pos, start, text, bias, packed, config=cfg))
        nbytes = traffic_bytes(batch, video_len, args.text_len, args.dim, video.element_size())
        nflops = flops(batch, video_len, args.text_len, args.dim)
        with torch.inference_mode():
            for impl, fn in variants.items():
                row = {"scope": "td_interaction", "impl": impl, "B": batch, "L": video_len,
                       "M": args.text_len, "D": args.dim, "heads": args.heads, "bytes": nbytes,
                       "flops": nflops}
                try:
                    out = fn()  # warm-up: compiles, and the parity numbers below
                    row["max_abs_diff_vs_fp64_reference"] = (out.double() - ref.double()).abs().max().item()
                    row.update(gpu_timers(fn))
                    row["GB_per_s"] = nbytes / (row["us"] * 1e-6) / 1e9
                    row["fraction_of_peak_bandwidth"] = nbytes / (row["us"] * 1e-6) / peak
                    row["TFLOP_per_s"] = nflops / (row["us"] * 1e-6) / 1e12
                except Exception as e:  # record and go on: one broken variant must not lose the run
                    row["error"] = f"{type(e).__name__}: {e}"[:300]
                rows.append(row)
                print(_fmt(row), flush=True)
        _add_speedups(rows, batch, video_len)
    return meta, rows


def bench_model_gpu(args, dtype: torch.dtype) -> list[dict]:
    """Whole TDDETR (qvhighlights preset, L = 75, M = 32) eager vs ``fuse_model``: how much of
    the model the TD layers are, and whether launches still dominate at small B."""
    import copy

    from tdfast import TDDETR, TDDETRConfig
    from tdfast.kernels import fuse_model

    config = TDDETRConfig.from_name("qvhighlights")
    eager = TDDETR(config).cuda().to(dtype).eval()
    fused = fuse_model(copy.deepcopy(eager))
    rows = []
    for batch in args.batches:
        g = torch.Generator(device="cuda").manual_seed(0)
        n, m = config.max_video_len, config.max_query_len
        video = torch.randn(batch, n, config.video_dim, device="cuda", dtype=dtype, generator=g)
        query = torch.randn(batch, m, config.text_dim, device="cuda", dtype=dtype, generator=g)
        vmask = torch.ones(batch, n, dtype=torch.bool, device="cuda")
        qmask = torch.arange(m, device="cuda")[None, :] < torch.randint(1, m + 1, (batch, 1), device="cuda")
        with torch.inference_mode():
            want = eager(video, vmask, query, qmask)["saliency_scores"]
            for impl, model in (("model_eager", eager), ("model_fused", fused)):
                fn = lambda model=model: model(video, vmask, query, qmask)  # noqa: E731
                row = {"scope": "model", "impl": impl, "B": batch, "L": n, "M": m,
                       "D": config.hidden_dim, "heads": config.num_heads,
                       "saliency_max_abs_diff_vs_eager": (fn()["saliency_scores"] - want).abs().max().item()}
                row.update(gpu_timers(fn))
                rows.append(row)
                print(_fmt(row), flush=True)
        _add_speedups(rows, batch, n, eager_impl="model_eager")
    return rows


def bench_cpu(args, dtype: torch.dtype) -> tuple[dict, list[dict]]:
    meta = {"timer": f"wall-clock median (us) and min (min_us) of {args.reps} calls per impl, impls "
                     f"interleaved round by round, after >= 0.5 s of warm-up each (tdfast.benchmarks.timing)"}
    rows = []
    for batch, video_len in itertools.product(args.batches, args.video_lens):
        layer, start, video, pos, text, mask, bias = make_case(batch, video_len, args.text_len,
                                                               args.dim, args.heads, dtype, "cpu")
        w = layer.weights(start)
        impls = {"eager": lambda: layer(video, pos, start, text, bias),
                 "reference_fp64": lambda: td_interaction_reference(video, pos, text, mask, w, args.heads,
                                                                    layer.beta)}
        with torch.inference_mode():
            for fn in impls.values():
                warm_up(fn)
            seconds, _ = interleaved_rounds(impls, args.reps, synchronizer("cpu"))
        for impl, secs in seconds.items():
            t = summarize_ms(secs)
            row = {"scope": "td_interaction", "impl": impl, "B": batch, "L": video_len,
                   "M": args.text_len, "D": args.dim, "heads": args.heads, "us": t["p50_ms"] * 1e3,
                   "min_us": t["min_ms"] * 1e3,
                   "GFLOP_per_s": flops(batch, video_len, args.text_len, args.dim) / (t["p50_ms"] * 1e3) / 1e3}
            rows.append(row)
            print(_fmt(row), flush=True)
        _add_speedups(rows, batch, video_len)
    return meta, rows


def _add_speedups(rows: list[dict], batch: int, video_len: int, eager_impl: str = "eager") -> None:
    here = [r for r in rows if r["B"] == batch and r["L"] == video_len and "us" in r]
    eager = next((r["us"] for r in here if r["impl"] == eager_impl), None)
    for r in here:
        if eager:
            r["speedup_vs_eager"] = eager / r["us"]


def _fmt(row: dict) -> str:
    if "error" in row:
        return f"B={row['B']:>3} L={row['L']:>3} {row['impl']:<16} ERROR {row['error']}"
    extra = "".join(f" {k}={row[k]:.3g}" for k in ("min_us", "graph_us", "GB_per_s", "fraction_of_peak_bandwidth",
                                                   "max_abs_diff_vs_fp64_reference") if k in row)
    return f"B={row['B']:>3} L={row['L']:>3} {row['impl']:<16} {row['us']:10.1f} us{extra}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=SHORT_DTYPE_NAMES, default=None,
                   help="default: bf16 on cuda, fp32 on cpu")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    p.add_argument("--video-lens", type=int, nargs="+", default=[75, 150])
    p.add_argument("--text-len", type=int, default=32)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--reps", type=int, default=15, help="CPU timer repetitions")
    p.add_argument("--threads", type=int, help="CPU: torch.set_num_threads (default: torch's)")
    p.add_argument("--tf32", action="store_true", help="fp32 GEMMs in TF32 (eager and compile)")
    p.add_argument("--sweep", action="store_true", help="also time the kernel's tuning knobs")
    p.add_argument("--model", action="store_true", help="also time the whole TDDETR, eager vs fused")
    p.add_argument("--out", type=Path, help="write the JSON record here")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"bench_kernels.py: error: --device cuda: no CUDA GPU is visible to torch {torch.__version__}; "
              f"use --device cpu", file=sys.stderr)
        return 2
    dtype = DTYPES[args.dtype or ("bf16" if args.device == "cuda" else "fp32")]
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = machine_info(args.device)
    meta, rows = (bench_gpu if args.device == "cuda" else bench_cpu)(args, dtype)
    if args.model and args.device == "cuda":
        rows += bench_model_gpu(args, dtype)
    machine["loadavg_end"] = load_average()
    setup = {**vars(args), "out": str(args.out), "dtype": str(dtype).removeprefix("torch."), **meta}
    record = make_record("kernels", "one TD layer's interaction (TDCrossAttention.forward)",
                         machine, setup, rows)
    if args.out:
        write_record(record, args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
