"""Charades-STA / TACoS evaluation: R1 and R5 at IoU 0.3 / 0.5 / 0.7, and mIoU.

Each predicted window is scored by its IoU with the GT window of its
query that overlaps it most (as the QVHighlights R1). R1@t: the first
window of the (score-sorted) list reaches IoU t; R5@t: one of the first
five does; mIoU: mean IoU of the first window. Percentages, 2 decimals.
"""
from __future__ import annotations

import numpy as np

from tdfast.eval import moment, parse
from tdfast.eval.report import by_threshold, percent, query_mean

CHARADES_THRESHOLDS = [0.3, 0.5, 0.7]
TOP_K = (1, 5)


def eval_charades(submission: list[dict], ground_truth: list[dict], match_number: bool = True) -> dict:
    """Score moment retrieval on Charades-STA / TACoS-style records.

    submission: ``qid`` and ``pred_relevant_windows`` [[start_s, end_s(, score)], ...],
    best first. ground_truth: ``qid`` and ``relevant_windows`` [[start_s, end_s], ...].
    Returns ``{"brief": {"MR-full-R1@0.3": %, ..., "MR-full-R5@0.7": %,
    "MR-full-mIoU": %}, "full": {"MR-R1": {thr: %}, "MR-R5": {thr: %}, "MR-mIoU": %}}``.
    Raises InputError for mismatched qids (unless ``match_number=False``) and malformed records.
    """
    sub_idx, gt_idx = parse.match_qids(submission, ground_truth, match_number)
    pred, _, pred_mask = parse.pred_windows(submission, sub_idx, need_score=False)  # [Q, K, 2]
    gt, gt_mask = parse.gt_windows(ground_truth, gt_idx, allow_zero_length=True)  # [Q, G, 2]
    k_max = max(TOP_K)
    iou = moment.best_gt_iou(pred[:, :k_max], gt, gt_mask)  # [Q, k]
    iou = np.where(pred_mask[:, :k_max], iou, -np.inf)
    thr = np.asarray(CHARADES_THRESHOLDS)[None, None, :]
    full: dict = {}
    brief: dict = {}
    for k in TOP_K:
        hits = (iou[:, :k, None] >= thr).any(axis=1)  # [Q, T]
        full[f"MR-R{k}"] = by_threshold(query_mean(hits), CHARADES_THRESHOLDS)
        brief.update({f"MR-full-R{k}@{t}": v for t, v in full[f"MR-R{k}"].items()})
    full["MR-mIoU"] = percent(np.mean(iou[:, 0]))
    brief["MR-full-mIoU"] = full["MR-mIoU"]
    return {"brief": brief, "full": full}
