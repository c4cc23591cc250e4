"""Moment retrieval metrics: per-query AP over IoU thresholds, and IoU of the top window.

All arrays are padded over queries; masks are True for real windows.
Times are in seconds. Semantics follow the official QVHighlights
``standalone_eval`` (per-query VOC-2011 AP with greedy matching, top-1
recall against the best-overlapping GT window), vectorised over queries
and thresholds.
"""
from __future__ import annotations

import numpy as np

from tdfast.eval.summation import masked_row_sum
from tdfast.spans import elementwise_iou

# Parsed back from 2-decimal strings exactly as the official code does, so
# ``iou >= thr`` compares against the same doubles and str(thr) gives its keys.
IOU_THRESHOLDS = [float(f"{t:.2f}") for t in np.linspace(0.5, 0.95, 10)]
MAX_PRED_WINDOWS = 10
# (name, (min, max]) of GT window lengths in seconds; "full" keeps every window.
LENGTH_RANGES = {"short": (0, 10), "middle": (10, 30), "long": (30, 150), "full": None}


def cross_iou(pred: np.ndarray, gt: np.ndarray, gt_mask: np.ndarray) -> np.ndarray:
    """IoU of every predicted window with every GT window of its query.

    pred [Q, K, 2], gt [Q, G, 2], gt_mask [Q, G] -> [Q, K, G]; padded GT -> -inf.
    """
    iou = elementwise_iou(pred[:, :, None, :], gt[:, None, :, :])  # [Q, K, G]
    return np.where(gt_mask[:, None, :], iou, -np.inf)


def in_range_mask(gt: np.ndarray, gt_mask: np.ndarray, bounds: tuple[float, float] | None) -> np.ndarray:
    """GT windows whose length lies in (lo, hi] -> mask [Q, G]; ``None`` keeps all."""
    if bounds is None:
        return gt_mask
    length = gt[..., 1] - gt[..., 0]
    return gt_mask & (length > bounds[0]) & (length <= bounds[1])


def average_precision(
    pred: np.ndarray,
    scores: np.ndarray,
    pred_mask: np.ndarray,
    gt: np.ndarray,
    gt_mask: np.ndarray,
    thresholds: list[float] = IOU_THRESHOLDS,
    max_pred: int = MAX_PRED_WINDOWS,
) -> np.ndarray:
    """Per-query detection AP at each IoU threshold -> [Q, T] in [0, 1].

    pred [Q, K, 2] / scores [Q, K] / pred_mask [Q, K]: windows in submission
    order; the first ``max_pred`` are kept, then sorted by score (stable, so
    ties keep list order). Each prediction, best first, is matched to the
    unmatched GT window of highest IoU if that IoU >= threshold (ties go to
    the later GT window, as the official reversed argsort does), else it is
    a false positive. AP is VOC-2011: precision made non-increasing from
    the right, summed over recall steps, recall padded with 0 and 1.
    Every query needs >= 1 prediction and >= 1 GT window.
    """
    pred, scores, pred_mask = pred[:, :max_pred], scores[:, :max_pred], pred_mask[:, :max_pred]
    order = np.argsort(np.where(pred_mask, -scores, np.inf), axis=1, kind="stable")  # [Q, K]
    pred = np.take_along_axis(pred, order[..., None], axis=1)
    pred_mask = np.take_along_axis(pred_mask, order, axis=1)
    iou = cross_iou(pred, gt, gt_mask)  # [Q, K, G]
    thr = np.asarray(thresholds)[None, :, None]  # [1, T, 1]
    num_q, num_k, num_g = iou.shape
    q_idx, t_idx = np.ogrid[:num_q, : len(thresholds)]
    locked = np.zeros((num_q, len(thresholds), num_g), dtype=bool)  # [Q, T, G]
    tp = np.zeros((num_q, len(thresholds), num_k))  # [Q, T, K]
    for k in range(num_k):  # greedy: each match locks a GT window for later predictions
        iou_k = iou[:, None, k, :]  # [Q, 1, G]
        free = (iou_k >= thr) & ~locked
        best = num_g - 1 - np.argmax(np.where(free, iou_k, -np.inf)[..., ::-1], axis=-1)  # [Q, T]
        hit = free.any(axis=-1) & pred_mask[:, k, None]
        tp[..., k] = hit
        locked[q_idx, t_idx, best] |= hit
    fp = pred_mask[:, None, :] & (tp == 0)
    tp_cum = np.cumsum(tp, axis=-1)
    fp_cum = np.cumsum(fp, axis=-1).astype(np.float64)
    recall = tp_cum / gt_mask.sum(axis=1).astype(np.float64)[:, None, None]
    # Padded slots repeat the last real precision / recall, which adds no
    # recall step and leaves the right-to-left maximum unchanged.
    precision = tp_cum / (tp_cum + fp_cum)
    zeros, ones = np.zeros((num_q, len(thresholds), 1)), np.ones((num_q, len(thresholds), 1))
    m_prec = np.concatenate([zeros, precision, zeros], axis=-1)
    m_rec = np.concatenate([zeros, recall, ones], axis=-1)
    m_prec = np.maximum.accumulate(m_prec[..., ::-1], axis=-1)[..., ::-1]
    step = m_rec[..., 1:] != m_rec[..., :-1]  # [Q, T, K + 1]
    terms = (m_rec[..., 1:] - m_rec[..., :-1]) * m_prec[..., 1:]
    ap, _ = masked_row_sum(terms.reshape(-1, num_k + 1), step.reshape(-1, num_k + 1))
    return ap.reshape(num_q, len(thresholds))


def best_gt_iou(pred: np.ndarray, gt: np.ndarray, gt_mask: np.ndarray) -> np.ndarray:
    """IoU of each predicted window with the GT window of its query that overlaps it most.

    pred [Q, K, 2], gt [Q, G, 2], gt_mask [Q, G] -> [Q, K]. The GT window is
    the first argmax of the IoU; the returned IoU divides by the enclosing
    length, as the official R1 does (the same value, the official rounding).
    """
    best = np.argmax(cross_iou(pred, gt, gt_mask), axis=2)  # [Q, K]
    chosen = np.take_along_axis(gt, best[..., None], axis=1)  # [Q, K, 2]
    return elementwise_iou(pred, chosen, enclosing_union=True)
