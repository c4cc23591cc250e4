"""The fused TD kernels' GPU checks, one stage at a time, each writing a JSON record as it ends.

    python benchmarks/gpu_session.py --out DIR [--budget-s 420] [STAGE ...]

Stages (default: all, in this order; ``benchmarks/run_gpu.sh session`` runs them in one device
call and adds compute-sanitizer):

  parity      compiled kernels vs the float64 reference, fp32 (IEEE) / TF32 / fp16 / bf16, over
              B {1,3,8,32,256} x L {1,2,37,75,150} x M {1,5,32,64} x beta {0,0.5,1} at D = 256,
              8 heads (TDEM on; off on a subset), every tile choice, and the qvhighlights model
              fused vs eager (fp32, bf16). Cases run in parallel worker processes, so that Triton
              compiles the kernel variants on all CPU cores (the on-disk cache then serves the
              later stages)                                         -> parity.json
  layer       triton.testing.do_bench (median, L2 flushed) and do_bench_cudagraph of one TD
              interaction, bf16, B {1,32,256} x L {75,150}, M = 32: fused launcher, fused module,
              eager, torch.compile of the eager module, next to the roofline's expected us
                                                                    -> layer_bf16.json
  model       the whole qvhighlights TDDETR, bf16, L = 75, M = 32, B {1,32,256}, eager and fused,
              each replayed as a CUDA graph (do_bench_cudagraph), kernels per forward (profiler)
                                                                    -> model_bf16_L75.json
  memcheck    a few launches over odd shapes and every tile (run it under compute-sanitizer;
              run_gpu.sh session does)                                  -> memcheck_probe.json
  model150    the model matrix at L = 150                           -> model_bf16_L150.json
  layer_fp32  the layer timings in fp32 (IEEE) and TF32             -> layer_fp32.json

Each stage checks the time left (``--budget-s`` from the start of this process) against its
own estimate and records ``{"skipped": reason}`` instead of starting when it would not fit.
``--device cpu`` is a dry run for a machine without a GPU: Triton's interpreter, D = 32,
small matrices, wall-clock timers, no CUDA graphs.
"""
from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

START = time.monotonic()
PRECISIONS = {"fp32": (torch.float32, False, 1e-4), "tf32": (torch.float32, True, 1e-2),
              "fp16": (torch.float16, False, 1e-2), "bf16": (torch.bfloat16, False, 1e-2)}
ESTIMATE_S = {"parity": 150, "layer": 120, "model": 60, "memcheck": 20, "model150": 40,
              "layer_fp32": 60}


def log(msg: str) -> None:
    print(f"[{time.monotonic() - START:6.1f}s] {msg}", flush=True)


def write(out: Path, name: str, record: dict) -> None:
    from tdfast.benchmarks import machine_info
    from tdfast.benchmarks.record import write_json

    record = {"stage": name, "machine": machine_info(DEVICE), "elapsed_s": time.monotonic() - START,
              **record}
    # NaN allowed: a stage record is kept even when a measurement failed that way
    path = write_json(record, out / f"{name}.json", allow_nan=True)
    log(f"wrote {path}")


# ---------------------------------------------------------------------------- cases
def td_layer(dim: int, heads: int, use_tdem: bool, seed: int):
    """A TD interaction with non-trivial biases / LayerNorm affines, and its start token."""
    from tdfast.model.td_interaction import TDCrossAttention

    torch.manual_seed(seed)
    layer = TDCrossAttention(dim, heads, 0.0, use_tdem, 0.7).eval()
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if p.dim() == 1:
                p.copy_((1.0 if "norm.weight" in name else 0.0) + 0.5 * torch.randn_like(p))
    return layer.to(DEVICE), (torch.randn(dim).to(DEVICE) if use_tdem else None)


