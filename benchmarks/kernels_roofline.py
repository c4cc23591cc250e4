"""Roofline of the fused TD interaction on an H100 from the launcher's own tiling (no GPU needed).

    python benchmarks/kernels_roofline.py [--dtype bf16] [--triton 3.9.0] [--markdown]

For each (B, L) at M = 32, D = 256, 8 heads it takes the configuration the launcher picks
on sm_90 with that Triton version (``default_config``; default: the installed Triton's) and counts, per kernel (text K/V, rows):

* FLOPs executed (tiles padded to their block sizes) and useful;
* bytes from HBM: what must cross it once (video, pos, text, bias, weights, s; the K/V buffer
  written once and read back from L2);
* bytes from L2 into the SMs: every program reads all the weights it multiplies by (the
  dominant term), its activation chunks (the rows kernel reloads each row chunk 7 times:
  flow GEMM 4 (x and the row above, video and pos each), video query 2, residual 1) and its K/V;
* programs against 132 SMs, and the expected time: the slowest of HBM (3.3 TB/s), L2
  (10 TB/s in total, at most 150 GB/s per active SM) and tensor cores (700 dense bf16
  TFLOP/s in total, 5.3 per SM; mma.sync tiles of 16 rows at ~60% of that), over the waves.

Assumptions are the constants below; docs/kernels.md prints this table and compares it with
the issue's targets.
"""
from __future__ import annotations

import argparse
import math

import torch

from tdfast.devices import DTYPES, SHORT_DTYPE_NAMES
from tdfast.kernels.launch_config import default_config, next_pow2

HBM = 3.3e12  # B/s
L2 = 10e12  # B/s, all SMs
L2_PER_SM = 150e9  # B/s an SM can pull from L2 on its own
MMA = 700e12  # dense bf16 FLOP/s, realistic (H100 SXM)
SMS = 132
SMALL_TILE_MMA = 0.6  # mma.sync on 16-row tiles (no wgmma) vs the realistic peak
LAUNCH_GAP_US = 1.0  # between the two kernels inside a CUDA graph (drain + ramp)


def kernel_time(programs: int, ctas_per_sm: int, flops: float, hbm: float, l2: float,
                mma_scale: float) -> float:
    """Seconds for a grid on min(programs, SMs) SMs: the slowest of their share of tensor
    cores, of L2 and of HBM (``ctas_per_sm`` only matters for latency hiding, not modelled)."""
    active = min(programs, SMS)
    t_mma = flops / (MMA * mma_scale * active / SMS)
    t_l2 = l2 / min(L2, L2_PER_SM * active)
    t_hbm = hbm / HBM
    return max(t_mma, t_l2, t_hbm)


def roofline(batch: int, video_len: int, text_len: int = 32, dim: int = 256, heads: int = 8,
             dtype: torch.dtype = torch.bfloat16, use_tdem: bool = True,
             triton_version: str | None = None) -> dict:
    e = torch.finfo(dtype).bits // 8
    cfg = default_config(dtype, batch, video_len, text_len, dim, heads, arch=90,  # H100
                         triton_version=triton_version)
    d, m, rows = dim, text_len, batch * video_len
    sets = 4 if use_tdem else 2
    bm = max(16, next_pow2(m))
    # text kernel: [B*M, D] x [D, S*D]
    t_rows = batch * m
    t_prog = math.ceil(t_rows / cfg.kv_block_t) * (sets * d // cfg.kv_block_c)
    t_rows_pad = math.ceil(t_rows / cfg.kv_block_t) * cfg.kv_block_t
    t_flops = 2 * t_rows_pad * d * sets * d
    t_useful = 2 * t_rows * d * sets * d
    kv_bytes = t_rows * sets * d * e
    t_hbm = t_rows * d * e + sets * d * d * e + kv_bytes
    t_l2 = t_prog * (d * cfg.kv_block_c * e + cfg.kv_block_t * d * e)
    # rows kernel: per row 6 D x D GEMMs (flow 1, flow 2, two queries, two outputs) with TDEM,
    # 2 without; attention: per branch QK^T and PV over the M tile
    gemms = 6 if use_tdem else 2
    branches = 2 if use_tdem else 1
    r_prog = math.ceil(rows / cfg.block_l)
    r_pad = r_prog * cfg.block_l
    span = 1 + min(1.0, (cfg.block_l - 1) / video_len)  # videos a row tile touches, on average
    r_flops = r_pad * (2 * gemms * d * d + branches * 2 * 2 * bm * d * span)
    r_useful = rows * (2 * gemms * d * d + branches * 2 * 2 * m * d)
    reloads = 7 if use_tdem else 3
    r_hbm = (3 * rows * d + batch * m) * e + gemms * d * d * e
    r_l2 = r_prog * (gemms * d * d * e + span * 2 * branches * m * d * e) + reloads * r_pad * d * e
    small = SMALL_TILE_MMA if cfg.block_l < 64 else 1.0
    ctas = 2 if cfg.block_l <= 16 else 1  # 255 registers x 128 threads: 2 CTAs; 8 warps: 1
    t_text = kernel_time(t_prog, 2, t_flops, t_hbm, t_l2, SMALL_TILE_MMA if cfg.kv_block_t < 64 else 1.0)
    t_main = kernel_time(r_prog, ctas, r_flops, r_hbm, r_l2, small)
    return {"B": batch, "L": video_len, "config": cfg, "text_programs": t_prog, "row_programs": r_prog,
            "gflop": (t_useful + r_useful) / 1e9, "gflop_executed": (t_flops + r_flops) / 1e9,
            "hbm_mb": (t_hbm + r_hbm) / 1e6, "l2_mb": (t_l2 + r_l2) / 1e6,
            "us_text": t_text * 1e6, "us_rows": t_main * 1e6,
            "us": (t_text + t_main) * 1e6 + LAUNCH_GAP_US,
            "us_hbm": (t_hbm + r_hbm) / HBM * 1e6, "us_l2": (t_l2 + r_l2) / L2 * 1e6,
            "us_mma": (t_flops + r_flops) / MMA * 1e6}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dtype", choices=SHORT_DTYPE_NAMES, default="bf16")
    p.add_argument("--markdown", action="store_true", help="print a docs/kernels.md table")
    p.add_argument("--triton", help="the tiles the launcher picks under this Triton version "
                                    "(e.g. 3.6.0; default: the installed one)")
    args = p.parse_args(argv)
    print("| B | L | row / text programs (132 SMs) | GFLOP useful (executed) | HBM MB | L2 MB "
          "| us at HBM / L2 / MMA peak | expected us (text + rows + gap) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for batch in (1, 32, 256):
        for video_len in (75, 150):
            r = roofline(batch, video_len, dtype=DTYPES[args.dtype], triton_version=args.triton)
            print(f"| {batch} | {video_len} | {r['row_programs']} / {r['text_programs']} "
                  f"(bl{r['config'].block_l}) | {r['gflop']:.2f} ({r['gflop_executed']:.2f}) "
                  f"| {r['hbm_mb']:.1f} | {r['l2_mb']:.0f} | {r['us_hbm']:.1f} / {r['us_l2']:.1f} / "
                  f"{r['us_mma']:.1f} | {r['us']:.1f} ({r['us_text']:.1f} + {r['us_rows']:.1f} + "
                  f"{LAUNCH_GAP_US:.0f}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
