"""Parity with the official QVHighlights evaluator on the published prediction files.

The Moment-DETR and QD-DETR metrics files are the official
``standalone_eval`` output itself, so ours must be byte-identical; CG-DETR
used a modified evaluator with extra keys, so every key ours has must
match; UniVTG shipped no metrics file, so its brief numbers come from the
table in ../shared/qvhighlights/README.md.
"""
from __future__ import annotations

import json

import pytest

from conftest import SHARED_QVH
from tdfast.eval import dumps, eval_charades, eval_submission, load_jsonl

pytestmark = pytest.mark.skipif(not SHARED_QVH.is_dir(), reason="../shared/qvhighlights not present")

PEERS = SHARED_QVH / "peer_preds"
EXACT = {  # predictions -> the official evaluator's output on them
    "moment_detr/sample_val_preds.jsonl": "moment_detr/sample_val_preds_metrics_raw.json",
    "QD-DETR/video_checkpoint/best_hl_val_preds.jsonl": "QD-DETR/video_checkpoint/best_hl_val_preds_metrics.json",
    "QD-DETR/audio_checkpoint/best_hl_val_preds.jsonl": "QD-DETR/audio_checkpoint/best_hl_val_preds_metrics.json",
    "QD-DETR/QDDETR_onlyclip/best_hl_val_preds.jsonl": "QD-DETR/QDDETR_onlyclip/best_hl_val_preds_metrics.json",
}
SUPERSET = {  # modified evaluator: a superset of the official keys
    "CGDETR/qvhighlights/hl_val_submission.jsonl": "CGDETR/qvhighlights/hl_val_submission_metrics.json",
    "CGDETR/qvhighlights_onlyCLIP/best_hl_val_preds.jsonl": "CGDETR/qvhighlights_onlyCLIP/best_hl_val_preds_metrics.json",
}


@pytest.fixture(scope="module")
def val_gt():
    return load_jsonl(SHARED_QVH / "annotations" / "highlight_val_release.jsonl")


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}{k}/") if isinstance(v, dict) else {prefix + k: v})
    return out


@pytest.mark.parametrize("preds", sorted(EXACT))
def test_byte_identical_to_official_output(val_gt, preds):
    ours = eval_submission(load_jsonl(PEERS / preds), val_gt)
    official = (PEERS / EXACT[preds]).read_text()
    assert flatten(ours) == flatten(json.loads(official))  # readable diff on failure
    assert dumps(ours) == official.rstrip("\n")  # same key order and float formatting


@pytest.mark.parametrize("preds", sorted(SUPERSET))
def test_every_official_key_matches_modified_evaluator(val_gt, preds):
    ours = flatten(eval_submission(load_jsonl(PEERS / preds), val_gt))
    theirs = flatten(json.loads((PEERS / SUPERSET[preds]).read_text()))
    assert len(ours) == 8 + 6 + 6 + 4 * 21
    assert ours == {k: theirs[k] for k in ours}


def test_univtg_matches_readme_table(val_gt):
    brief = eval_submission(load_jsonl(PEERS / "UniVTG/qvhl/univtg.jsonl"), val_gt)["brief"]
    readme = {"MR-full-R1@0.5": 68.39, "MR-full-R1@0.7": 54.0, "MR-full-mAP": 45.99, "MR-full-mAP@0.5": 65.6,
              "MR-full-mAP@0.75": 47.73, "HL-min-VeryGood-mAP": 41.25, "HL-min-VeryGood-Hit1": 67.42}
    assert {k: brief[k] for k in readme} == readme


@pytest.mark.parametrize("preds", sorted(SUPERSET))
def test_charades_metrics_match_cgdetr_r1_and_miou(val_gt, preds):
    # CG-DETR's evaluator adds R1@0.3 and mIoU of the top window on QVHighlights, the
    # same definitions as our Charades mode.
    ours = eval_charades(load_jsonl(PEERS / preds), val_gt)["brief"]
    theirs = json.loads((PEERS / SUPERSET[preds]).read_text())["brief"]
    keys = ["MR-full-R1@0.3", "MR-full-R1@0.5", "MR-full-R1@0.7", "MR-full-mIoU"]
    assert {k: ours[k] for k in keys} == {k: theirs[k] for k in keys}


def test_partial_submission_scores_the_shared_qids(val_gt):
    # Half of the QD-DETR file scored against the full GT equals it scored against the same half.
    preds = load_jsonl(PEERS / "QD-DETR/video_checkpoint/best_hl_val_preds.jsonl")[::2]
    qids = {p["qid"] for p in preds}
    half_gt = [g for g in val_gt if g["qid"] in qids]
    assert eval_submission(preds, val_gt, match_number=False) == eval_submission(preds, half_gt)
