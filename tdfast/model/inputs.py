"""Validation of model inputs at the API and export boundaries.

``TDDETR.forward`` does not validate (a check would sync the GPU and break
graph capture); every public entry point (Retriever, predict, export verify,
the fused kernels' launcher) calls ``check_inputs`` first, so bad input
raises ``InputError`` naming the argument instead of crashing in a kernel or
returning NaN.
"""
from __future__ import annotations

import torch
from torch import Tensor

from tdfast.errors import InputError
from tdfast.model.config import TDDETRConfig


def _check_tensor(name: str, x: Tensor, rank: int, last_dim: int | None) -> None:
    if not isinstance(x, Tensor):
        raise InputError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != rank:
        raise InputError(f"{name}: expected a rank-{rank} tensor, got shape {tuple(x.shape)}")
    if last_dim is not None and x.shape[-1] != last_dim:
        raise InputError(f"{name}: expected feature dim {last_dim}, got {x.shape[-1]} "
                         f"(shape {tuple(x.shape)})")


MAX_ABS_VALUE = 1e15  # squares of larger features overflow float32 in the input LayerNorm (NaN out)


def check_finite(name: str, x: Tensor) -> None:
    """InputError if ``x`` holds NaN, inf or a magnitude above ``MAX_ABS_VALUE`` (says how
    many and where the first is)."""
    if x.numel() == 0:
        return
    # One reduction clears the common case: NaN propagates through aminmax, inf and
    # overflow-prone values fall outside the bound. Only then look element by element.
    lo, hi = torch.aminmax(x)
    if bool((lo >= -MAX_ABS_VALUE) & (hi <= MAX_ABS_VALUE)):
        return
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise InputError(f"{name}: expected finite values, found {int(bad.sum())} NaN/inf "
                         f"(first at index {first})")
    big = x.abs() > MAX_ABS_VALUE
    first = tuple(int(i) for i in big.nonzero()[0])
    raise InputError(f"{name}: expected values within +-{MAX_ABS_VALUE:g} (larger ones overflow "
                     f"float32 inside the model), found {int(big.sum())} beyond it, the first "
                     f"{float(x[first]):g} at index {first}")


def check_features(name: str, x: Tensor, feature_dim: int | None) -> None:
    """One unpadded item [L, feature_dim]: rank 2, right dim (any if None), float, at least one
    row, finite."""
    _check_tensor(name, x, 2, feature_dim)
    if not x.is_floating_point():
        raise InputError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    if x.shape[0] == 0:
        what = "a zero-length video (0 clips)" if name.startswith("video") else "an empty query (0 tokens)"
        raise InputError(f"{name}: expected at least one row, got {what}, shape {tuple(x.shape)}")
    check_finite(name, x)


def check_inputs(video: Tensor, video_mask: Tensor, query: Tensor, query_mask: Tensor,
                 config: TDDETRConfig, max_video_len: int | None = None) -> None:
    """Validate a padded batch: video [B, L, video_dim], video_mask [B, L],
    query [B, M, text_dim], query_mask [B, M]; masks bool or 0/1.

    ``max_video_len`` (default ``config.max_video_len``) bounds L; pass a larger value
    only where the caller windows long videos itself.
    """
    _check_tensor("video", video, 3, config.video_dim)
    _check_tensor("query", query, 3, config.text_dim)
    _check_tensor("video_mask", video_mask, 2, None)
    _check_tensor("query_mask", query_mask, 2, None)
    for name, x in (("video", video), ("query", query)):
        if not x.is_floating_point():
            raise InputError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    if video_mask.shape != video.shape[:2]:
        raise InputError(f"video_mask: expected shape {tuple(video.shape[:2])} to match video, "
                         f"got {tuple(video_mask.shape)}")
    if query_mask.shape != query.shape[:2]:
        raise InputError(f"query_mask: expected shape {tuple(query.shape[:2])} to match query, "
                         f"got {tuple(query_mask.shape)}")
    if video.shape[0] != query.shape[0]:
        raise InputError(f"query: expected batch size {video.shape[0]} to match video, "
                         f"got {query.shape[0]}")
    limit = config.max_video_len if max_video_len is None else max_video_len
    if video.shape[1] > limit:
        raise InputError(f"video: expected at most max_video_len={limit} clips, got {video.shape[1]} "
                         f"(use sliding windows for longer videos)")
    if query.shape[1] > config.max_query_len:
        raise InputError(f"query: expected at most max_query_len={config.max_query_len} tokens, "
                         f"got {query.shape[1]}")
    for name, m in (("video_mask", video_mask), ("query_mask", query_mask)):
        if m.dtype != torch.bool and bool(((m != 0) & (m != 1)).any()):
            raise InputError(f"{name}: expected bool or 0/1 values, got other values")
        empty = (~m.bool().any(dim=1)).nonzero().flatten()
        if empty.numel():
            what = "zero-length video" if name == "video_mask" else "empty query (all tokens masked)"
            raise InputError(f"{name}: row {int(empty[0])} has no real token: {what}")
    check_finite("video", video)
    check_finite("query", query)
