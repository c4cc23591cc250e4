"""Charades-STA / TACoS metrics on hand-computed cases."""
from __future__ import annotations

import pytest

from eval_support import gt, pred
from tdfast.errors import InputError
from tdfast.eval import eval_charades


def test_r1_r5_miou_by_hand():
    preds = [
        pred("a", [[0, 10, 0.9], [40, 50, 0.5]]),  # top-1 exact: IoU 1
        pred("b", [[0, 4], [10, 20], [30, 40], [50, 60], [2, 8], [0, 10]]),  # top-1 IoU 0.4; 5th 0.6; 6th ignored
        pred("c", [[100, 110, 0.3]]),  # miss: IoU 0
        pred("d", [[10, 15, 0.8]]),  # best of two GT windows: [10, 20] -> 0.5
    ]
    gts = [gt("a", [[0, 10]]), gt("b", [[0, 10]]), gt("c", [[0, 10]]), gt("d", [[0, 5], [10, 20]])]
    out = eval_charades(preds, gts)
    assert out["full"]["MR-R1"] == {"0.3": 75.0, "0.5": 50.0, "0.7": 25.0}
    assert out["full"]["MR-R5"] == {"0.3": 75.0, "0.5": 75.0, "0.7": 25.0}
    assert out["full"]["MR-mIoU"] == 47.5  # (1 + 0.4 + 0 + 0.5) / 4
    assert list(out["brief"]) == ["MR-full-R1@0.3", "MR-full-R1@0.5", "MR-full-R1@0.7",
                                  "MR-full-R5@0.3", "MR-full-R5@0.5", "MR-full-R5@0.7", "MR-full-mIoU"]
    assert out["brief"]["MR-full-R5@0.5"] == 75.0 and out["brief"]["MR-full-mIoU"] == 47.5


def test_zero_length_windows_have_iou_zero():
    out = eval_charades([pred(0, [[3, 3]]), pred(1, [[4, 4]])], [gt(0, [[3, 3]]), gt(1, [[0, 8]])])
    assert out["full"]["MR-mIoU"] == 0.0 and out["full"]["MR-R5"]["0.3"] == 0.0


def test_qid_mismatch_and_allow_partial():
    with pytest.raises(InputError, match=r"1 predicted qids are not in the GT \(e\.g\. \[9\]\)"):
        eval_charades([pred(0, [[0, 1]]), pred(9, [[0, 1]])], [gt(0, [[0, 1]])])
    out = eval_charades([pred(0, [[0, 1]]), pred(9, [[0, 1]])], [gt(0, [[0, 1]])], match_number=False)
    assert out["full"]["MR-mIoU"] == 100.0
