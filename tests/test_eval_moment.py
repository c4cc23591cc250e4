"""Moment retrieval metrics on hand-computed cases (mAP, R1, length ranges)."""
from __future__ import annotations

import numpy as np
import pytest

from eval_support import gt, pred
from tdfast.eval import eval_submission
from tdfast.eval.moment import IOU_THRESHOLDS, average_precision, best_gt_iou

THR_KEYS = ["0.5", "0.55", "0.6", "0.65", "0.7", "0.75", "0.8", "0.85", "0.9", "0.95"]


def per_threshold_ap(pred_windows, gt_windows):
    """AP [T] of one query through the vectorised kernel."""
    p = np.asarray(pred_windows, dtype=float)[None]  # [1, K, 3]
    g = np.asarray(gt_windows, dtype=float)[None]  # [1, G, 2]
    return average_precision(p[..., :2], p[..., 2], np.ones(p.shape[:2], bool), g, np.ones(g.shape[:2], bool))[0]


def full_mr(preds, gts):
    return eval_submission([pred(i, p) for i, p in enumerate(preds)], [gt(i, g) for i, g in enumerate(gts)])


def test_threshold_keys_match_the_official_strings():
    assert [str(t) for t in IOU_THRESHOLDS] == THR_KEYS


def test_tp_then_fp_gives_ap_one():
    # precision [1, 1/2], recall [1, 1]: the VOC curve keeps precision 1 up to recall 1.
    np.testing.assert_array_equal(per_threshold_ap([[0, 10, 0.9], [20, 30, 0.8]], [[0, 10]]), np.ones(10))


def test_two_gt_windows_interpolated_ap():
    # tp, fp, tp: precision [1, 1/2, 2/3], recall [1/2, 1/2, 1]
    # -> 1/2 * 1 + 1/2 * max(2/3) = 5/6 at every threshold.
    ap = per_threshold_ap([[20, 30, 0.9], [50, 60, 0.8], [0, 10, 0.7]], [[0, 10], [20, 30]])
    np.testing.assert_allclose(ap, np.full(10, 5 / 6), rtol=0, atol=1e-15)


def test_partial_overlap_counts_up_to_its_iou():
    # IoU 7/10 = 0.7 exactly: a hit at 0.5..0.7, a miss from 0.75 on.
    out = full_mr([[[0, 7, 1.0]]], [[[0, 10]]])["full"]
    assert out["MR-mAP"] == {**{k: 100.0 for k in THR_KEYS[:5]}, **{k: 0.0 for k in THR_KEYS[5:]}, "average": 50.0}
    assert out["MR-R1"] == {**{k: 100.0 for k in THR_KEYS[:5]}, **{k: 0.0 for k in THR_KEYS[5:]}}


def test_score_ties_keep_list_order():
    # Equal scores: the miss listed first stays first (stable sort) -> precision [0, 1/2] -> AP 1/2;
    # listing the hit first gives AP 1.
    np.testing.assert_array_equal(per_threshold_ap([[30, 40, 0.5], [0, 10, 0.5]], [[0, 10]]), np.full(10, 0.5))
    np.testing.assert_array_equal(per_threshold_ap([[0, 10, 0.5], [30, 40, 0.5]], [[0, 10]]), np.ones(10))


def test_map_sorts_by_score_but_r1_takes_the_first_listed_window():
    out = full_mr([[[30, 40, 0.1], [0, 10, 0.9]]], [[[0, 10]]])["full"]
    assert out["MR-mAP"]["average"] == 100.0
    assert out["MR-R1"]["0.5"] == 0.0


def test_only_the_first_ten_listed_windows_count():
    decoys = [[100 + 3 * i, 101 + 3 * i, 0.9] for i in range(10)]
    assert per_threshold_ap(decoys + [[0, 10, 1.0]], [[0, 10]]).max() == 0.0  # the 11th is cut before sorting
    np.testing.assert_array_equal(per_threshold_ap([[0, 10, 0.1]] + decoys[:9], [[0, 10]]), np.full(10, 0.1))


def test_duplicate_prediction_is_a_false_positive():
    # The GT window is locked by the first copy; the second is an fp after it: AP stays 1,
    # but before it (higher score than the hit) it halves AP.
    np.testing.assert_array_equal(per_threshold_ap([[0, 10, 0.9], [0, 10, 0.8]], [[0, 10]]), np.ones(10))
    np.testing.assert_array_equal(
        per_threshold_ap([[0, 10, 0.9], [0, 10, 0.8]], [[0, 10], [50, 60]]), np.full(10, 0.5))


def test_iou_tie_between_gt_windows_locks_the_later_one():
    # [0, 20] has IoU 1/2 with both GT windows; the official reversed argsort locks [10, 20],
    # so [0, 10] still matches the second prediction at 0.5 (AP 1). Above 0.5 the first is an fp:
    # precision [0, 1/2], recall [0, 1/2] -> AP 1/4.
    ap = per_threshold_ap([[0, 20, 0.9], [0, 10, 0.8]], [[0, 10], [10, 20]])
    np.testing.assert_array_equal(ap, [1.0] + [0.25] * 9)
    assert full_mr([[[0, 20, 0.9], [0, 10, 0.8]]], [[[0, 10], [10, 20]]])["full"]["MR-mAP"]["average"] == 32.5


