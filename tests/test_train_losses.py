"""Each loss against a value computed by hand; weighting; split-batch sums equal the whole batch."""
from __future__ import annotations

import math

import pytest
import torch

from tdfast.training.config import TrainConfig
from tdfast.spans import pairwise_giou
from tdfast.training.criterion import Criterion, loss_norm
from tdfast.training.prepare import TrainingBatch
from tdfast.training.losses import (LossNorm, class_loss, negative_pair_loss, rank_contrastive_loss,
                                    saliency_margin_loss, span_losses)

ONE = LossNorm(num_samples=1, num_spans=1, num_queries=2)
MATCH_Q1 = [(torch.tensor([1]), torch.tensor([0]))]  # query 1 <-> target 0


def test_span_l1_and_giou_by_hand():
    pred = torch.tensor([[[0.9, 0.1], [0.5, 0.2]]])  # query 1 = [0.4, 0.6]
    target = [torch.tensor([[0.4, 0.4]])]  # [0.2, 0.6]
    out = span_losses(pred, target, MATCH_Q1, ONE)
    assert out["span_l1"].item() == pytest.approx((0.1 + 0.2) / 2, abs=1e-6)
    # IoU 0.2 / 0.4 = 0.5, enclosing == union -> gIoU 0.5
    assert out["span_giou"].item() == pytest.approx(0.5, abs=1e-6)


def test_giou_loss_identical_is_zero_and_disjoint_beyond_one():
    same = span_losses(torch.tensor([[[0.0, 0.0], [0.3, 0.2]]]), [torch.tensor([[0.3, 0.2]])], MATCH_Q1, ONE)
    assert same["span_giou"].item() == pytest.approx(0.0, abs=1e-7)  # gIoU = 1
    far = span_losses(torch.tensor([[[0.0, 0.0], [0.15, 0.1]]]), [torch.tensor([[0.55, 0.1]])], MATCH_Q1, ONE)
    # [0.1, 0.2] vs [0.5, 0.6]: gIoU = 0 - (0.5 - 0.2) / 0.5 = -0.6 < 0
    assert far["span_giou"].item() == pytest.approx(1.6, abs=1e-6)


def test_giou_of_identical_spans_is_one_and_of_disjoint_spans_negative():
    spans = torch.tensor([[0.1, 0.3], [0.5, 0.9], [0.0, 1.0]])  # [start, end]
    assert torch.allclose(torch.diagonal(pairwise_giou(spans, spans)), torch.ones(3), atol=1e-7)
    giou = pairwise_giou(spans[:1], spans[1:2]).item()  # [0.1, 0.3] vs [0.5, 0.9]: hull 0.8, union 0.6
    assert giou < 0 and giou == pytest.approx(-(0.8 - 0.6) / 0.8, abs=1e-6)


def test_class_loss_by_hand():
    logits = torch.tensor([[[0.0, 0.0], [1.0, 0.0]]])  # query 1 matched: foreground (index 0)
    fg = math.log(1 + math.exp(-1.0))  # -log softmax([1, 0])[0]
    bg = 0.1 * math.log(2.0)  # eos_coef * -log softmax([0, 0])[1]
    assert class_loss(logits, MATCH_Q1, ONE, eos_coef=0.1).item() == pytest.approx((fg + bg) / 2, abs=1e-6)


def test_saliency_margin_by_hand():
    scores = torch.tensor([[1.0, 0.5, 0.9, 0.0]])
    pos, neg = torch.tensor([[0, 0]]), torch.tensor([[2, 3]])
    valid = torch.tensor([[True, False]])  # second pair ignored
    # max(0, 0.2 + 0.9 - 1.0) = 0.1, / (1 sample * 2 pairs) * 2
    out = saliency_margin_loss(scores, pos, neg, valid, 0.2, ONE)
    assert out.item() == pytest.approx(0.1, abs=1e-6)


def _log_softmax(xs):
    m = max(xs)
    lse = m + math.log(sum(math.exp(x - m) for x in xs) + 1e-6 * math.exp(-m))
    return [x - lse for x in xs]


def test_rank_contrastive_by_hand():
    scores = torch.tensor([[1.0, 0.0, 0.0, 7.0]])
    labels = torch.tensor([[2.0, 1.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, False]])  # clip 3 is padding: its 7.0 must not count
    lp = _log_softmax([1.0 / 0.5, 0.0, 0.0])
    # rank 1: positives {0, 1}; rank 2: {0}; ranks 3..11: none; sum / 12
    expected = (-(lp[0] + lp[1]) / 2 - lp[0]) / 12
    out = rank_contrastive_loss(scores, labels, mask, ONE)
    assert out.item() == pytest.approx(expected, abs=1e-5)


