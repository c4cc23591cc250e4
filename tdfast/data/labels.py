"""Training labels of one query from its annotation and its (possibly truncated) clip count.

Definitions (clip ``i`` covers seconds ``[i * clip_len, (i + 1) * clip_len)``;
``L`` is the number of valid clips after truncation, so the horizon is
``L * clip_len`` seconds):

- windows past the horizon: a window starting at or after the horizon is
  dropped; a window crossing it is cut at the horizon. All windows of a
  query can be dropped (then ``spans`` is empty, shape [0, 2]).
- ``spans`` [n, 2] float32: the kept windows divided by ``L * clip_len``
  (Moment-DETR's normalisation), clamped to [0, 1] as (start, end), then
  converted to (center, width) with ``tdfast.spans.xx_to_cxw``.
- ``gt_clip_mask`` [L] bool: True on every clip a kept window overlaps by a
  positive length; a zero-length window marks the clip that contains it.
  On QVHighlights this equals ``relevant_clip_ids`` (checked by the tests).
- ``saliency`` [L] float32: with ``saliency_scores`` (QVHighlights), the sum
  of the annotators' scores on each relevant clip id < L, 0 elsewhere;
  without them (Charades-STA, TACoS), 1.0 where ``gt_clip_mask`` and 0 elsewhere.
"""
from __future__ import annotations

import math

import numpy as np

from tdfast.data.annotations import Annotation
from tdfast.spans import xx_to_cxw

GRID_EPS = 1e-6  # in clips: a boundary this close to a grid line counts as on it


def truncate_windows(windows: np.ndarray, num_clips: int, clip_len: float) -> np.ndarray:
    """[n, 2] (start, end) seconds -> [n', 2]: windows starting at or after the horizon
    ``num_clips * clip_len`` dropped, the others cut at it."""
    horizon = num_clips * clip_len
    windows = np.asarray(windows, dtype=np.float64).reshape(-1, 2)
    kept = windows[windows[:, 0] < horizon]
    return np.stack([kept[:, 0], np.minimum(kept[:, 1], horizon)], axis=1)


def windows_to_spans(windows: np.ndarray, num_clips: int, clip_len: float) -> np.ndarray:
    """[n, 2] (start, end) seconds -> [n, 2] float32 normalized (center, width) in [0, 1]."""
    xx = np.clip(np.asarray(windows, dtype=np.float64) / (num_clips * clip_len), 0.0, 1.0)
    return xx_to_cxw(xx.reshape(-1, 2)).astype(np.float32)


def windows_to_clip_mask(windows: np.ndarray, num_clips: int, clip_len: float) -> np.ndarray:
    """[n, 2] (start, end) seconds -> [num_clips] bool: clips a window overlaps."""
    mask = np.zeros(num_clips, dtype=bool)
    for st, ed in np.asarray(windows, dtype=np.float64).reshape(-1, 2):
        first = math.floor(st / clip_len + GRID_EPS)
        stop = max(math.ceil(ed / clip_len - GRID_EPS), first + 1)  # zero-length: its own clip
        mask[max(first, 0): min(stop, num_clips)] = True
    return mask


def saliency_label(ann: Annotation, clip_mask: np.ndarray) -> np.ndarray:
    """[L] float32 clip saliency (see the module docstring); ``clip_mask`` [L] from the windows."""
    if ann.saliency_scores is None:
        return clip_mask.astype(np.float32)
    out = np.zeros(len(clip_mask), dtype=np.float32)
    for cid, scores in zip(ann.relevant_clip_ids or (), ann.saliency_scores):
        if cid < len(out):
            out[cid] = sum(scores)
    return out


def make_labels(ann: Annotation, num_clips: int, clip_len: float) -> dict[str, np.ndarray]:
    """All labels of a labelled annotation for a video of ``num_clips`` valid clips.

    Returns ``spans`` [n, 2] (normalized center, width of the windows after truncation),
    ``gt_clip_mask`` [L] bool and ``saliency`` [L] float32.
    """
    windows = truncate_windows(np.asarray(ann.windows, dtype=np.float64), num_clips, clip_len)
    mask = windows_to_clip_mask(windows, num_clips, clip_len)
    return {
        "spans": windows_to_spans(windows, num_clips, clip_len),
        "gt_clip_mask": mask,
        "saliency": saliency_label(ann, mask),
    }
