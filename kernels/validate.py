"""Checks the fused TD kernel's launcher runs before every launch.

A kernel does not bounds-check: a wrong shape, a transposed view or a text
row with no real token would read garbage or return a uniform average of
padding. Every such case is an ``InputError`` naming the argument, the
expected value and the value seen.
"""
from __future__ import annotations

import torch
from torch import Tensor

from tdfast.errors import InputError
from tdfast.kernels.packing import PackedTDWeights
from tdfast.model.attention import MASK_BIAS

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_TEXT_LEN = 64  # M: all text keys are one tile of the kernel
MAX_VIDEO_LEN = 512  # L: the range the kernel is tested on


def _check_rank_dtype(name: str, t: object, rank: int) -> Tensor:
    if not isinstance(t, Tensor):
        raise InputError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dim() != rank:
        raise InputError(f"{name}: expected a rank-{rank} tensor, got shape {tuple(t.shape)}")
    if t.dtype not in KERNEL_DTYPES:
        raise InputError(f"{name}: expected dtype float32, float16 or bfloat16, got {t.dtype}")
    return t


def _check_contiguous(name: str, t: Tensor) -> None:
    if not t.is_contiguous():
        raise InputError(f"{name}: expected a contiguous tensor, got strides {tuple(t.stride())} "
                         f"for shape {tuple(t.shape)}; call .contiguous() first")


def text_bias_rows(text_bias: Tensor, batch: int, text_len: int) -> Tensor:
    """text_bias [B, 1, 1, M] (as ``mask_to_bias`` makes it) or [B, M] -> a [B, M] view.

    The view keeps the batch stride; the key dim must be unit-stride.
    """
    if not isinstance(text_bias, Tensor):
        raise InputError(f"text_bias: expected a torch.Tensor, got {type(text_bias).__name__}")
    if tuple(text_bias.shape) not in ((batch, 1, 1, text_len), (batch, text_len)):
        raise InputError(f"text_bias: expected shape ({batch}, 1, 1, {text_len}) or ({batch}, "
                         f"{text_len}), got {tuple(text_bias.shape)}")
    if not text_bias.is_floating_point():
        raise InputError(f"text_bias: expected an additive float bias (0 = real token, "
                         f"{MASK_BIAS} = padding), got dtype {text_bias.dtype}")
    rows = text_bias.reshape(batch, text_len) if text_bias.dim() == 4 else text_bias
    if text_len > 1 and rows.stride(1) != 1:
        raise InputError(f"text_bias: expected unit stride along the text tokens, got strides "
                         f"{tuple(text_bias.stride())}")
    return rows


def check_td_inputs(x: Tensor, text: Tensor, text_bias: Tensor, weights: PackedTDWeights,
                    check_values: bool = True) -> Tensor:
    """Validate a launch of the fused TD cross-attention; returns text_bias as a [B, M] view.

    x [B, L, D] (video + positions), text [B, M, D], text_bias [B, 1, 1, M] or [B, M]:
    same device, x and text in one of ``KERNEL_DTYPES`` and contiguous, 1 <= L <= 512,
    1 <= M <= 64, D = the weights' dim, weights packed for x's dtype and device.
    ``check_values`` also rejects a text row with no real token (every bias at the
    padding value); it reads the bias, which syncs a GPU.
    """
    _check_rank_dtype("x", x, 3)
    _check_rank_dtype("text", text, 3)
    b, n, d = x.shape
    m = text.shape[1]
    if text.dtype != x.dtype:
        raise InputError(f"text: expected dtype {x.dtype} to match x, got {text.dtype}")
    if text.shape[0] != b:
        raise InputError(f"text: expected batch size {b} to match x, got {text.shape[0]}")
    if text.shape[2] != d:
        raise InputError(f"text: expected hidden dim {d} to match x, got {text.shape[2]}")
    if d != weights.dim:
        raise InputError(f"x: expected hidden dim {weights.dim} (the layer's), got {d}")
    if not 1 <= n <= MAX_VIDEO_LEN:
        raise InputError(f"x: expected 1 to {MAX_VIDEO_LEN} video rows (L), got {n}")
    if not 1 <= m <= MAX_TEXT_LEN:
        raise InputError(f"text: expected 1 to {MAX_TEXT_LEN} text tokens (M), got {m}")
    _check_contiguous("x", x)
    _check_contiguous("text", text)
    rows = text_bias_rows(text_bias, b, m)
    for name, t in (("text", text), ("text_bias", text_bias)):
        if t.device != x.device:
            raise InputError(f"{name}: expected device {x.device} to match x, got {t.device}")
    if weights.device != x.device or weights.dtype != x.dtype:
        raise InputError(f"weights: expected weights packed for {x.dtype} on {x.device}, got "
                         f"{weights.dtype} on {weights.device} (re-run pack_weights)")
    if check_values:
        empty = (~(rows > MASK_BIAS / 2).any(dim=1)).nonzero().flatten()
        if empty.numel():
            raise InputError(f"text_bias: row {int(empty[0])} has no real text token (every "
                             f"key is padding); expected at least one per row")
    return rows