def test_zero_length_and_past_duration_windows():
    # [5, 5] has IoU 0 with [0, 10]; [140, 160] in a 150-s video is not clipped: IoU 10/20 = 0.5.
    np.testing.assert_array_equal(per_threshold_ap([[5, 5, 0.9]], [[0, 10]]), np.zeros(10))
    np.testing.assert_array_equal(per_threshold_ap([[140, 160, 0.9]], [[140, 150]]), [1.0] + [0.0] * 9)
    iou = best_gt_iou(np.array([[[5.0, 5.0], [140, 160]]]), np.array([[[0.0, 10], [140, 150]]]), np.ones((1, 2), bool))
    np.testing.assert_array_equal(iou, [[0.0, 0.5]])


def test_r1_uses_the_gt_window_that_overlaps_most():
    # The first window overlaps the 2nd GT window by 8/10.
    out = full_mr([[[52, 60, 0.9]]], [[[0, 10], [50, 60]]])["full"]["MR-R1"]
    assert out["0.75"] == 100.0 and out["0.8"] == 100.0 and out["0.85"] == 0.0


def test_r1_iou_uses_official_enclosing_denominator_rounding():
    # 0.5 exactly with the official (enclosing-length) division; the summed union gives 0.49999999999999994.
    first, gt_win = np.array([[[3.9, 7.3]]]), np.array([[[4.4, 9.7]]])
    assert best_gt_iou(first, gt_win, np.ones((1, 1), bool))[0, 0] == 0.5
    assert full_mr([[[3.9, 7.3, 1.0]]], [[[4.4, 9.7]]])["full"]["MR-R1"]["0.5"] == 100.0


def test_length_ranges_keep_in_range_windows_and_queries():
    # q0: a short (4 s) and a long (40 s) window, predicted the long one; q1: a 10-s window (short,
    # the bound is inclusive); q2: a 30-s window (middle).
    out = full_mr(
        [[[50, 90, 0.9]], [[0, 10, 0.9]], [[0, 30, 0.9]]],
        [[[0, 4], [50, 90]], [[0, 10]], [[0, 30]]],
    )
    # full: q0 finds 1 of 2 windows (AP 1/2), q1 and q2 AP 1 -> 5/6.
    assert out["full"]["MR-mAP"]["average"] == 83.33
    assert out["full"]["MR-R1"]["0.95"] == 100.0
    # short keeps q0 (only [0, 4], missed) and q1 -> 1/2.
    assert out["short"]["MR-mAP"]["average"] == 50.0 and out["short"]["MR-R1"]["0.5"] == 50.0
    assert out["middle"]["MR-mAP"]["average"] == 100.0
    assert out["long"]["MR-mAP"]["average"] == 100.0
    assert out["brief"]["MR-short-mAP"] == 50.0 and out["brief"]["MR-full-mAP"] == 83.33


def test_empty_length_range_gives_null():
    out = full_mr([[[0, 10, 0.9]]], [[[0, 10]]])
    assert out["long"]["MR-mAP"]["average"] is None and out["long"]["MR-R1"]["0.5"] is None
    assert out["brief"]["MR-long-mAP"] is None and out["brief"]["MR-short-mAP"] == 100.0


def test_perfect_predictions_score_100_and_shuffled_scores_score_less():
    rng = np.random.default_rng(0)
    gts, perfect, shuffled = [], [], []
    for _ in range(20):
        starts = rng.choice(np.arange(0, 140, 12), size=rng.integers(1, 4), replace=False)
        windows = [[float(s), float(s + rng.integers(2, 11))] for s in sorted(starts)]
        decoys = [[200.0 + 20 * i, 210.0 + 20 * i] for i in range(len(windows))]  # overlap nothing
        gts.append(windows)
        scores = np.linspace(1, 0.1, len(windows) + len(decoys))
        perfect.append([w + [s] for w, s in zip(windows + decoys, scores)])
        shuffled.append([w + [s] for w, s in zip(decoys + windows, scores)])  # decoys ranked first
    best, worse = full_mr(perfect, gts), full_mr(shuffled, gts)
    # All GT windows are 2-10 s long: the middle and long ranges have no query.
    assert {k: v for k, v in best["brief"].items() if v != 100.0} == {"MR-middle-mAP": None, "MR-long-mAP": None}
    assert worse["brief"]["MR-full-mAP"] < 100.0 and worse["brief"]["MR-full-R1@0.5"] == 0.0


@pytest.mark.parametrize("n_gt", [1, 3])
def test_no_hit_gives_zero(n_gt):
    assert per_threshold_ap([[100, 101, 0.5]], [[10 * i, 10 * i + 5] for i in range(n_gt)]).max() == 0.0
