"""Shared setup for the kernel tests (tests/test_kernels_*.py).

Importing this module first makes the kernels run in Triton's CPU interpreter
when there is no CUDA device (TRITON_INTERPRET must be set before the kernel
module is imported); with a GPU, the same tests run compiled on it.
"""
from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from tdfast.kernels.availability import interpreting  # noqa: E402
from tdfast.kernels.packing import pack_weights  # noqa: E402
from tdfast.kernels.td_attention import td_cross_attention  # noqa: E402
from tdfast.model.attention import mask_to_bias  # noqa: E402
from tdfast.model.td_interaction import TDCrossAttention, TDWeights, td_cross_attention_reference  # noqa: E402,E501

KERNEL_DEVICE = "cuda" if torch.cuda.is_available() and not interpreting() else "cpu"
# The parity matrix.
BATCHES, VIDEO_LENS, TEXT_LENS, BETAS = (1, 3, 8), (1, 2, 37, 75, 150), (1, 5, 32, 64), (0.0, 0.5, 1.0)


def td_case(batch: int, video_len: int, text_len: int, dim: int, seed: int,
            device: str = KERNEL_DEVICE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random x [B, L, D], text [B, M, D] and a random padding mask [B, M] (True = real):
    row i keeps a random subset (not a prefix) of 1..M real tokens."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, video_len, dim, generator=g)
    text = torch.randn(batch, text_len, dim, generator=g)
    mask = torch.zeros(batch, text_len, dtype=torch.bool)
    for i in range(batch):
        real = int(torch.randint(1, text_len + 1, (1,), generator=g))
        mask[i, torch.randperm(text_len, generator=g)[:real]] = True
    return x.to(device), text.to(device), mask.to(device)


def layer_with_biases(dim: int, heads: int, use_tdem: bool, seed: int) -> TDCrossAttention:
    torch.manual_seed(seed)
    layer = TDCrossAttention(dim, heads, use_tdem, beta=0.5)
    with torch.no_grad():  # non-zero biases and start token, so their handling is tested
        for p in layer.parameters():
            if p.dim() == 1:
                p.normal_(0.0, 0.5)
    return layer.to(KERNEL_DEVICE)


def max_diff(layer: TDCrossAttention, batch: int, video_len: int, text_len: int, beta: float,
             seed: int, dtype: torch.dtype = torch.float32, **launch) -> float:
    """Max |kernel - reference| on one random case in ``dtype`` (``launch``: launcher knobs).

    The float64 reference sees the same ``dtype``-rounded inputs and weights as the kernel,
    so the difference measures the kernel's arithmetic, not the input rounding.
    """
    d, h = layer.q_video.in_features, layer.num_heads
    x, text, mask = (t.to(dtype) if t.is_floating_point() else t
                     for t in td_case(batch, video_len, text_len, d, seed))
    w = layer.weights()
    rounded = TDWeights(*(None if t is None else t.to(dtype) for t in vars(w).values()))
    ref = td_cross_attention_reference(x, text, mask, rounded, h, beta).double()
    out = td_cross_attention(x, text, mask_to_bias(mask, dtype), pack_weights(w, h, beta, dtype),
                             **launch)
    assert out.shape == ref.shape and out.dtype == dtype
    return (out.double() - ref).abs().max().item()
