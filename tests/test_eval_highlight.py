"""Highlight detection metrics on hand-computed cases (HL-mAP, HL-Hit1)."""
from __future__ import annotations

import numpy as np
import pytest

from eval_support import gt, pred
from tdfast.eval import eval_submission
from tdfast.eval.highlight import average_precision, fit_to_clips, hit_at_one


def ap_one(scores, labels):
    """AP of one ranking (one query, the same labels for the 3 annotators)."""
    s = np.asarray(scores, dtype=float)[None]  # [1, N]
    lab = np.repeat(np.asarray(labels, dtype=bool)[None, :, None], 3, axis=2)  # [1, N, 3]
    return average_precision(s, lab, np.array([s.shape[1]]))[0, 0]


def hl(saliency, duration, clip_ids, scores):
    """eval_submission on one highlight-only query -> {level: (mAP, Hit1)}."""
    out = eval_submission([pred(0, saliency=saliency)], [gt(0, [[0, 2]], duration, clip_ids, scores)])
    return {k[len("HL-min-"):]: (v["HL-mAP"], v["HL-Hit1"]) for k, v in out.items() if k.startswith("HL-min-")}


def test_ap_interpolates_from_the_low_threshold_end():
    # Ranking +, -, +, -: precision 1 at the 1st positive, 2/3 at the 2nd -> (1 + 2/3) / 2.
    assert ap_one([0.9, 0.8, 0.7, 0.1], [1, 0, 1, 0]) == pytest.approx(5 / 6, abs=1e-15)
    # -, +, -, +: 1/2 and 2/4, but the running max lifts 2/4 nowhere -> (1/2 + 1/2) / 2.
    assert ap_one([0.9, 0.8, 0.7, 0.1], [0, 1, 0, 1]) == 0.5
    # -, -, +, +: 1/3 lifted to 2/4 by the lower threshold's precision -> (2/4 + 2/4) / 2.
    assert ap_one([0.9, 0.8, 0.7, 0.1], [0, 0, 1, 1]) == 0.5


def test_tied_scores_form_one_threshold():
    # The positive tied with a negative at the top: one point with precision 1/2 -> AP 1/2, not 1.
    assert ap_one([0.5, 0.5, 0.1], [0, 1, 0]) == 0.5
    assert ap_one([0.5, 0.5, 0.1], [1, 0, 0]) == 0.5
    assert ap_one([0.6, 0.5, 0.1], [1, 0, 0]) == 1.0


def test_constant_labels():
    assert ap_one([0.1, 0.9, 0.5], [0, 0, 0]) == 0.0
    assert ap_one([0.1, 0.9, 0.5], [1, 1, 1]) == 1.0


def test_short_saliency_is_zero_padded_and_long_is_truncated():
    # duration 9 s -> int(9 / 2) = 4 clips. Short list [0.3, 0.2, 0.1] -> padded 0 for clip 3.
    fitted = fit_to_clips(np.array([[0.3, 0.2, 0.1, -np.inf, -np.inf]]), np.array([3]), np.array([4]))
    np.testing.assert_array_equal(fitted, [[0.3, 0.2, 0.1, 0.0]])
    # Clip 3 alone is positive (score 4 from every annotator): ranked last of 4 -> AP 1/4.
    res = hl([0.3, 0.2, 0.1], 9, [3], [[4, 4, 4]])
    assert res["VeryGood"] == (25.0, 0.0)
    # A longer list is cut to 4 clips for AP, but its argmax (clip 4, past the end) scores Hit1 0.
    res = hl([0.1, 0.2, 0.3, 0.4, 9.0], 9, [3], [[4, 4, 4]])
    assert res["VeryGood"] == (100.0, 0.0)


def test_levels_and_annotators():
    # 3 clips; clip 0 scored (4, 1, 2), clip 2 scored (2, 3, 0); the model ranks clip 0 first.
    res = hl([0.9, 0.1, 0.5], 6, [0, 2], [[4, 1, 2], [2, 3, 0]])
    # Hit1: any annotator positive at clip 0 (annotator 0 gives 4) -> 100 at every level.
    # Fair (>=2): ann0 {0, 2} -> AP 1; ann1 {2} ranked 2nd -> 1/2; ann2 {0} -> 1: mean 5/6.
    # Good (>=3): ann0 {0} -> 1; ann1 {2} -> 1/2; ann2 none -> 0: mean 1/2.
    # VeryGood (4): ann0 {0} -> 1; ann1, ann2 none -> 0: mean 1/3.
    assert res == {"Fair": (83.33, 100.0), "Good": (50.0, 100.0), "VeryGood": (33.33, 100.0)}


def test_hit1_takes_the_max_over_annotators_and_first_argmax():
    labels = np.zeros((2, 3, 3), dtype=bool)
    labels[0, 1, 2] = True  # only annotator 2 marks clip 1 of query 0
    labels[1, 0, 0] = True
    # Query 1 has a tie at the top between clips 1 and 0: argmax takes clip 0... only if it is first.
    pred_sal = np.array([[0.1, 0.9, 0.3], [0.5, 0.5, 0.1]])
    np.testing.assert_array_equal(hit_at_one(pred_sal, labels, np.array([3, 3])), [1.0, 1.0])
    pred_sal = np.array([[0.1, 0.9, 0.3], [0.4, 0.5, 0.5]])
    np.testing.assert_array_equal(hit_at_one(pred_sal, labels, np.array([3, 3])), [1.0, 0.0])


def test_all_zero_labels_score_zero():
    assert hl([0.9, 0.1, 0.5], 6, [], []) == {"Fair": (0.0, 0.0), "Good": (0.0, 0.0), "VeryGood": (0.0, 0.0)}


def test_perfect_ranking_scores_100_and_shuffled_lower():
    rng = np.random.default_rng(1)
    subs, gts, shuffled = [], [], []
    for q in range(10):
        n = int(rng.integers(5, 40))
        clip_scores = rng.integers(0, 5, size=n)
        clip_scores[rng.integers(n)] = 4
        ids = np.arange(n)
        gts.append(gt(q, [[0, 2]], 2 * n, ids, [[s] * 3 for s in clip_scores]))
        subs.append(pred(q, saliency=clip_scores.astype(float)))
        shuffled.append(pred(q, saliency=rng.permutation(clip_scores).astype(float)))
    best, worse = eval_submission(subs, gts)["brief"], eval_submission(shuffled, gts)["brief"]
    assert set(best.values()) == {100.0}
    assert all(worse[k] < 100.0 for k in best if k.endswith("mAP"))