def inputs(batch: int, video_len: int, text_len: int, dim: int, dtype: torch.dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    video, pos = torch.randn(batch, video_len, dim, generator=g), torch.randn(batch, video_len, dim, generator=g)
    text = torch.randn(batch, text_len, dim, generator=g)
    lengths = torch.randint(1, text_len + 1, (batch, 1), generator=g)
    mask = torch.arange(text_len)[None, :] < lengths  # [B, M] ragged
    return (video.to(DEVICE, dtype), pos.to(DEVICE, dtype), text.to(DEVICE, dtype), mask.to(DEVICE))


def parity_case(case: tuple) -> dict:
    """One kernel launch vs the float64 reference (runs in a worker process)."""
    from tdfast.kernels.packing import pack_weights
    from tdfast.kernels.td_interaction import td_interaction
    from tdfast.model.attention import mask_to_bias
    from tdfast.model.td_interaction import td_interaction_reference

    precision, use_tdem, batch, video_len, text_len, beta, cfg, seed = case
    dtype, tf32, tol = PRECISIONS[precision]
    layer, start = _layer_cache(use_tdem)
    dim, heads = layer.attn.q_proj.in_features, layer.num_heads
    video, pos, text, mask = inputs(batch, video_len, text_len, dim, dtype, seed)
    w = layer.weights(None if start is None else start.to(dtype)).to(dtype)
    row = {"precision": precision, "use_tdem": use_tdem, "B": batch, "L": video_len, "M": text_len,
           "beta": beta, "config": None if cfg is None else cfg.name + "/" + cfg.kv_name, "tol": tol}
    try:
        ref = td_interaction_reference(video, pos, text, mask, w, heads, beta).double()
        out = td_interaction(video, pos, w.start, text, mask_to_bias(mask, dtype),
                             pack_weights(w, heads, beta, dtype), allow_tf32=tf32, config=cfg)
        diff = (out.double() - ref).abs().max().item()
        row.update(max_abs_diff=diff, nan=bool(out.isnan().any()), ok=diff <= tol)
    except Exception as e:  # recorded: one failing case must not hide the others
        row.update(ok=False, error=f"{type(e).__name__}: {e}"[:400])
    return row


_LAYERS: dict = {}


def _layer_cache(use_tdem: bool):
    if use_tdem not in _LAYERS:
        _LAYERS[use_tdem] = td_layer(DIM, HEADS, use_tdem, seed=1)
    return _LAYERS[use_tdem]


def _worker_init(device: str, dim: int, heads: int) -> None:
    global DEVICE, DIM, HEADS
    DEVICE, DIM, HEADS = device, dim, heads


def variant_key(case: tuple) -> tuple:
    """What decides which compiled kernels a case needs: dtype and precision, the dynamics
    branch, the text tile and the tiles (the kernels do not specialise on runtime sizes)."""
    from tdfast.kernels import default_config
    from tdfast.kernels.launch_config import next_pow2

    precision, use_tdem, b, n, m, beta, cfg, _ = case
    dtype, tf32, _ = PRECISIONS[precision]
    cfg = cfg or default_config(dtype, b, n, m, DIM, HEADS, tf32)
    return (precision, use_tdem and beta != 1.0, max(16, next_pow2(m)), cfg)


def parity_cases(small: bool) -> list[tuple]:
    from tdfast.kernels import all_configs

    batches, lens, texts = ((1, 3), (1, 37), (1, 5)) if small else \
        ((1, 3, 8, 32, 256), (1, 2, 37, 75, 150), (1, 5, 32, 64))
    precisions = ("fp32", "fp16") if small else tuple(PRECISIONS)
    cases = []
    for p in precisions:
        for i, (b, n, m, beta) in enumerate(itertools.product(batches, lens, texts, (0.0, 0.5, 1.0))):
            cases.append((p, True, b, n, m, beta, None, i))
        for i, (b, n, m) in enumerate([(1, 75, 32), (8, 37, 5), (32, 150, 64), (256, 75, 32)][:2 if small else 4]):
            cases.append((p, False, b, n, m, 0.7, None, 500 + i))
        dtype, tf32, _ = PRECISIONS[p]
        for cfg in all_configs(dtype, DIM, HEADS, tf32):
            for i, (b, n, m) in enumerate([(1, 75, 32), (3, 37, 64)] if small else
                                          [(1, 75, 32), (32, 150, 64), (256, 75, 32)]):
                cases.append((p, True, b, n, m, 0.7, cfg, 600 + i))
    return cases


def stage_parity(out: Path, small: bool, workers: int) -> dict:
    import concurrent.futures
    import multiprocessing

    cases = parity_cases(small)
    log(f"parity: {len(cases)} launches on {workers} worker processes")
    if workers <= 1:
        rows = [parity_case(c) for c in cases]
    else:
        # First one case per kernel variant, so the workers compile different variants at the
        # same time (into Triton's on-disk cache); then every case, on cache hits.
        firsts = list({variant_key(c): c for c in reversed(cases)}.values())
        with concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                initargs=(DEVICE, DIM, HEADS)) as pool:
            list(pool.map(parity_case, firsts))
            log(f"parity: {len(firsts)} kernel variants compiled")
            rows = list(pool.map(parity_case, cases, chunksize=8))
    summary = {}
    for p in PRECISIONS:
        mine = [r for r in rows if r["precision"] == p]
        if mine:
            diffs = [r["max_abs_diff"] for r in mine if "max_abs_diff" in r]
            summary[p] = {"cases": len(mine), "failed": sum(not r["ok"] for r in mine),
                          "max_abs_diff": max(diffs) if diffs else None, "tol": mine[0]["tol"]}
    log(f"parity summary: {json.dumps(summary)}")
    model = [] if small else model_parity()
    return {"summary": summary, "model": model, "rows": rows}


