"""CPU latency of eager PyTorch vs ONNX Runtime (fp32, int8) for the qvhighlights-sized model.

    python benchmarks/bench_export.py [--ckpt DIR] [--repeats 15] [--out benchmarks/results/export_cpu.json]

What is measured, in one process, on one machine:
- the fp32 GEMM peak of this machine (torch.mm, 2048^3, best of 10), and the model's FLOPs per
  (video, query) pair at L=75, M=32 (torch.utils.flop_counter, counted on the eager model);
- wall-clock latency of one batch at B in {1, 8, 32}, L=75, M=32 (no padding), for eager fp32
  (inference_mode), ONNX Runtime fp32 and ONNX Runtime int8 (dynamic quantization); backends
  are interleaved within each repeat so background load hits them alike; min and median reported,
  and the goals are judged on the min (best of N: the machine's capability; this box is shared,
  so medians carry other processes' load, recorded as loadavg and as the GEMM peak re-measured
  at the end);
- int8 quality: top-1 moment agreement with fp32 ONNX Runtime on a synthetic val set (the
  data generator's val split with the model's dims), plus mean |delta| of foreground probability;
- exporter parity: max |onnx - eager| of the dynamo and TorchScript exports over 12 unseen shapes.
Without --ckpt the model is randomly initialised (then moment scores are near-tied and top-1
agreement is pessimistic; the JSON says which). Threads: torch and ORT both use --threads.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tdfast import TDDETR, TDDETRConfig
from tdfast.export import OrtRunner, export_onnx, quantize_int8
from tdfast.export.verify import Shape, eager_outputs, foreground_prob, top1, verify_onnx
from tdfast.export.wrapper import random_inputs


def machine_info(threads: int) -> dict:
    import onnxruntime

    flags = set()
    model_name = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    simd = sorted(f for f in flags if f in {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16",
                                            "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"})
    return {"cpu": model_name, "logical_cpus": os.cpu_count(),
            "simd": simd, "python": sys.version.split()[0], "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "threads": threads,
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}


def gemm_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def model_flops_per_pair(model: TDDETR, video_len: int, query_len: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x = random_inputs(model.config, 1, video_len, query_len, padded=False)
    with FlopCounterMode(display=False) as counter:  # (its module tracker breaks under no_grad)
        model(*x)
    return float(counter.get_total_flops())


def wait_for_quiet(max_seconds: float, threshold: float = 0.6) -> float:
    """Sleep until the 1-minute load average drops below ``threshold`` (or time runs out)."""
    t0 = time.time()
    while os.getloadavg()[0] >= threshold and time.time() - t0 < max_seconds:
        time.sleep(10)
    return os.getloadavg()[0]


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def latency_table(model: TDDETR, runners: dict, batches: list[int], repeats: int) -> dict:
    """{backend: {B: {"median_ms", "min_ms"}}} with backends interleaved inside each repeat."""
    c = model.config
    out: dict = {name: {} for name in ["eager", *runners]}
    for b in batches:
        x = random_inputs(c, b, c.max_video_len, c.max_query_len, padded=False, seed=b)
        xs = [t.numpy() for t in x]
        calls = {"eager": lambda: model(*x), **{k: (lambda r=r: r(*xs)) for k, r in runners.items()}}
        times: dict = {k: [] for k in calls}
        with torch.inference_mode():
            for fn in calls.values():
                for _ in range(3):
                    fn()  # warm-up: allocator, ORT arena, oneDNN primitive cache
            for _ in range(repeats):
                for k, fn in calls.items():
                    times[k].append(_timed(fn))
        for k, ts in times.items():
            out[k][b] = {"median_ms": 1e3 * statistics.median(ts), "min_ms": 1e3 * min(ts)}
        print(f"B={b:>3} min/median ms: " + "  ".join(
            f"{k} {out[k][b]['min_ms']:.2f}/{out[k][b]['median_ms']:.2f}" for k in calls), flush=True)
    return out


def synthetic_val_batches(config: TDDETRConfig, num_videos: int, batch: int = 32):
    """The synthetic generator's val split with the model's dims, as padded batches."""
    from tdfast.data.collate import collate
    from tdfast.data.dataset import make_sample
    from tdfast.data.features import prepare_query, prepare_video
    from tdfast.data.synthetic import SyntheticSpec, generate

    spec = SyntheticSpec(seed=0, num_train=0, num_val=num_videos, num_test=0,
                         video_dims=(config.video_dim,), text_dim=config.text_dim,
                         clip_len=config.clip_len, max_clips=config.max_video_len, min_clips=20)
    _, splits = generate(spec)
    samples = [make_sample(ann, prepare_video([v.features], config, v.vid),
                           prepare_query(tokens, config, f"qid{ann.qid}"), config)
               for v in splits["val"] for ann, tokens, _ in v.queries]
    for i in range(0, len(samples), batch):
        b = collate(samples[i:i + batch])
        yield b["video"], b["video_mask"], b["query"], b["query_mask"]


def int8_quality(fp32: OrtRunner, int8: OrtRunner, model: TDDETR, num_videos: int) -> dict:
    """Top-1 agreement int8 vs fp32 (strict argmax, the issue's metric), and what it depends on:
    the fp32 top-1 margin (best minus second foreground probability) against the int8 error."""
    from tdfast.spans import cxw_to_xx, elementwise_iou

    same, margin, dprob, iou, eager_same = [], [], [], [], []
    for x in synthetic_val_batches(model.config, num_videos):
        a, b = fp32(*x), int8(*x)
        pa, pb = foreground_prob(a["pred_logits"]), foreground_prob(b["pred_logits"])
        ia, ib = pa.argmax(-1), pb.argmax(-1)
        rows = np.arange(len(ia))
        same.append(ia == ib)
        top2 = np.sort(pa, -1)[:, -2:]
        margin.append(top2[:, 1] - top2[:, 0])
        dprob.append(np.abs(pa - pb).max(-1))
        iou.append(elementwise_iou(cxw_to_xx(a["pred_spans"][rows, ia]), cxw_to_xx(b["pred_spans"][rows, ib])))
        eager_same.append(top1(eager_outputs(model, x)["pred_logits"]) == ia)
    same, margin, dprob, iou = map(np.concatenate, (same, margin, dprob, iou))
    decisive = margin >= 0.01
    return {
        "pairs": int(same.size),
        "top1_agreement_int8_vs_fp32": round(float(same.mean()), 4),
        "top1_agreement_ortfp32_vs_eager": round(float(np.concatenate(eager_same).mean()), 4),
        "top1_span_iou_int8_vs_fp32_mean": round(float(iou.mean()), 4),
        "fp32_top1_margin_median": float(np.median(margin)),
        "int8_max_abs_delta_fg_prob_median": float(np.median(dprob)),
        "pairs_with_margin_ge_0.01": int(decisive.sum()),
        "top1_agreement_on_those": round(float(same[decisive].mean()), 4) if decisive.any() else None,
    }


def exporter_parity(model: TDDETR, tmp: Path) -> dict:
    """Max abs diff vs eager of each exporter's graph over 12 unseen shapes (none is the trace's)."""
    shapes = [Shape(b, l, m, p) for b, l, m, p in [
        (1, 1, 1, False), (1, 5, 1, False), (1, 75, 32, False), (2, 3, 2, True), (3, 37, 11, True),
        (4, 64, 20, True), (5, 10, 32, True), (6, 75, 1, True), (8, 75, 32, True), (9, 50, 9, True),
        (12, 20, 30, True), (16, 75, 32, True)]]
    result = {}
    for exporter in ("dynamo", "torchscript"):
        t = time.perf_counter()
        path = export_onnx(model, tmp / exporter, exporter=exporter, verify=False, log=None)
        seconds = time.perf_counter() - t
        rows = verify_onnx(path, model, shapes=shapes, strict=False)
        import onnx

        result[exporter] = {
            "export_seconds": round(seconds, 1),
            "graph_nodes": len(onnx.load(str(path)).graph.node),
            "max_abs": {k: max(r.max_abs[k] for r in rows) for k in rows[0].max_abs},
            "top1_same": f"{sum(r.top1_same for r in rows)}/{sum(r.shape.batch for r in rows)}",
            "all_ok": all(r.ok for r in rows)}
        print(f"{exporter}: {result[exporter]}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", help="qvhighlights-sized checkpoint (default: random init)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--wait-quiet", type=float, default=300,
                    help="seconds to wait for the 1-min load average to drop below 0.6 first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--val-videos", type=int, default=150, help="synthetic val videos for int8 agreement")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "export_cpu.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = TDDETR.from_pretrained(args.ckpt) if args.ckpt else TDDETR(TDDETRConfig.from_name("qvhighlights"))
    model.eval()
    c = model.config
    record: dict = {"machine": machine_info(args.threads), "model": {
        "source": args.ckpt or "random init (seed 0)", "preset_dims": [c.video_dim, c.text_dim, c.hidden_dim],
        "video_len": c.max_video_len, "query_len": c.max_query_len}}
    record["machine"]["loadavg_when_started"] = round(wait_for_quiet(args.wait_quiet), 2)
    record["gemm_peak_gflops"] = round(gemm_peak_gflops(), 1)
    flops = model_flops_per_pair(model, c.max_video_len, c.max_query_len)
    record["model"]["gflop_per_pair"] = round(flops / 1e9, 4)
    print(f"GEMM peak {record['gemm_peak_gflops']} GFLOP/s; model {flops / 1e9:.3f} GFLOP/pair", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        record["exporters"] = exporter_parity(model, tmp)
        fp32_path = export_onnx(model, tmp / "fp32", log=None)
        int8_path = quantize_int8(fp32_path, tmp / "int8" / "model.int8.onnx")
        runners = {"ort_fp32": OrtRunner(fp32_path, threads=args.threads, check=False),
                   "ort_int8": OrtRunner(int8_path, threads=args.threads, check=False)}
        record["latency"] = latency_table(model, runners, args.batches, args.repeats)
        record["int8_quality"] = int8_quality(runners["ort_fp32"], runners["ort_int8"], model,
                                              args.val_videos)
    record["summary"] = summarize(record, flops, args.batches)
    record["gpu"] = ("not measured: no CUDA GPU in this run" if not torch.cuda.is_available()
                     else "run with onnxruntime-gpu for CUDA EP numbers")
    record["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    record["gemm_peak_gflops_at_end"] = round(gemm_peak_gflops(), 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    print(json.dumps(record["summary"], indent=1))
    print(f"wrote {out}")
    return 0


def summarize(record: dict, flops: float, batches: list[int]) -> dict:
    lat, peak = record["latency"], record["gemm_peak_gflops"]
    big, small = max(batches), min(batches)
    s: dict = {"judged_on": "min_ms (best of the interleaved repeats)"}
    for k in lat:
        per_pair = lat[k][big]["min_ms"] / big
        s[k] = {f"ms_per_pair_B{big}": round(per_pair, 3),
                f"gflops_B{big}": round(flops / (per_pair / 1e3) / 1e9, 1),
                f"pct_of_gemm_peak_B{big}": round(100 * flops / (per_pair / 1e3) / 1e9 / peak, 1),
                f"B{small}_latency_over_per_pair_B{big}": round(lat[k][small]["min_ms"] / per_pair, 2)}
    fp32 = [k for k in lat if "int8" not in k]
    best = min(fp32, key=lambda k: lat[k][big]["min_ms"])
    s["best_fp32_backend"] = best
    s["goal_fp32_80pct_peak"] = s[best][f"pct_of_gemm_peak_B{big}"] >= 80
    s["goal_B1_within_1.3x"] = s[best][f"B{small}_latency_over_per_pair_B{big}"] <= 1.3
    s["int8_speedup_vs_ort_fp32"] = {
        b: round(lat["ort_fp32"][b]["min_ms"] / lat["ort_int8"][b]["min_ms"], 2) for b in batches}
    q = record["int8_quality"]["top1_agreement_int8_vs_fp32"]
    s["goal_int8"] = s["int8_speedup_vs_ort_fp32"][big] >= 1.5 and q >= 0.95
    return s


if __name__ == "__main__":
    sys.exit(main())
