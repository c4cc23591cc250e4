"""The fused TD kernels' launcher checks, run before every launch.

A kernel does not bounds-check: a wrong shape or a transposed view would read garbage.
Every such case is an ``InputError`` naming the argument, the expected value and the value
seen. Only metadata is read (shapes, dtypes, strides, devices): no check looks at tensor
values, so the launcher never syncs a GPU and the model stays capturable in a CUDA graph.
A text row with no real token is the API boundary's business (``tdfast.retrieval.inputs.
check_inputs`` rejects it); the kernel's finite mask would average such a row's padding.
"""
from __future__ import annotations

import torch
from torch import Tensor

from tdfast.errors import InputError
from tdfast.kernels.launch_config import MAX_TEXT_LEN, is_pow2
from tdfast.kernels.packing import PackedTDWeights
from tdfast.model.attention import MASK_BIAS

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_ELEMENTS = 2**31 - 1  # the kernels index activations with int32 offsets


def _tensor(name: str, t: object, rank: int) -> Tensor:
    if not isinstance(t, Tensor):
        raise InputError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dim() != rank:
        raise InputError(f"{name}: expected a rank-{rank} tensor, got shape {tuple(t.shape)}")
    return t


def _contiguous(name: str, t: Tensor) -> None:
    if not t.is_contiguous():
        raise InputError(f"{name}: expected a contiguous tensor, got strides {tuple(t.stride())} "
                         f"for shape {tuple(t.shape)}; call .contiguous() first")


def text_bias_rows(text_bias: object, batch: int, text_len: int) -> Tensor:
    """text_bias [B, 1, 1, M] (as ``mask_to_bias`` makes it) or [B, M] -> a [B, M] view
    (batch stride kept; the token dim must be unit-stride)."""
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


def check_td_inputs(video: Tensor, pos: Tensor, start: Tensor | None, text: Tensor,
                    text_bias: Tensor, weights: PackedTDWeights) -> Tensor:
    """Validate a launch of the fused TD interaction; returns text_bias as a [B, M] view.

    video, pos [B, L, D] and text [B, M, D]: one dtype of ``KERNEL_DTYPES``, contiguous, one
    device; D = the weights' dim; 1 <= M <= 64; start [D] (any float dtype) when the
    weights have a dynamics branch; weights packed for video's dtype and device.
    """
    _tensor("video", video, 3)
    if video.dtype not in KERNEL_DTYPES:
        raise InputError(f"video: expected dtype float32, float16 or bfloat16, got {video.dtype}")
    b, n, d = video.shape
    for name, t in (("pos", pos), ("text", text)):
        _tensor(name, t, 3)
        if t.dtype != video.dtype:
            raise InputError(f"{name}: expected dtype {video.dtype} to match video, got {t.dtype}")
        if t.device != video.device:
            raise InputError(f"{name}: expected device {video.device} to match video, got {t.device}")
    if tuple(pos.shape) != (b, n, d):
        raise InputError(f"pos: expected shape {(b, n, d)} to match video, got {tuple(pos.shape)}")
    m = text.shape[1]
    if text.shape[0] != b:
        raise InputError(f"text: expected batch size {b} to match video, got {text.shape[0]}")
    if text.shape[2] != d:
        raise InputError(f"text: expected hidden dim {d} to match video, got {text.shape[2]}")
    if d != weights.dim:
        raise InputError(f"video: expected hidden dim {weights.dim} (the layer's), got {d}")
    if n < 1 or b < 1:
        raise InputError(f"video: expected at least one batch element and one clip, got shape "
                         f"{tuple(video.shape)}")
    if not 1 <= m <= MAX_TEXT_LEN:
        raise InputError(f"text: expected 1 to {MAX_TEXT_LEN} text tokens (M), got {m}")
    if video.numel() > MAX_ELEMENTS:
        raise InputError(f"video: expected at most {MAX_ELEMENTS} elements (int32 offsets), got "
                         f"{video.numel()}; split the batch")
    for name, t in (("video", video), ("pos", pos), ("text", text)):
        _contiguous(name, t)
    rows = text_bias_rows(text_bias, b, m)
    if text_bias.device != video.device:
        raise InputError(f"text_bias: expected device {video.device} to match video, got "
                         f"{text_bias.device}")
    if weights.has_dyn:
        if not isinstance(start, Tensor) or tuple(start.shape) != (d,):
            seen = tuple(start.shape) if isinstance(start, Tensor) else type(start).__name__
            raise InputError(f"start: expected the start token, a tensor of shape ({d},), got {seen}")
        if start.device != video.device or not start.is_floating_point():
            raise InputError(f"start: expected a float tensor on {video.device}, got {start.dtype} "
                             f"on {start.device}")
    if weights.device != video.device or weights.dtype != video.dtype:
        raise InputError(f"weights: expected weights packed for {video.dtype} on {video.device}, "
                         f"got {weights.dtype} on {weights.device} (re-run pack_weights)")
    if not is_pow2(weights.num_heads) or weights.num_heads < 2:
        raise InputError(f"num_heads: expected a power of two >= 2 (two halves of the heads "
                         f"are tile dims of the kernel), got {weights.num_heads}")
    return rows