def model_parity() -> list[dict]:
    """The qvhighlights TDDETR with fused TD layers vs eager, fp32 (IEEE) and bf16."""
    from tdfast import TDDETR, TDDETRConfig
    from tdfast.kernels import fuse_model

    rows = []
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 1e-2)):
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.manual_seed(0)
        eager = TDDETR(TDDETRConfig.from_name("qvhighlights")).to(DEVICE).eval().to(dtype)
        fused = fuse_model(copy.deepcopy(eager))
        video, vmask, query, qmask = model_batch(eager.config, 16, 75, 32, dtype, seed=5)
        with torch.inference_mode():
            want, got = eager(video, vmask, query, qmask), fused(video, vmask, query, qmask)
        row = {"dtype": str(dtype), "B": 16, "L": 75, "M": 32, "tol": tol}
        for key in ("pred_spans", "pred_logits", "saliency_scores"):
            diff = got[key].float() - want[key].float()
            row[key] = (diff[vmask] if key == "saliency_scores" else diff).abs().max().item()
        row["top1_agree"] = float((got["pred_logits"][..., 0].argmax(1)
                                   == want["pred_logits"][..., 0].argmax(1)).float().mean())
        row["ok"] = all(row[k] <= tol for k in ("pred_spans", "pred_logits", "saliency_scores"))
        rows.append(row)
        log(f"model parity {row}")
    return rows


