"""The QVHighlights evaluation: the official ``standalone_eval`` output, key for key.

Output layout (as the official ``eval_submission``): ``brief`` first, then
``HL-min-Fair``, ``HL-min-Good``, ``HL-min-VeryGood``, ``full``, ``long``,
``middle``, ``short``. Moment retrieval is scored when the first
submission record has ``pred_relevant_windows``, highlights when it has
``pred_saliency_scores``. Percentages are rounded to 2 decimals.
"""
from __future__ import annotations

import time

import numpy as np

from tdfast.errors import InputError
from tdfast.eval import highlight, moment, parse
from tdfast.eval.io import record_label
from tdfast.eval.report import by_threshold, log, percent, query_mean


def eval_moment_retrieval(
    submission: list[dict], ground_truth: list[dict], sub_idx: list[int], gt_idx: list[int],
    verbose: bool = False,
) -> dict[str, dict]:
    """{range: {"MR-mAP": {thr: %, "average": %}, "MR-R1": {thr: %}}} for short/middle/long/full.

    A range keeps only GT windows of its length and the queries that have
    one; a range with no query gets null values (the official code crashes).
    """
    pred, scores, pred_mask = parse.pred_windows(submission, sub_idx)  # [Q, K, 2], [Q, K], [Q, K]
    gt, gt_mask = parse.gt_windows(ground_truth, gt_idx)  # [Q, G, 2], [Q, G]
    thresholds = moment.IOU_THRESHOLDS
    out = {}
    for name, bounds in moment.LENGTH_RANGES.items():
        start = time.perf_counter()
        in_range = moment.in_range_mask(gt, gt_mask, bounds)
        keep = in_range.any(axis=1)
        log(verbose, f"{name}: {list(bounds or (0, 150))}, {keep.sum()}/{len(keep)}="
                     f"{100 * keep.mean():.2f} examples.")
        ap = moment.average_precision(pred[keep], scores[keep], pred_mask[keep], gt[keep], in_range[keep])
        ap_means = query_mean(ap)  # [T]
        mr_map = by_threshold(ap_means, thresholds)
        mr_map["average"] = percent(np.mean(ap_means))
        iou = moment.best_gt_iou(pred[keep][:, :1], gt[keep], in_range[keep])  # [Q_r, 1]
        hits = iou >= np.asarray(thresholds)[None, :]  # [Q_r, T]
        out[name] = {"MR-mAP": mr_map, "MR-R1": by_threshold(query_mean(hits), thresholds)}
        log(verbose, f"[eval_moment_retrieval] [{name}] {time.perf_counter() - start:.2f} seconds")
    return out


def eval_highlight(
    submission: list[dict], ground_truth: list[dict], sub_idx: list[int], gt_idx: list[int],
    verbose: bool = False, clip_len: float = 2.0,
) -> dict[str, dict]:
    """{"HL-min-<level>": {"HL-mAP": %, "HL-Hit1": %}} for Fair / Good / VeryGood."""
    pred, pred_len = parse.pred_saliency(submission, sub_idx)  # [Q, P], [Q]
    gt_scores, n_clips = parse.gt_saliency(ground_truth, gt_idx, clip_len)  # [Q, N, 3], [Q]
    fitted = highlight.fit_to_clips(pred, pred_len, n_clips)  # [Q, N]
    out = {}
    for name, min_score in highlight.SALIENCY_LEVELS.items():
        start = time.perf_counter()
        labels = gt_scores >= min_score  # [Q, N, 3]
        ap = highlight.average_precision(fitted, labels, n_clips)  # [Q, 3]
        hit = highlight.hit_at_one(pred, labels, n_clips)  # [Q]
        out[f"HL-min-{name}"] = {"HL-mAP": percent(np.mean(ap)), "HL-Hit1": percent(np.mean(hit))}
        log(verbose, f"Calculating highlight scores with min score {min_score} ({name}): "
                     f"{time.perf_counter() - start:.2f} seconds")
    return out


def eval_submission(
    submission: list[dict], ground_truth: list[dict], verbose: bool = False, match_number: bool = True
) -> dict:
    """Score a QVHighlights submission like the official ``standalone_eval.eval_submission``.

    submission: one dict per query, ``qid``, ``pred_relevant_windows``
    [[start_s, end_s, score], ...] (score-sorted; the first 10 count for
    mAP, the first for R1) and/or ``pred_saliency_scores`` (one per 2-s
    clip). ground_truth: the annotation records (``qid``, ``duration``,
    ``relevant_windows``, ``relevant_clip_ids``, ``saliency_scores``).
    With ``match_number`` the qids must match exactly; otherwise only the
    shared ones are scored. Returns the official structure, ``brief`` first.
    Raises InputError for mismatched qids and malformed records.
    """
    sub_idx, gt_idx = parse.match_qids(submission, ground_truth, match_number)
    first = submission[sub_idx[0]]
    if "pred_relevant_windows" not in first and "pred_saliency_scores" not in first:
        raise InputError(
            f"{record_label(submission, sub_idx[0], parse.SUBMISSION)}: expected "
            f"'pred_relevant_windows' and/or 'pred_saliency_scores', got fields {sorted(first)}"
        )
    metrics: dict[str, dict] = {}
    brief: dict[str, float | None] = {}
    if "pred_relevant_windows" in first:
        mr = eval_moment_retrieval(submission, ground_truth, sub_idx, gt_idx, verbose)
        metrics.update(mr)
        mr_brief = {
            "MR-full-mAP": mr["full"]["MR-mAP"]["average"],
            "MR-full-mAP@0.5": mr["full"]["MR-mAP"]["0.5"],
            "MR-full-mAP@0.75": mr["full"]["MR-mAP"]["0.75"],
            "MR-short-mAP": mr["short"]["MR-mAP"]["average"],
            "MR-middle-mAP": mr["middle"]["MR-mAP"]["average"],
            "MR-long-mAP": mr["long"]["MR-mAP"]["average"],
            "MR-full-R1@0.5": mr["full"]["MR-R1"]["0.5"],
            "MR-full-R1@0.7": mr["full"]["MR-R1"]["0.7"],
        }
        brief.update(sorted(mr_brief.items()))
    if "pred_saliency_scores" in first:
        hl = eval_highlight(submission, ground_truth, sub_idx, gt_idx, verbose)
        metrics.update(hl)
        for level, values in hl.items():
            brief[f"{level}-mAP"] = values["HL-mAP"]
            brief[f"{level}-Hit1"] = values["HL-Hit1"]
    return {"brief": brief, **dict(sorted(metrics.items()))}