def test_rank_contrastive_with_negative_pair_scores():
    scores = torch.tensor([[1.0, 0.0]])
    neg = torch.tensor([[3.0, -1.0]])  # the wrong-query clips join the softmax as label 0
    labels = torch.tensor([[1.0, 0.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    lp = _log_softmax([2.0, 0.0, 6.0, -2.0])
    out = rank_contrastive_loss(scores, labels, mask, ONE, scores_neg=neg)
    assert out.item() == pytest.approx(-lp[0] / 12, abs=1e-5)


def test_negative_pair_by_hand():
    neg = torch.tensor([[0.0, 2.0, 50.0]])
    mask = torch.tensor([[True, True, False]])
    expected = -math.log(1 - 0.5) - math.log(1 - 1 / (1 + math.exp(-2.0)))
    assert negative_pair_loss(neg, mask, ONE).item() == pytest.approx(expected, abs=1e-6)


def _outputs_and_batch(seed: int, b: int = 4, q: int = 3, length: int = 6):
    g = torch.Generator().manual_seed(seed)
    out = {"pred_spans": torch.rand(b, q, 2, generator=g) * 0.5 + 0.1,
           "pred_logits": torch.randn(b, q, 2, generator=g),
           "saliency_scores": torch.randn(b, length, generator=g),
           "saliency_scores_neg": torch.randn(b, length, generator=g)}
    out["aux_outputs"] = [{"pred_spans": torch.rand(b, q, 2, generator=g) * 0.5 + 0.1,
                           "pred_logits": torch.randn(b, q, 2, generator=g)}]
    mask = torch.arange(length)[None] < torch.tensor([6, 5, 4, 6])[:, None]
    gt = torch.zeros(b, length, dtype=torch.bool)
    gt[:, 1:3] = True
    # the criterion reads labels, the video mask and the saliency pairs; video and query are stand-ins
    batch = TrainingBatch(
        video=torch.zeros(b, length, 1), video_mask=mask, query=torch.zeros(b, 1, 1),
        query_mask=torch.ones(b, 1, dtype=torch.bool), meta=[{"qid": i} for i in range(b)],
        spans=[torch.tensor([[0.3, 0.2]])] * 2 + [torch.tensor([[0.3, 0.2], [0.7, 0.1]])] * 2,
        saliency=gt.float() * torch.tensor([3.0, 5.0, 0, 0, 0, 0]), gt_clip_mask=gt, owner=torch.arange(b),
        sal_pos_idx=torch.tensor([[2, 1]] * b), sal_neg_idx=torch.tensor([[1, 4]] * b),
        sal_pair_valid=torch.ones(b, 2, dtype=torch.bool))
    return out, batch


def test_total_is_the_weighted_sum_of_all_terms():
    config = TrainConfig.from_name("tiny")
    out, batch = _outputs_and_batch(0)
    terms = Criterion(config)(out, batch, loss_norm(batch, 3))
    w = {"span_l1": 10.0, "span_giou": 1.0, "class": 4.0, "saliency_margin": 1.0,
         "saliency_contrast": 1.0, "negative": 4.0}
    expected = sum(w[k] * terms[k].item() + w.get(k, 0) * terms.get(f"{k}_0", torch.tensor(0.0)).item()
                   for k in w)
    assert set(terms) == {*w, "span_l1_0", "span_giou_0", "class_0", "loss"}
    assert terms["loss"].item() == pytest.approx(expected, rel=1e-6)
    # aux_loss off: the earlier decoder layers' terms are left out
    no_aux = Criterion(TrainConfig.from_name("tiny", aux_loss=False))(out, batch, loss_norm(batch, 3))
    assert set(no_aux) == {*w, "loss"}
    assert no_aux["loss"].item() == pytest.approx(sum(w[k] * terms[k].item() for k in w), rel=1e-6)


def test_split_batch_sums_to_whole_batch():
    """What multi-process training relies on: per-part losses with global counts add up."""
    config = TrainConfig.from_name("tiny")
    out, batch = _outputs_and_batch(1)
    norm = loss_norm(batch, 3)
    whole = Criterion(config)(out, batch, norm)

    def part(rows):
        o = {k: v[rows] for k, v in out.items() if k != "aux_outputs"}
        o["aux_outputs"] = [{k: v[rows] for k, v in out["aux_outputs"][0].items()}]
        return Criterion(config)(o, batch.rows(torch.tensor(rows)), norm)

    a, b = part([0, 2]), part([1, 3])
    for k in whole:
        assert (a[k] + b[k]).item() == pytest.approx(whole[k].item(), rel=1e-6, abs=1e-7), k
