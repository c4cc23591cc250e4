"""Zero-mask protocol (paper Table 2): exactly the GT clips zeroed with the mask untouched,
the gIoU loss by hand, and the analysis end to end on planted content / context oracles."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tdfast import Retriever
from tdfast.cli import main as cli_main
from tdfast.data.annotations import Annotation, load_annotations, write_annotations
from tdfast.data.features import FeatureStore, write_npz
from tdfast.errors import InputError
from tdfast.experiments import gt_clip_mask, spurious_analysis, table2_metrics, top1_giou_loss, zero_gt_clips
from tdfast.experiments.spurious import predict_split
from tdfast.model.config import TDDETRConfig
from tdfast.retrieval.postprocess import Prediction
from tdfast.model.tddetr import TDDETR


def test_gt_clip_mask_marks_every_overlapped_clip():
    ann = Annotation(qid=1, query="q", vid="v", duration=20.0, windows=((3.0, 5.0), (18.5, 30.0)))
    # 2-s clips: [3, 5) touches clips 1 and 2; [18.5, 30) is cut at the 8-clip horizon (16 s): dropped
    assert gt_clip_mask(ann, 8, 2.0).tolist() == [False, True, True, False, False, False, False, False]
    assert np.flatnonzero(gt_clip_mask(ann, 10, 2.0)).tolist() == [1, 2, 9]
    with pytest.raises(InputError, match=r"<memory>: expected relevant_windows .* without labels \(qid 7\)"):
        gt_clip_mask(Annotation(qid=7, query="q", vid="v", duration=4.0), 2, 2.0)


def test_zero_gt_clips_zeroes_exactly_the_marked_rows():
    video = np.arange(1, 13, dtype=np.float32).reshape(6, 2)
    out = zero_gt_clips(video, np.array([0, 1, 1, 0, 0, 1], dtype=bool))
    assert out.tolist() == [[1, 2], [0, 0], [0, 0], [7, 8], [9, 10], [0, 0]]
    assert video[1].tolist() == [3, 4]  # the input is not modified
    with pytest.raises(InputError, match=r"clip_mask: expected shape \(6,\).*got \(5,\)"):
        zero_gt_clips(video, np.zeros(5, dtype=bool))


def test_model_sees_gt_rows_zeroed_and_the_mask_unchanged(tmp_path):
    """Through the real Retriever: the model's video input is the prepared features with the
    GT clips' rows 0, and its video mask is the unmasked run's (True on every real clip)."""
    config = TDDETRConfig.from_name("tiny", video_dim=4, text_dim=3)
    rng = np.random.default_rng(0)
    anns = [Annotation(qid=0, query="a", vid="v0", duration=14.0, windows=((4.0, 8.0),)),
            Annotation(qid=1, query="b", vid="v1", duration=10.0, windows=((0.0, 2.0), (7.0, 9.0)))]
    for a, n in zip(anns, (7, 5)):
        write_npz(tmp_path / "v" / f"{a.vid}.npz", features=rng.standard_normal((n, 4)).astype(np.float32))
        write_npz(tmp_path / "t" / f"qid{a.qid}.npz", last_hidden_state=rng.standard_normal((3, 3)).astype(np.float32))
    torch.manual_seed(0)
    model = TDDETR(config).eval()
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append([a.clone() for a in args[:2]]))
    store = FeatureStore(tmp_path / "v", tmp_path / "t", config)
    retriever = Retriever(model)
    _, zeroed = predict_split(retriever, anns, store, zero_gt=True)
    (video, mask), = seen
    _, _ = predict_split(retriever, anns, store, zero_gt=False)
    (video_plain, mask_plain) = seen[1]
    assert zeroed == 2 + 3
    assert torch.equal(mask, mask_plain)
    assert mask[0, :7].all() and mask[1, :5].all() and not mask[1, 5:].any()
    for row, (a, gt_rows) in enumerate(zip(anns, ([2, 3], [0, 3, 4]))):
        n = int(mask[row].sum())
        prepared = torch.from_numpy(store.video(a.vid))
        assert torch.equal(video_plain[row, :n], prepared)
        zero = torch.zeros(n, dtype=torch.bool)
        zero[gt_rows] = True
        assert torch.equal(video[row, :n][zero], torch.zeros(int(zero.sum()), 4))
        assert torch.equal(video[row, :n][~zero], prepared[~zero])
        assert prepared[zero].abs().min() > 0  # the zeros are the masking's, not the data's


def test_top1_giou_loss_by_hand():
    sub = [{"qid": 1, "pred_relevant_windows": [[0, 10, 0.9], [5, 15, 0.8]]},
           {"qid": 2, "pred_relevant_windows": [[0, 2, 0.7]]},
           {"qid": 3, "pred_relevant_windows": [[4, 6, 0.5]]}]
    gt = [{"qid": 1, "relevant_windows": [[5, 15]]},  # IoU 5/15, enclosure = union: gIoU 1/3
          {"qid": 2, "relevant_windows": [[6, 8]]},  # disjoint: 0 - (8 - 4) / 8 = -0.5
          {"qid": 3, "relevant_windows": [[20, 30], [5, 7]]}]  # best GT [5, 7]: 1/3
    expected = np.mean([1 - 1 / 3, 1 + 0.5, 1 - 1 / 3])
    assert top1_giou_loss(sub, gt) == pytest.approx(expected, abs=1e-12)


class _Oracle:
    """Predicts one window from planted feature columns: ``content`` the clips whose column 0
    is positive (clip 0 if none), ``context`` the gap between the clips whose column 1 is."""

    def __init__(self, config: TDDETRConfig, cue: str):
        self.config, self.cue = config, cue

    def predict(self, videos, queries, top_k=10, nms_iou=None, sliding_window=False, postprocess="none"):
        out = []
        for v in videos:
            c = self.config.clip_len
            if self.cue == "content":
                on = np.flatnonzero(v[:, 0] > 0.1)
                span = [on[0] * c, (on[-1] + 1) * c] if len(on) else [0.0, c]
            else:
                on = np.flatnonzero(v[:, 1] > 0.1)
                span = [(on[0] + 1) * c, on[-1] * c]
            out.append(Prediction(np.array([span]), np.array([0.9]), np.zeros(len(v))))
        return out


@pytest.fixture
def planted(tmp_path):
    """Two videos: column 0 marks the GT clips, column 1 their two flanking context clips,
    column 2 is background everywhere."""
    anns = [Annotation(qid=0, query="a", vid="v0", duration=16.0, windows=((4.0, 8.0),)),
            Annotation(qid=1, query="b", vid="v1", duration=12.0, windows=((2.0, 4.0),))]
    for a, n, gt, ctx in ((anns[0], 8, [2, 3], [1, 4]), (anns[1], 6, [1], [0, 2])):
        f = np.zeros((n, 4), dtype=np.float32)
        f[:, 2] = 0.5
        f[gt, 0] = 1.0
        f[ctx, 1] = 1.0
        write_npz(tmp_path / "v" / f"{a.vid}.npz", features=f)
        write_npz(tmp_path / "t" / f"qid{a.qid}.npz", last_hidden_state=np.ones((2, 3), dtype=np.float32))
    write_annotations(anns, tmp_path / "ann.jsonl")
    return tmp_path


def test_analysis_separates_content_from_context(planted):
    config = TDDETRConfig.from_name("tiny", video_dim=4, text_dim=3)
    args = (planted / "ann.jsonl", [planted / "v"], planted / "t")
    content = spurious_analysis(_Oracle(config, "content"), *args)
    context = spurious_analysis(_Oracle(config, "context"), *args)
    perfect = {"MR-full-R1@0.3": 100.0, "MR-full-R1@0.5": 100.0, "MR-full-R1@0.7": 100.0,
               "MR-full-mIoU": 100.0, "MR-full-mAP@0.5": 100.0, "MR-full-mAP@0.75": 100.0,
               "MR-full-mAP": 100.0, "HL-min-VeryGood-mAP": None, "HL-min-VeryGood-Hit1": None,
               "gIoU-loss": 0.0}
    assert content["normal"] == perfect and context["normal"] == perfect and context["masked"] == perfect
    # content oracle with GT zeroed: [0, 2] s on both; v0 GT [4, 8]: gIoU -2/8, v1 GT [2, 4]: 0
    masked = content["masked"]
    assert [masked[k] for k in ("MR-full-R1@0.3", "MR-full-mIoU", "MR-full-mAP")] == [0.0, 0.0, 0.0]
    assert masked["gIoU-loss"] == pytest.approx((1.25 + 1.0) / 2)
    assert content["drop"]["MR-full-R1@0.5"] == 100.0 and context["drop"]["MR-full-R1@0.5"] == 0.0
    assert (content["queries"], content["zeroed_clips"], content["total_clips"]) == (2, 3, 14)


def test_table2_metrics_keeps_highlights_when_labelled():
    gt = [{"qid": 0, "query": "a", "vid": "v", "duration": 8.0, "relevant_windows": [[2, 6]],
           "relevant_clip_ids": [1, 2], "saliency_scores": [[4, 4, 4], [1, 1, 1]]}]
    sub = [{"qid": 0, "pred_relevant_windows": [[2, 4, 0.9], [2, 6, 0.5]],
            "pred_saliency_scores": [0.0, 1.0, 0.5, 0.0]}]
    m = table2_metrics(sub, gt)
    # top-1 [2, 4] vs [2, 6]: IoU 0.5; gIoU 0.5 (the enclosure is the union)
    assert [m[k] for k in ("MR-full-R1@0.3", "MR-full-R1@0.5", "MR-full-R1@0.7", "MR-full-mIoU")] == \
        [100.0, 100.0, 0.0, 50.0]
    assert m["gIoU-loss"] == 0.5
    assert m["HL-min-VeryGood-Hit1"] == 100.0  # clip 1 (score 12) is the top-saliency clip


def test_analyze_cli_writes_the_function_report(planted, tmp_path, capsys):
    config = TDDETRConfig.from_name("tiny", video_dim=4, text_dim=3)
    torch.manual_seed(0)
    TDDETR(config).save_pretrained(tmp_path / "ckpt")
    code = cli_main(["analyze", "spurious", str(tmp_path / "ckpt"), "--ann", str(planted / "ann.jsonl"),
                     "--video-feats", str(planted / "v"), "--text-feats", str(planted / "t"),
                     "--out", str(tmp_path / "r.json")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "GT zeroed" in printed and "the masked run zeroed 3 of 14" in printed
    report = json.loads((tmp_path / "r.json").read_text())
    expected = spurious_analysis(Retriever.from_pretrained(tmp_path / "ckpt"), planted / "ann.jsonl",
                                 [planted / "v"], planted / "t")
    assert report == {"checkpoint": str(tmp_path / "ckpt"), "backend": "eager", **expected}


def test_unlabelled_split_is_refused(planted, tmp_path):
    anns = load_annotations(planted / "ann.jsonl")
    write_annotations([Annotation(a.qid, a.query, a.vid, a.duration) for a in anns], tmp_path / "test.jsonl")
    config = TDDETRConfig.from_name("tiny", video_dim=4, text_dim=3)
    with pytest.raises(InputError, match=r"--ann .*test.jsonl.*expected relevant_windows.*test.jsonl:1"):
        spurious_analysis(_Oracle(config, "content"), tmp_path / "test.jsonl", [planted / "v"], planted / "t")
