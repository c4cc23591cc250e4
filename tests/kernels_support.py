"""Shared setup for the kernel tests (tests/test_kernels_*.py).

Importing this module first makes the kernels run in Triton's CPU interpreter when there is
no CUDA device (TRITON_INTERPRET must be set before the kernel module is imported); with a
GPU, the same tests run compiled on it.
"""
from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from tdfast.kernels.availability import interpreting  # noqa: E402
from tdfast.kernels.packing import pack_weights  # noqa: E402
from tdfast.kernels.td_interaction import td_interaction  # noqa: E402
from tdfast.model.attention import mask_to_bias  # noqa: E402
from tdfast.model.td_interaction import TDCrossAttention, td_interaction_reference  # noqa: E402

KERNEL_DEVICE = "cuda" if torch.cuda.is_available() and not interpreting() else "cpu"
# The parity matrix.
BATCHES, VIDEO_LENS, TEXT_LENS, BETAS = (1, 3, 8), (1, 2, 37, 75, 150), (1, 5, 32, 64), (0.0, 0.5, 1.0)


def td_case(batch: int, video_len: int, text_len: int, dim: int, seed: int,
            device: str = KERNEL_DEVICE) -> tuple[torch.Tensor, ...]:
    """Random video, pos [B, L, D], text [B, M, D] and a padding mask [B, M] (True = real):
    row i keeps a random subset (not a prefix) of 1..M real tokens."""
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(batch, video_len, dim, generator=g)
    pos = torch.randn(batch, video_len, dim, generator=g)
    text = torch.randn(batch, text_len, dim, generator=g)
    mask = torch.zeros(batch, text_len, dtype=torch.bool)
    for i in range(batch):
        real = int(torch.randint(1, text_len + 1, (1,), generator=g))
        mask[i, torch.randperm(text_len, generator=g)[:real]] = True
    return video.to(device), pos.to(device), text.to(device), mask.to(device)


def td_layer(dim: int, heads: int, use_tdem: bool, seed: int, beta: float = 0.5
             ) -> tuple[TDCrossAttention, torch.Tensor | None]:
    """A TD interaction with non-trivial biases and LayerNorm affines, and a start token
    (None without TDEM), so that their handling is tested."""
    torch.manual_seed(seed)
    layer = TDCrossAttention(dim, heads, 0.0, use_tdem, beta).eval()
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if p.dim() == 1:
                p.copy_((1.0 if "norm.weight" in name else 0.0) + 0.5 * torch.randn_like(p))
    start = torch.randn(dim) if use_tdem else None
    return layer.to(KERNEL_DEVICE), None if start is None else start.to(KERNEL_DEVICE)


def max_diff(layer: TDCrossAttention, start: torch.Tensor | None, batch: int, video_len: int,
             text_len: int, beta: float, seed: int, dtype: torch.dtype = torch.float32,
             **launch) -> float:
    """Max |kernel - float64 reference| on one random case in ``dtype`` (``launch``: launcher
    keywords, e.g. ``config=``).

    The reference sees the same ``dtype``-rounded inputs and weights as the kernel, so the
    difference measures the kernel's arithmetic, not the input rounding.
    """
    d, h = layer.attn.q_proj.in_features, layer.num_heads
    video, pos, text, mask = (t.to(dtype) if t.is_floating_point() else t
                              for t in td_case(batch, video_len, text_len, d, seed))
    w = layer.weights(None if start is None else start.to(dtype)).to(dtype)
    ref = td_interaction_reference(video, pos, text, mask, w, h, beta).double()
    out = td_interaction(video, pos, w.start, text, mask_to_bias(mask, dtype),
                         pack_weights(w, h, beta, dtype), **launch)
    assert out.shape == ref.shape and out.dtype == dtype
    assert not out.isnan().any()
    return (out.double() - ref).abs().max().item()
