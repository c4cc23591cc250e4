"""Retriever.predict latency per backend and batch size, side by side in one run.

What is measured: wall-clock of ``Retriever.predict(videos, queries, top_k=5)`` on
host numpy inputs (validation, bucketing, padding, the backend call, postprocess:
what a user's call costs), and inside it the backend call alone (``model_*``;
on CUDA synchronised). Backends are interleaved round by round, so a noisy
neighbour slows all of them alike. Before timing, each backend is warmed up per
shape: compile / CUDA-graph capture time is reported separately (``setup_s``:
construction incl. export or compile wrapper; ``compile``: first call per shape;
``warmup``: the next two calls).

In the same run: the machine's fp32 GEMM peak (best torch.matmul over large
square matrices), FLOPs per pair (torch's FlopCounterMode on the model), % of
peak per backend at B=32, B=1 latency over the per-pair cost at B=32, and the
int8 ONNX Runtime variant's speed-up and top-1 moment agreement with fp32 on a
synthetic val set (on a briefly trained model when tdfast.training is there).

    python benchmarks/bench_retriever.py                                   # CPU, ~5 min on 2 cores
    python benchmarks/bench_retriever.py --device cuda --dtype bf16        # GPU (H100/H200)
Writes benchmarks/results/retriever_<device>_<dtype>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_machine import flops_per_pair, gemm_peak, machine_info, percentile

from tdfast import Retriever, TDDETR, TDDETRConfig
from tdfast.errors import BackendUnavailableError

CPU_BACKENDS = ["eager", "compile", "onnxruntime", "onnxruntime-int8"]
GPU_BACKENDS = ["eager", "compile", "triton", "tensorrt", "onnxruntime"]
REPEATS = {1: 60, 8: 20, 32: 10, 256: 3}  # fewer rounds where one call is long
GPU_GOALS_MS = {1: 0.25, 32: 0.3, 256: 0.5}  # issue 7, bf16 on H100/H200


class TimedRunner:
    """Wraps a backend runner; records the seconds of each call (synchronised on CUDA)."""

    def __init__(self, runner, cuda: bool) -> None:
        self.runner, self.cuda, self.seconds = runner, cuda, []
        self.static_shapes, self.input_dtype = runner.static_shapes, runner.input_dtype
        self.max_batch = getattr(runner, "max_batch", None)

    def __call__(self, *args):
        start = time.perf_counter()
        out = self.runner(*args)
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds.append(time.perf_counter() - start)
        return out


def make_pairs(config: TDDETRConfig, batch: int, video_len: int, query_len: int, seed: int = 0):
    """Prepared-looking inputs: L2-normalised rows, as tdfast.data makes them."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((batch, video_len, config.video_dim)).astype(np.float32)
    q = rng.standard_normal((batch, query_len, config.text_dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    return list(v), list(q)


def summary_ms(seconds: list[float]) -> dict:
    ms = sorted(s * 1e3 for s in seconds)
    return {"n": len(ms), "p50": percentile(ms, 50), "p90": percentile(ms, 90), "p99": percentile(ms, 99),
            "min": ms[0], "mean": statistics.fmean(ms)}


def build(name: str, ckpt: Path, device: str, dtype: str, batch_sizes, inputs, log) -> dict:
    start = time.perf_counter()
    try:
        r = Retriever.from_pretrained(ckpt, backend=name, device=device, dtype=dtype,
                                      batch_size=max(batch_sizes))
    except BackendUnavailableError as e:
        log(f"  {name}: unavailable ({e})")
        return {"available": False, "reason": str(e)}
    setup = time.perf_counter() - start
    compile_s = {}
    for b in batch_sizes:  # warm up on the exact inputs that will be timed
        for _ in range(3):
            r.predict(*inputs[b], top_k=5)
    for shape, t in getattr(r.runner, "timings", {}).items():
        compile_s["x".join(map(str, shape))] = {k: round(v, 3) for k, v in t.items()}
    r.runner = TimedRunner(r.runner, device.startswith("cuda"))
    log(f"  {name}: setup {setup:.1f} s" + (f", compile per shape {compile_s}" if compile_s else ""))
    return {"available": True, "retriever": r, "setup_s": round(setup, 3), "compile": compile_s}


def time_all(built: dict, batch_sizes, inputs, repeats_scale: float, log) -> dict:
    """Interleaved rounds: for each B, each round calls every backend once."""
    rows: dict = {name: {} for name, b in built.items() if b["available"]}
    for b in batch_sizes:
        reps = max(3, int(REPEATS.get(b, 5) * repeats_scale))
        total = {n: [] for n in rows}
        model = {n: [] for n in rows}
        for _ in range(reps):
            for name in rows:
                r = built[name]["retriever"]
                r.runner.seconds.clear()
                start = time.perf_counter()
                r.predict(*inputs[b], top_k=5)
                total[name].append(time.perf_counter() - start)
                model[name].append(sum(r.runner.seconds))
        for name in rows:
            rows[name][b] = {"predict_ms": summary_ms(total[name]), "model_ms": summary_ms(model[name])}
            log(f"  B={b:<4} {name:<17} p50 {rows[name][b]['predict_ms']['p50']:9.2f} ms "
                f"(model {rows[name][b]['model_ms']['p50']:9.2f}) p90 {rows[name][b]['predict_ms']['p90']:9.2f} "
                f"p99 {rows[name][b]['predict_ms']['p99']:9.2f}")
    return rows


def checkpoint(work: Path, args, log) -> tuple[Path, object, bool]:
    """A qvhighlights-preset checkpoint and a synthetic dataset with its dims (2304 + 512, 512).
    Trained for ``--train-epochs`` when tdfast.training is available (int8 agreement is only
    meaningful on a model whose scores are not all tied); else random weights."""
    from tdfast.data import make_synthetic_dataset

    config = TDDETRConfig.from_name(args.preset)
    dims = (config.video_dim - 512, 512) if config.video_dim > 1024 else (config.video_dim,)  # SlowFast + CLIP
    ds = make_synthetic_dataset(work / "data", seed=0, num_train=args.train_videos, num_val=80, num_test=1,
                                video_dims=dims, text_dim=config.text_dim,
                                min_clips=20, max_clips=config.max_video_len)
    ckpt = work / "ckpt"
    if args.ckpt:
        return Path(args.ckpt), ds, True
    try:
        from tdfast.training import train
    except ImportError as e:
        log(f"  tdfast.training unavailable ({e}); random weights")
        torch.manual_seed(0)
        TDDETR(config).save_pretrained(ckpt)
        return ckpt, ds, False
    start = time.perf_counter()
    result = train(config, ds.train, ds.val, ds.video_dirs, ds.text_dir, ckpt, epochs=args.train_epochs,
                   progress=False, eval_before=False, device=args.device.split(":")[0])
    log(f"  trained {args.train_epochs} epochs in {time.perf_counter() - start:.0f} s; best val "
        f"MR-full-R1@0.5 {result.best_metrics.get('brief', result.best_metrics).get('MR-full-R1@0.5')}")
    return ckpt, ds, True


def int8_agreement(fp32: Retriever, int8: Retriever, ds) -> dict:
    """Top-1 moment agreement of int8 with fp32 on the synthetic val set: same top-ranked
    moment query (the DESIGN's "same top-1"), and IoU of the two top-1 spans."""
    from tdfast.data import FeatureStore, load_annotations
    from tdfast.spans import elementwise_iou

    anns = load_annotations(ds.val)
    store = FeatureStore(ds.video_dirs, ds.text_dir, fp32.config)
    videos = [store.video(a.vid) for a in anns]
    queries = [store.query(a.qid) for a in anns]

    def top1(r: Retriever) -> np.ndarray:
        raw = r.raw_outputs(videos, queries)
        return np.array([int(np.argmax(x["pred_logits"][:, 0] - np.logaddexp(*x["pred_logits"].T)))
                         for x in raw])

    a, b = top1(fp32), top1(int8)
    sa = np.stack([p.spans[0] for p in fp32.predict(videos, queries, top_k=1)])
    sb = np.stack([p.spans[0] for p in int8.predict(videos, queries, top_k=1)])
    iou = elementwise_iou(sa, sb)
    return {"queries": len(anns), "same_top1_query": float((a == b).mean()),
            "top1_iou_ge_0.7": float((iou >= 0.7).mean()), "top1_mean_iou": float(iou.mean())}


def derive(rows: dict, flops: float, peak: float, batch_sizes) -> dict:
    """% of GEMM peak at B=32 and B=1 latency over the per-pair cost at B=32, per backend."""
    out = {}
    for name, by_b in rows.items():
        d = {}
        if 32 in by_b:
            p50 = by_b[32]["predict_ms"]["p50"] / 1e3
            d["gflops_at_32"] = flops * 32 / p50 / 1e9
            d["pct_of_gemm_peak_at_32"] = 100 * d["gflops_at_32"] / peak
            d["model_pct_of_gemm_peak_at_32"] = 100 * flops * 32 / (by_b[32]["model_ms"]["p50"] / 1e3) / 1e9 / peak
            if 1 in by_b:
                d["b1_over_per_pair_at_32"] = by_b[1]["predict_ms"]["p50"] / (by_b[32]["predict_ms"]["p50"] / 32)
        out[name] = {k: round(v, 3) for k, v in d.items()}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", help="float32 | float16 | bfloat16")
    p.add_argument("--preset", default="qvhighlights")
    p.add_argument("--backends", nargs="+", help="default: " + " ".join(CPU_BACKENDS) + " (CPU), "
                   + " ".join(GPU_BACKENDS) + " (CUDA)")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32, 256])
    p.add_argument("--video-len", type=int, default=75)
    p.add_argument("--query-len", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all cores)")
    p.add_argument("--repeats-scale", type=float, default=None,
                   help="scale the rounds per batch size (default 1 on CPU, 20 on CUDA)")
    p.add_argument("--ckpt", help="use this checkpoint instead of training one")
    p.add_argument("--train-epochs", type=int, default=6)
    p.add_argument("--train-videos", type=int, default=200)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    cuda = args.device.startswith("cuda")
    if args.repeats_scale is None:
        args.repeats_scale = 20.0 if cuda else 1.0
    threads = args.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    torch.set_num_threads(threads)
    backends = args.backends or (GPU_BACKENDS if cuda else CPU_BACKENDS)
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    out = args.out or Path(__file__).parent / "results" / f"retriever_{args.device.split(':')[0]}_{args.dtype}.json"
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    info = machine_info(args.device)
    log(f"machine: {info['cpu_model']}, {info['cpu_affinity']} cores, torch {info['versions']['torch']}, "
        f"load {info['loadavg_start']}")
    peak0 = gemm_peak(args.device, dtype)
    log(f"GEMM peak ({peak0['dtype']}): {peak0['gflops']:.0f} GFLOP/s {peak0['per_size']}")
    with tempfile.TemporaryDirectory(prefix="bench-retriever-") as tmp:
        ckpt, ds, trained = checkpoint(Path(tmp), args, log)
        model = TDDETR.from_pretrained(ckpt)
        flops = flops_per_pair(model, args.video_len, args.query_len)
        log(f"model: {flops / 1e9:.3f} GFLOP per pair at L={args.video_len}, M={args.query_len}")
        inputs = {b: make_pairs(model.config, b, args.video_len, args.query_len, seed=b) for b in args.batch_sizes}
        built = {}
        for name in backends:
            dt = "float32" if name == "onnxruntime-int8" else args.dtype
            built[name] = build(name, ckpt, args.device, dt, args.batch_sizes, inputs, log)
        rows = time_all(built, args.batch_sizes, inputs, args.repeats_scale, log)
        agreement = None
        if built.get("onnxruntime-int8", {}).get("available"):
            ref = built.get("onnxruntime") or built.get("eager")
            agreement = int8_agreement(ref["retriever"], built["onnxruntime-int8"]["retriever"], ds)
            agreement["model_trained"] = trained
            log(f"int8 agreement: {agreement}")
    peak1 = gemm_peak(args.device, dtype)
    peak = max(peak0["gflops"], peak1["gflops"])
    derived = derive(rows, flops, peak, args.batch_sizes)
    record = {
        "what": "Retriever.predict wall-clock on host numpy inputs (validation, bucketing, padding, "
                "backend call, postprocess); model_ms = the backend call alone",
        "machine": {**info, "loadavg_end": os.getloadavg()},
        "setup": {"device": args.device, "dtype": args.dtype, "preset": args.preset, "threads": threads,
                  "video_len": args.video_len, "query_len": args.query_len, "top_k": 5,
                  "rounds": {b: max(3, int(REPEATS.get(b, 5) * args.repeats_scale)) for b in args.batch_sizes}},
        "gemm_peak": {"gflops": round(peak, 1), "start": peak0, "end": peak1},
        "gflop_per_pair": round(flops / 1e9, 4),
        "backends": {n: {k: v for k, v in b.items() if k != "retriever"} for n, b in built.items()},
        "latency": rows,
        "derived": derived,
        "int8": agreement,
    }
    fp32 = {n: d for n, d in derived.items() if n != "onnxruntime-int8" and "pct_of_gemm_peak_at_32" in d}
    if fp32 and not cuda:
        best = max(fp32, key=lambda n: fp32[n]["pct_of_gemm_peak_at_32"])
        goals = {"best_fp32_backend": best,
                 "pct_of_peak_at_32": fp32[best]["pct_of_gemm_peak_at_32"], "pct_goal": 80.0,
                 "b1_ratio": fp32[best].get("b1_over_per_pair_at_32"), "b1_ratio_goal": 1.3}
        if agreement and "onnxruntime" in rows and 32 in rows["onnxruntime"]:
            goals["int8_speedup_vs_onnxruntime_at_32"] = round(
                rows["onnxruntime"][32]["predict_ms"]["p50"] / rows["onnxruntime-int8"][32]["predict_ms"]["p50"], 3)
            goals["int8_speedup_vs_best_fp32_at_32"] = round(
                rows[best][32]["predict_ms"]["p50"] / rows["onnxruntime-int8"][32]["predict_ms"]["p50"], 3)
            goals["int8_speedup_goal"], goals["int8_agreement_goal"] = 1.5, 0.95
        record["goals"] = goals
        log(f"goals: {goals}")
    if cuda:  # issue goals for one whole batch: the backend call on a padded batch (model_ms)
        goals = {"whole_batch_goal_ms": GPU_GOALS_MS, "model_p50_ms": {
            n: {b: round(r[b]["model_ms"]["p50"], 4) for b in GPU_GOALS_MS if b in r} for n, r in rows.items()}}
        record["goals"] = goals
        log(f"goals: {goals}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, default=str))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
