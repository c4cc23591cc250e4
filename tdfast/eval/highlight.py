"""Highlight detection metrics: Hit@1 and per-annotator average precision.

Per query the GT has ``n`` clips (``int(duration / 2)``) with 3 annotator
scores in 0..4; a clip is positive for an annotator when its score is at
least the level's minimum (Fair 2, Good 3, VeryGood 4). Arrays are padded
over queries and clips; ``n_clips`` [Q] says how many clips are real.
"""
from __future__ import annotations

import numpy as np

from tdfast.eval.summation import masked_row_sum

# Official names and minimum scores of a positive clip, in output order.
SALIENCY_LEVELS = {"Fair": 2, "Good": 3, "VeryGood": 4}


def hit_at_one(pred: np.ndarray, labels: np.ndarray, n_clips: np.ndarray) -> np.ndarray:
    """Whether the top-scored clip is positive for at least one annotator -> [Q] in {0, 1}.

    pred [Q, P]: the submitted saliency, -inf padded; its argmax (first on
    ties) is taken over the whole submitted list, and a clip index past the
    video's ``n_clips`` scores 0. labels [Q, N, 3] bool.
    """
    top = np.argmax(pred, axis=1)  # [Q]
    inside = top < n_clips
    row = labels[np.arange(len(top)), np.minimum(top, labels.shape[1] - 1)]  # [Q, 3]
    return (row.any(axis=1) & inside).astype(np.float64)


def fit_to_clips(pred: np.ndarray, pred_len: np.ndarray, n_clips: np.ndarray) -> np.ndarray:
    """Submitted saliency truncated or zero-padded to each video's clip count.

    pred [Q, P] (-inf padded), pred_len [Q], n_clips [Q] -> [Q, N] with
    N = max(n_clips); entries past a video's end are -inf.
    """
    num_n = int(n_clips.max())
    out = np.zeros((len(pred), num_n))
    width = min(pred.shape[1], num_n)
    out[:, :width] = pred[:, :width]
    clip = np.arange(num_n)[None, :]
    out = np.where(clip < pred_len[:, None], out, 0.0)  # zero padding, as the official code
    return np.where(clip < n_clips[:, None], out, -np.inf)


def average_precision(scores: np.ndarray, labels: np.ndarray, n_clips: np.ndarray) -> np.ndarray:
    """Per-query, per-annotator AP of ranking clips by score -> [Q, 3] in [0, 1].

    scores [Q, N] from ``fit_to_clips``; labels [Q, N, 3] bool. All-negative
    labels give 0 and all-positive give 1. Otherwise it is the official
    ``get_ap``: sklearn's precision-recall curve (tied scores form one
    threshold), precision made a running maximum from the low-threshold
    end, averaged over the thresholds where recall grows.
    """
    num_q, num_n = scores.shape
    order = np.argsort(-scores, axis=1, kind="stable")  # [Q, N] best first, -inf (past the end) last
    ranked = np.take_along_axis(scores, order, axis=1)
    lab = np.take_along_axis(labels, order[..., None], axis=1).transpose(0, 2, 1)  # [Q, 3, N]
    pos = np.arange(num_n)
    valid = pos[None, :] < n_clips[:, None]  # [Q, N]
    nxt = np.concatenate([ranked[:, 1:], np.full((num_q, 1), np.nan)], axis=1)
    group_end = valid & ((pos[None, :] == n_clips[:, None] - 1) | (ranked != nxt))  # [Q, N]
    tps = np.cumsum(lab, axis=-1, dtype=np.float64)  # [Q, 3, N]
    precision = tps / (pos + 1.0)
    best_after = np.maximum.accumulate(np.where(group_end[:, None], precision, 0.0)[..., ::-1], axis=-1)
    # tps at the previous group's end: recall grows at a group iff it holds a positive.
    prev_end = np.maximum.accumulate(np.where(group_end, pos, -1), axis=1)
    prev_end = np.concatenate([np.full((num_q, 1), -1), prev_end[:, :-1]], axis=1)  # [Q, N]
    tps_prev = np.where(prev_end[:, None] >= 0,
                        np.take_along_axis(tps, np.maximum(prev_end, 0)[:, None].repeat(3, 1), axis=-1), 0.0)
    grows = group_end[:, None] & (tps > tps_prev)  # [Q, 3, N]
    # Reversed: the official curve runs from the lowest threshold up, and its
    # mean must add the same terms in the same order.
    sums, counts = masked_row_sum(best_after.reshape(-1, num_n), grows[..., ::-1].reshape(-1, num_n))
    ap = (sums / np.maximum(counts, 1)).reshape(num_q, 3)
    n_pos = np.where(valid[:, None], lab, False).sum(axis=-1)  # [Q, 3]
    ap = np.where(n_pos == 0, 0.0, ap)
    return np.where(n_pos == n_clips[:, None], 1.0, ap)
