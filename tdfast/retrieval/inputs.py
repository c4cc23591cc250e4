"""Every check on what users pass to inference, in one place.

Items (``Retriever.predict`` and friends): a list/tuple of 2-D arrays or tensors
(numpy and torch may be mixed, non-contiguous views are fine), or one 3-D
tensor/array whose rows are taken as equally long items (``as_feature_list``),
then their lengths against the config (``check_lengths``). Floating dtypes
(float16/bfloat16/float32/float64) are accepted and cast to the backend's dtype
later; integer, bool, complex and object arrays are *rejected* (features are
never integers: an int array is almost always token ids or a label passed by
mistake, and silently casting it would return confident nonsense).

Padded batches (export verification, the ONNX Runtime / TensorRT runners):
``check_inputs``. ``TDDETR.forward`` does not validate (a check would sync the
GPU and break graph capture), so bad input raises ``InputError`` naming the
argument (and item index) here instead of crashing in a kernel or returning NaN.
"""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from tdfast.errors import InputError
from tdfast.model.config import TDDETRConfig

MAX_DURATION_S = 1e7  # ~116 days; float32 spans still resolve seconds there
MAX_ABS_VALUE = 1e15  # squares of larger features overflow float32 in the input LayerNorm (NaN out)
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_tensor(name: str, x: Tensor, rank: int, last_dim: int | None) -> None:
    if not isinstance(x, Tensor):
        raise InputError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != rank:
        raise InputError(f"{name}: expected a rank-{rank} tensor, got shape {tuple(x.shape)}")
    if last_dim is not None and x.shape[-1] != last_dim:
        raise InputError(f"{name}: expected feature dim {last_dim}, got {x.shape[-1]} "
                         f"(shape {tuple(x.shape)})")



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


def _describe(x: Any) -> str:
    if isinstance(x, (np.ndarray, Tensor)):
        return f"{type(x).__name__} of shape {tuple(x.shape)} and dtype {x.dtype}"
    return type(x).__name__


def _to_tensor(name: str, x: Any) -> Tensor:
    """One item -> CPU/GPU tensor sharing memory with ``x`` where possible (no copy yet)."""
    if isinstance(x, Tensor):
        t = x.detach()
    elif isinstance(x, np.ndarray):
        if x.dtype.kind not in "f":
            raise InputError(f"{name}: expected floating-point features, got numpy dtype {x.dtype} "
                             f"(integer/bool inputs are rejected, not cast: pass the float "
                             f"features, e.g. np.asarray(x, dtype=np.float32))")
        if not x.dtype.isnative:
            x = x.astype(x.dtype.newbyteorder("="))
        if any(st < 0 for st in x.strides):  # e.g. x[::-1]: torch has no negative strides
            x = np.ascontiguousarray(x)
        with warnings.catch_warnings():  # read-only arrays (e.g. np.load mmap) are never written to
            warnings.simplefilter("ignore", UserWarning)
            t = torch.from_numpy(x)
    else:
        raise InputError(f"{name}: expected a numpy array or torch tensor of features, got {_describe(x)}")
    if t.device.type == "meta":
        raise InputError(f"{name}: expected features with values, got a tensor on the meta device "
                         f"(shape only, no data)")
    if t.dtype not in FLOAT_DTYPES:
        raise InputError(f"{name}: expected floating-point features, got dtype {t.dtype} "
                         f"(integer/bool inputs are rejected, not cast: pass the float features)")
    return t


def as_feature_list(name: str, items: Any, feature_dim: int) -> list[Tensor]:
    """``items`` (list of [L_i, D] or one [B, L, D]) -> list of validated 2-D tensors.

    Checks per item: rank 2, last dim ``feature_dim``, at least one row, finite
    values. Lengths are not bounded here (the caller decides about windows).
    """
    if isinstance(items, (np.ndarray, Tensor)):
        t = _to_tensor(name, items)
        if t.dim() != 3:
            raise InputError(f"{name}: expected a list of 2-D (length, {feature_dim}) arrays or one "
                             f"3-D (batch, length, {feature_dim}) tensor, got shape {tuple(t.shape)}")
        rows = list(t.unbind(0))
    elif isinstance(items, (list, tuple)):
        rows = [_to_tensor(f"{name}[{i}]", x) for i, x in enumerate(items)]
    else:
        raise InputError(f"{name}: expected a list of 2-D (length, {feature_dim}) arrays or one "
                         f"3-D tensor, got {_describe(items)}")
    if not rows:
        raise InputError(f"{name}: expected at least one item, got an empty {type(items).__name__}")
    for i, t in enumerate(rows):
        check_features(f"{name}[{i}]", t, feature_dim)
    return rows


def as_feature_array(name: str, x: Any) -> np.ndarray:
    """One raw item for ``Retriever.prepare_video`` / ``prepare_query`` -> float32 [L, D] numpy,
    after the checks ``predict`` makes (floating dtype, real data, rank 2, a row, finite), so
    preparing never turns integers into features or passes NaN on."""
    t = _to_tensor(name, x)
    check_features(name, t, None)
    return t.to("cpu", torch.float32).numpy()


def check_counts(videos: Sequence, queries: Sequence) -> None:
    """Pairs are (videos[i], queries[i]): the two lists must be equally long."""
    if len(videos) != len(queries):
        raise InputError(f"queries: expected one query per video ({len(videos)}), got {len(queries)} "
                         f"(pairs are (videos[i], queries[i]))")


def check_top_k(top_k: Any) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k <= 0:
        raise InputError(f"top_k: expected a positive integer, got {top_k!r}")
    return int(top_k)


def check_iou(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
            or not 0.0 < float(value) <= 1.0:
        raise InputError(f"{name}: expected None or an IoU threshold in (0, 1], got {value!r}")
    return float(value)


def check_durations(durations: Any, lengths: Sequence[int], clip_len: float) -> list[float]:
    """Seconds per video; default ``L_i * clip_len``. Python or numpy numbers in
    (0, MAX_DURATION_S]: far larger ones overflow the float32 spans to inf."""
    if durations is None:
        return [n * clip_len for n in lengths]
    if isinstance(durations, (np.ndarray, Tensor)):
        durations = durations.tolist()
    if not isinstance(durations, (list, tuple)) or len(durations) != len(lengths):
        seen = len(durations) if isinstance(durations, (list, tuple)) else _describe(durations)
        raise InputError(f"durations: expected None or one duration in seconds per video "
                         f"({len(lengths)}), got {seen}")
    out = []
    for i, d in enumerate(durations):
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, numbers.Real) or not math.isfinite(d) \
                or not 0 < d <= MAX_DURATION_S:
            raise InputError(f"durations[{i}]: expected seconds in (0, {MAX_DURATION_S:g}], got {d!r}")
        out.append(float(d))
    return out


def check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def check_length(name: str, item: Tensor, field: str, limit: int, unit: str, hint: str) -> None:
    """An item's first dim (clips or tokens) at most ``limit`` (the config's ``field``);
    ``hint`` says what to do instead."""
    if item.shape[0] > limit:
        raise InputError(f"{name}: expected at most {field}={limit} {unit}, got {item.shape[0]} ({hint})")