def model_batch(config, batch: int, video_len: int, text_len: int, dtype: torch.dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(batch, video_len, config.video_dim, generator=g)
    query = torch.randn(batch, text_len, config.text_dim, generator=g)
    vmask = torch.arange(video_len)[None] < torch.randint(video_len // 2, video_len + 1, (batch, 1), generator=g)
    qmask = torch.arange(text_len)[None] < torch.randint(1, text_len + 1, (batch, 1), generator=g)
    return video.to(DEVICE, dtype), vmask.to(DEVICE), query.to(DEVICE, dtype), qmask.to(DEVICE)


# ---------------------------------------------------------------------------- timing
def timers(fn, graphs: bool) -> dict:
    """GPU: ``tdfast.benchmarks.timing.gpu_timers`` (do_bench medians, us). CPU dry run:
    wall-clock median of 3 calls."""
    from tdfast.benchmarks.timing import gpu_timers, interleaved_rounds

    if DEVICE == "cpu":
        seconds, _ = interleaved_rounds({"fn": fn}, 3, lambda: None)
        return {"us": sorted(seconds["fn"])[1] * 1e6}
    return gpu_timers(fn, graphs)


def stage_layer(precision: str, batches, lens, compile_too: bool) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from kernels_roofline import roofline

    from tdfast.kernels.fuse import FusedTDCrossAttention
    from tdfast.kernels.packing import pack_weights
    from tdfast.kernels.td_interaction import td_interaction
    from tdfast.model.attention import mask_to_bias

    dtype, tf32, _ = PRECISIONS[precision]
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    rows = []
    layer, start = td_layer(DIM, HEADS, True, seed=1)
    layer, start = layer.to(dtype), start.to(dtype)
    # One compiled module for every shape: the second shape recompiles with dynamic sizes once
    # (torch.compile's automatic dynamic shapes) instead of once per (B, L).
    compiled = torch.compile(layer) if compile_too else None
    for batch, video_len in itertools.product(batches, lens):
        video, pos, text, mask = inputs(batch, video_len, 32, DIM, dtype, seed=0)
        bias = mask_to_bias(mask, dtype)
        packed = pack_weights(layer.weights(start), HEADS, layer.beta, dtype)
        fused_module = FusedTDCrossAttention(copy.deepcopy(layer))
        impls = {"fused": lambda: td_interaction(video, pos, start, text, bias, packed, allow_tf32=tf32),
                 "fused_module": lambda: fused_module(video, pos, start, text, bias),
                 "eager": lambda: layer(video, pos, start, text, bias)}
        if compiled is not None:
            impls["compile"] = lambda: compiled(video, pos, start, text, bias)
        expected = roofline(batch, video_len, dtype=dtype) if DEVICE == "cuda" else {}
        for impl, fn in impls.items():
            row = {"impl": impl, "B": batch, "L": video_len, "M": 32, "D": DIM, "heads": HEADS,
                   "dtype": precision, "roofline_us": expected.get("us")}
            try:
                with torch.inference_mode():
                    t = time.monotonic()
                    fn()  # compiles / warms
                    row["first_call_s"] = time.monotonic() - t
                    row.update(timers(fn, graphs=DEVICE == "cuda"))
            except Exception as e:
                row["error"] = f"{type(e).__name__}: {e}"[:400]
            rows.append(row)
            log(f"layer {row}")
        eager_us = next((r.get("graph_us", r.get("us")) for r in rows
                         if r["impl"] == "eager" and r["B"] == batch and r["L"] == video_len and "us" in r), None)
        for r in rows:
            if r["B"] == batch and r["L"] == video_len and eager_us and "us" in r:
                r["speedup_vs_eager_graph"] = eager_us / r.get("graph_us", r["us"])
    return {"what": "one TD interaction (TDCrossAttention.forward), TDEM on, beta 0.7",
            "timer": "do_bench median (warmup 25 ms, rep 100 ms, L2 flushed) and do_bench_cudagraph median",
            "rows": rows}


def stage_model(batches, video_len: int) -> dict:
    from tdfast import TDDETR, TDDETRConfig
    from tdfast.kernels import fuse_model

    dtype = torch.bfloat16
    config = TDDETRConfig.from_name("qvhighlights" if DEVICE == "cuda" else "tiny")
    torch.manual_seed(0)
    eager = TDDETR(config).to(DEVICE).eval().to(dtype)
    models = {"eager": eager, "fused": fuse_model(copy.deepcopy(eager))}
    rows = []
    for batch in batches:
        video, vmask, query, qmask = model_batch(config, batch, video_len, 32, dtype, seed=batch)
        for impl, model in models.items():
            fn = lambda model=model: model(video, vmask, query, qmask)  # noqa: E731
            row = {"impl": impl, "B": batch, "L": video_len, "M": 32, "dtype": "bf16"}
            try:
                with torch.inference_mode():
                    fn()
                    row.update(timers(fn, graphs=DEVICE == "cuda"))
                    row["kernels_per_forward"] = count_kernels(fn)
            except Exception as e:
                row["error"] = f"{type(e).__name__}: {e}"[:400]
            rows.append(row)
            log(f"model {row}")
    targets_ms = {1: 0.25, 32: 0.3, 256: 0.5}
    for r in rows:
        if r["impl"] == "fused" and "graph_us" in r and r["B"] in targets_ms:
            r["target_ms"] = targets_ms[r["B"]]
            r["meets_target"] = r["graph_us"] / 1e3 <= targets_ms[r["B"]]
    return {"what": "whole TDDETR (qvhighlights preset) forward, eager vs fuse_model, as CUDA graphs",
            "rows": rows}


def count_kernels(fn) -> int | None:
    """GPU kernels one call launches (torch.profiler); None on CPU."""
    if DEVICE != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def stage_memcheck_probe() -> dict:
    """Launches over odd shapes and every default tile, for compute-sanitizer to watch."""
    from tdfast.kernels import all_configs

    rows = []
    for precision in ("fp32", "bf16") if DEVICE == "cuda" else ("fp32",):
        dtype, tf32, _ = PRECISIONS[precision]
        for cfg in all_configs(dtype, DIM, HEADS, tf32):
            for use_tdem, (b, n, m) in itertools.product((True, False), [(1, 1, 1), (3, 37, 5), (2, 150, 64)]):
                rows.append(parity_case((precision, use_tdem, b, n, m, 0.7, cfg, 7)))
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    return {"rows": rows, "failed": sum(not r["ok"] for r in rows)}


def main(argv: list[str] | None = None) -> int:
    global DEVICE, DIM, HEADS
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("stages", nargs="*", default=["parity", "layer", "model", "memcheck", "model150", "layer_fp32"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--budget-s", type=float, default=420.0, help="seconds for all stages together")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1))
    args = p.parse_args(argv)
    DEVICE = args.device
    small = DEVICE == "cpu"
    if small:
        os.environ.setdefault("TRITON_INTERPRET", "1")
        torch.set_num_threads(1)
    DIM, HEADS = (32, 4) if small else (256, 8)
    args.out.mkdir(parents=True, exist_ok=True)
    run = {
        "parity": lambda: stage_parity(args.out, small, 1 if small else args.workers),
        "layer": lambda: stage_layer("bf16" if not small else "fp32", (1, 32, 256) if not small else (1,),
                                     (75, 150) if not small else (37,), compile_too=True),
        "model": lambda: stage_model((1, 32, 256) if not small else (1, 3), 75 if not small else 20),
        "memcheck": stage_memcheck_probe,
        "model150": lambda: stage_model((1, 32, 256) if not small else (2,), 150 if not small else 30),
        "layer_fp32": lambda: {"fp32": stage_layer("fp32", (1, 32, 256) if not small else (1,),
                                                   (75,) if not small else (9,), compile_too=False),
                               "tf32": stage_layer("tf32", (1, 32, 256) if not small else (1,),
                                                   (75,) if not small else (9,), compile_too=False)},
    }
    names = {"layer": "layer_bf16", "model": "model_bf16_L75", "memcheck": "memcheck_probe",
             "model150": "model_bf16_L150"}
    failed = []
    for stage in args.stages:
        left = args.budget_s - (time.monotonic() - START)
        name = names.get(stage, stage)
        if left < ESTIMATE_S[stage] * (0.05 if small else 1.0):
            write(args.out, name, {"skipped": f"{left:.0f} s left of --budget-s, stage needs ~{ESTIMATE_S[stage]} s"})
            continue
        log(f"== {stage} ({left:.0f} s left)")
        try:
            write(args.out, name, run[stage]())
        except Exception as e:
            failed.append(stage)
            write(args.out, name, {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]})
    log(f"done; failed stages: {failed or 'none'}")
    return 1 if failed else 0


DEVICE, DIM, HEADS = "cuda", 256, 8

if __name__ == "__main__":
    raise SystemExit(main())
