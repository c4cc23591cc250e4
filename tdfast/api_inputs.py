"""Turn what users pass to ``Retriever.predict`` into validated feature tensors.

Accepted: a list/tuple of 2-D arrays or tensors (numpy and torch may be mixed,
non-contiguous views are fine), or one 3-D tensor/array whose rows are taken
as equally long items. Floating dtypes (float16/bfloat16/float32/float64) are
accepted and cast to the backend's dtype later; integer, bool, complex and
object arrays are *rejected* (features are never integers: an int array is
almost always token ids or a label passed by mistake, and silently casting it
would return confident nonsense). Every problem raises ``InputError`` naming
the argument and the item index.
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
from tdfast.model.inputs import check_features

MAX_DURATION_S = 1e7  # ~116 days; float32 spans still resolve seconds there
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


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
