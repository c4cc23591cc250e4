"""The numbers of the paper's Table 2 from a submission and its ground truth.

R1@{0.3,0.5,0.7} and mIoU come from ``tdfast.eval.eval_charades`` (top-1 window vs the
GT window it overlaps most); mAP@0.5, mAP@0.75, mAP (0.5:0.95) and the highlight
numbers from ``tdfast.eval.eval_submission`` (official QVHighlights), highlights only
when the ground truth has saliency scores. The gIoU loss is ``1 - gIoU`` of the
top-1 window with the GT window it fits best (largest gIoU), averaged over queries:
0 for a perfect top-1, up to 2 for a far-away one.
"""
from __future__ import annotations

import numpy as np

from tdfast.eval import eval_charades, eval_submission
from tdfast.eval import parse
from tdfast.spans import pairwise_giou

R1_KEYS = ("MR-full-R1@0.3", "MR-full-R1@0.5", "MR-full-R1@0.7", "MR-full-mIoU")
MAP_KEYS = ("MR-full-mAP@0.5", "MR-full-mAP@0.75", "MR-full-mAP")
HL_KEYS = ("HL-min-VeryGood-mAP", "HL-min-VeryGood-Hit1")
GIOU_KEY = "gIoU-loss"
TABLE2_KEYS = (*R1_KEYS, *MAP_KEYS, *HL_KEYS, GIOU_KEY)


def top1_giou_loss(submission: list[dict], ground_truth: list[dict]) -> float:
    """Mean over queries of ``1 - max_g gIoU(top-1 window, GT window g)``.

    submission: ``qid``, ``pred_relevant_windows`` [[st, ed(, score)], ...] best first;
    ground_truth: ``qid``, ``relevant_windows`` [[st, ed], ...]; seconds. Qids must match.
    """
    sub_idx, gt_idx = parse.match_qids(submission, ground_truth, True)
    pred, _, _ = parse.pred_windows(submission, sub_idx, need_score=False)  # [Q, K, 2]
    gt, gt_mask = parse.gt_windows(ground_truth, gt_idx, allow_zero_length=True)  # [Q, G, 2]
    losses = [1.0 - float(pairwise_giou(pred[q, :1], gt[q][gt_mask[q]]).max()) for q in range(len(pred))]
    return float(np.mean(losses))


def table2_metrics(submission: list[dict], ground_truth: list[dict]) -> dict[str, float | None]:
    """``TABLE2_KEYS`` -> value (percent, except the gIoU loss); highlight keys are None
    when the ground truth has no saliency scores."""
    out: dict[str, float | None] = dict.fromkeys(TABLE2_KEYS)
    out.update({k: v for k, v in eval_charades(submission, ground_truth)["brief"].items() if k in R1_KEYS})
    with_saliency = all("saliency_scores" in g for g in ground_truth)
    records = submission if with_saliency else [
        {k: v for k, v in s.items() if k != "pred_saliency_scores"} for s in submission]
    brief = eval_submission(records, ground_truth)["brief"]
    out.update({k: brief.get(k) for k in (*MAP_KEYS, *HL_KEYS)})
    out[GIOU_KEY] = round(top1_giou_loss(submission, ground_truth), 4)
    return out
