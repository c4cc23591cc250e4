"""Sliding windows for videos longer than the model's ``max_video_len``.

A long video of L clips is cut into overlapping windows of W = max_video_len
clips, one every ``stride`` clips (the last window is aligned to end at the
video's end, so every clip is covered and no window is short). Each window
is an ordinary (video, query) pair for the model. Its moments, in seconds
relative to the window, are shifted by the window's start, pooled over all
windows, merged by NMS and cut to top k; per-clip saliency is the average
over the windows that cover the clip.

Scores of different windows are compared directly (each is a foreground
probability of its own window); with stride <= W/2 any moment no longer
than W/2 clips lies whole inside at least one window.

Work is bounded: a video may be cut into at most ``MAX_WINDOWS`` windows (a
smaller stride is an InputError saying the smallest allowed), and the merge is
greedy NMS that compares each candidate only with the moments already kept and
stops at top k -- O(candidates x k), where a full IoU matrix of all candidates
was quadratic (stride 1 on 2000 clips: 62 s and 2.5 GB; on 10000: MemoryError).
The result is the same: greedy NMS decides each candidate from higher-scored ones.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tdfast.errors import InputError
from tdfast.retrieval.postprocess import Prediction
from tdfast.spans import pairwise_iou

DEFAULT_WINDOW_NMS_IOU = 0.5  # merging windows needs NMS even when the caller asked for none
MAX_WINDOWS = 1024  # per video: 1024 model calls' worth of one video is already minutes on a CPU


def plan_windows(length: int, window: int, stride: int) -> list[tuple[int, int]]:
    """Clip ranges [start, end) of windows covering ``0..length``.

    ``length <= window`` gives the single range (0, length). Otherwise starts are
    0, stride, 2*stride, ... below ``length - window``, plus ``length - window``.
    """
    if length <= window:
        return [(0, length)]
    count = -(-(length - window) // stride) + 1  # starts 0, stride, ... below length - window, + the last
    if count > MAX_WINDOWS:
        smallest = -(-(length - window) // (MAX_WINDOWS - 1))
        raise InputError(f"window_stride: {stride} clips cuts a video of {length} clips into {count} "
                         f"windows of {window}; at most {MAX_WINDOWS} are allowed: use window_stride >= "
                         f"{smallest}")
    starts = [*range(0, length - window, stride), length - window]
    return [(s, s + window) for s in starts]


def nms_top_k(spans: np.ndarray, scores: np.ndarray, top_k: int, iou_threshold: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """Greedy NMS by descending score (stable), stopping at ``top_k`` kept: spans [n, 2],
    scores [n] -> the kept spans [<=k, 2] and scores. Each candidate is compared with the
    kept ones only, so the work is O(n * top_k) and the memory O(n)."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    for i in order:
        if keep and float(pairwise_iou(spans[i:i + 1], spans[keep]).max()) >= iou_threshold:
            continue
        keep.append(int(i))
        if len(keep) == top_k:
            break
    return spans[keep], scores[keep]


def stitch_saliency(length: int, windows: Sequence[tuple[int, int]],
                    saliencies: Sequence[np.ndarray]) -> np.ndarray:
    """Average per-clip saliency over the windows covering each clip -> [length]."""
    total = np.zeros(length, dtype=np.float64)
    count = np.zeros(length, dtype=np.float64)
    for (s, e), sal in zip(windows, saliencies):
        total[s:e] += sal
        count[s:e] += 1.0
    return (total / count).astype(np.float32)  # every clip is covered: count >= 1


def merge_windows(windows: Sequence[tuple[int, int]], preds: Sequence[Prediction],
                  seconds_per_clip: float, duration: float, top_k: int,
                  nms_iou: float | None) -> Prediction:
    """Per-window predictions (spans in seconds from the window's start) -> one Prediction
    for the whole video: spans shifted by start * seconds_per_clip and clamped to
    [0, duration], NMS at ``nms_iou`` (``DEFAULT_WINDOW_NMS_IOU`` if None), top k;
    saliency stitched over all ``windows[-1][1]`` clips."""
    spans = np.concatenate([p.spans + s * seconds_per_clip for (s, _), p in zip(windows, preds)])
    scores = np.concatenate([p.scores for p in preds])
    spans = np.clip(spans, 0.0, duration).astype(np.float32)  # [n_windows * Q, 2] seconds
    iou = DEFAULT_WINDOW_NMS_IOU if nms_iou is None else nms_iou
    spans, scores = nms_top_k(spans, scores, top_k, iou)
    saliency = stitch_saliency(windows[-1][1], windows, [p.saliency for p in preds])
    return Prediction(spans=spans, scores=scores, saliency=saliency)
