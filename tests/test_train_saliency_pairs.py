"""Saliency pair sampling and the negative-query pass on hand cases whose answers are worked
out in the comments."""
import torch

from tdfast import TDDETR, TDDETRConfig
from tdfast.training.saliency_pairs import sample_saliency_pairs
from tdfast.training.wrapper import TrainingModel

from conftest import random_batch


def test_hard_pairs_are_the_highest_against_the_lowest_relevant_clip():
    # Row 0: relevant clips 1..4 with labels 1, 4, 2, 3; clip 0 and 5 outside, 6 padding.
    sal = torch.tensor([[0.0, 1.0, 4.0, 2.0, 3.0, 0.0, 0.0]])
    gt = torch.tensor([[False, True, True, True, True, False, False]])
    vm = torch.tensor([[True] * 6 + [False]])
    g = torch.Generator().manual_seed(0)
    pos, neg, valid = sample_saliency_pairs(sal, gt, vm, 2, g)
    assert pos[0, :2].tolist() == [2, 4] and neg[0, :2].tolist() == [1, 3]  # 4 vs 1, 3 vs 2
    assert valid[0].tolist() == [True, True, True, True]
    # easy pairs: positives among the relevant clips, negatives outside every window, never padding
    assert set(pos[0, 2:].tolist()) <= {1, 2, 3, 4} and set(neg[0, 2:].tolist()) <= {0, 5}


def test_tied_labels_give_no_hard_pair_and_no_outside_clip_no_easy_pair():
    sal = torch.tensor([[2.0, 2.0, 2.0]])
    gt = torch.tensor([[True, True, True]])  # the whole video is the moment: nothing outside
    vm = torch.ones(1, 3, dtype=torch.bool)
    _, _, valid = sample_saliency_pairs(sal, gt, vm, 1, torch.Generator().manual_seed(0))
    assert valid.tolist() == [[False, False]]


def test_negative_query_pass_is_the_model_on_the_other_query():
    c = TDDETRConfig.from_name("tiny")
    model = TDDETR(c).eval()
    video, vmask, query, qmask = random_batch(c, 3, 12, 6)
    neg_q, neg_m = query.roll(1, 0), qmask.roll(1, 0)
    with torch.no_grad():
        out = TrainingModel(model)(video, vmask, query, qmask, neg_q, neg_m)
        want = model(video, vmask, neg_q, neg_m)["saliency_scores"]
    assert (out["saliency_scores_neg"] - want)[vmask].abs().max() < 1e-5
    assert (out["saliency_scores_neg"] - out["saliency_scores"])[vmask].abs().max() > 1e-3
