"""Boundary validation and postprocessing to seconds."""
import numpy as np
import pytest
import torch

from tdfast import InputError, TDDETRConfig
from tdfast.retrieval import check_inputs
from tdfast.retrieval.postprocess import postprocess
from tdfast.retrieval.postprocess import temporal_nms

from conftest import assert_names, random_batch

C = TDDETRConfig.from_name("tiny")


def _bad(kind):
    v, vm, q, qm = random_batch(C, 2, 8, 4, ragged=False)
    if kind == "video_dim":
        v = torch.randn(2, 8, C.video_dim + 1)
    elif kind == "nan":
        v[1, 3, 5] = float("nan")
    elif kind == "empty_query":
        qm[1] = False
    elif kind == "zero_video":
        vm[0] = False
    elif kind == "too_long":
        v, vm = torch.randn(2, C.max_video_len + 1, C.video_dim), torch.ones(2, C.max_video_len + 1, dtype=torch.bool)
    elif kind == "batch":
        q, qm = q[:1], qm[:1]
    elif kind == "rank":
        v = v[0]
    elif kind == "int":
        q = torch.ones(2, 4, C.text_dim, dtype=torch.int64)
    elif kind == "mask_shape":
        vm = vm[:, :5]
    return v, vm, q, qm


@pytest.mark.parametrize("kind, argument, parts", [
    ("video_dim", "video", (str(C.video_dim), str(C.video_dim + 1))),
    ("nan", "video", ("NaN", "(1, 3, 5)")),
    ("empty_query", "query_mask", ("row 1",)),
    ("zero_video", "video_mask", ("row 0",)),
    ("too_long", "video", (f"max_video_len={C.max_video_len}", str(C.max_video_len + 1))),
    ("batch", "query", ("2", "got 1")),
    ("rank", "video", ("rank-3", "(8, 64)")),
    ("int", "query", ("torch.int64",)),
    ("mask_shape", "video_mask", ("(2, 8)", "(2, 5)")),
])
def test_check_inputs_names_the_argument(kind, argument, parts):
    with pytest.raises(InputError) as e:
        check_inputs(*_bad(kind), C)
    assert_names(e.value, argument, *parts)


def test_postprocess_hand_case():
    spans = torch.tensor([[[0.5, 0.2], [0.1, 0.4], [0.9, 0.4]]])  # cxw, normalized
    logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [-1.0, 0.0]]])  # fg probs .5, .881, .269
    sal = torch.tensor([[1.0, 2.0, 3.0, 9.0]])
    (p,) = postprocess(spans, logits, sal, [3], torch.tensor([60.0]))
    np.testing.assert_allclose(p.scores, [1 / (1 + np.exp(-2)), 0.5, 1 / (1 + np.exp(1))], rtol=1e-6)
    # [0.1-0.2, 0.1+0.2]*60 clamped at 0; [0.4, 0.6]*60; [0.7, 1.1]*60 clamped at 60
    np.testing.assert_allclose(p.spans, [[0.0, 18.0], [24.0, 36.0], [42.0, 60.0]], rtol=1e-5)
    np.testing.assert_array_equal(p.saliency, [1.0, 2.0, 3.0])
    line = p.to_submission(7, "q", "v")
    assert line["pred_relevant_windows"][0] == [0.0, 18.0, 0.8808]


def test_nms_drops_overlaps_in_score_order():
    spans = np.array([[0.0, 10.0], [1.0, 10.0], [20.0, 30.0]])
    keep = temporal_nms(spans, np.array([0.9, 0.95, 0.5]), iou_threshold=0.7)
    assert keep.tolist() == [1, 2]
