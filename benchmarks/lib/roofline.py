"""The two numbers a "% of peak" needs: the device's measured GEMM peak and the model's FLOPs."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tdfast.benchmarks.timing import interleaved_rounds, synchronizer


def gemm_peak(device: str | torch.device, dtype: torch.dtype, sizes: Sequence[int] = (1024, 2048, 4096),
              repeats: int = 5) -> dict:
    """Best GFLOP/s of ``a @ b`` over square ``sizes`` (each: best of ``repeats`` calls after
    one warm-up call). fp32 on CUDA runs with TF32 off, so it is the true fp32 peak.
    Returns ``{"gflops", "per_size": {n: GFLOP/s}, "dtype", "repeats"}``."""
    device = torch.device(device)
    sync = synchronizer(device)
    old_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    per_size = {}
    try:
        for n in sizes:
            a = torch.randn(n, n, device=device, dtype=dtype)
            b = torch.randn(n, n, device=device, dtype=dtype)
            interleaved_rounds({"mm": lambda: a @ b}, 1, sync)  # warm-up
            seconds, _ = interleaved_rounds({"mm": lambda: a @ b}, repeats, sync)
            per_size[str(n)] = 2 * n**3 / min(seconds["mm"]) / 1e9
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old_tf32
    return {"gflops": max(per_size.values()), "per_size": per_size,
            "dtype": str(dtype).removeprefix("torch."), "repeats": repeats}


def flops_per_pair(model: nn.Module, video_len: int, query_len: int) -> float:
    """FLOPs of one forward pass for one (video, query) pair of ``video_len`` clips and
    ``query_len`` tokens, no padding (torch's FlopCounterMode: matmuls and attention;
    elementwise work is not counted, so this is the GEMM work a "% of peak" divides)."""
    from torch.utils.flop_counter import FlopCounterMode

    c = model.config
    p = next(model.parameters())
    args = (torch.randn(1, video_len, c.video_dim, device=p.device, dtype=p.dtype),
            torch.ones(1, video_len, dtype=torch.bool, device=p.device),
            torch.randn(1, query_len, c.text_dim, device=p.device, dtype=p.dtype),
            torch.ones(1, query_len, dtype=torch.bool, device=p.device))
    was_training = model.training
    model.eval()
    try:
        # Grad mode on: the counter's module tracker breaks under no_grad in this torch version.
        with FlopCounterMode(display=False) as counter:
            model(*args)
    finally:
        model.train(was_training)
    return float(counter.get_total_flops())
