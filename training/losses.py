"""Loss terms of TD-DETR (paper Eq. 7-8; formulas of Moment-DETR and QD-DETR).

Every loss is a *sum* over this process's rows divided by a normalizer that
counts the whole global batch (``LossNorm``). Summing the per-process values
over all processes therefore gives exactly the single-process loss, which is
what makes multi-process training match one process (see ``distributed.py``).
In one process the values equal the official means.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from tdfast.spans import cxw_to_xx, pairwise_giou
from tdfast.training.matcher import FOREGROUND, Match, matched_pairs

BACKGROUND = 1 - FOREGROUND
CONTRAST_TAU = 0.5  # QD-DETR's temperature of the rank-contrastive loss
CONTRAST_RANKS = 12  # saliency ranks 1..11 are positives thresholds; the sum is divided by 12 (QD-DETR)
MASKED_SCORE = -1e3  # score given to padded clips before the softmax (QD-DETR)


@dataclass(frozen=True)
class LossNorm:
    """Global counts the summed losses are divided by.

    ``num_samples``: rows of the global batch; ``num_spans``: matched target
    spans in the global batch (sum of min(num_queries, n_i)); ``num_queries``:
    moment queries per row (Q).
    """

    num_samples: float
    num_spans: float
    num_queries: int


def span_losses(pred_spans: Tensor, tgt_spans: list[Tensor], matches: list[Match], norm: LossNorm
                ) -> dict[str, Tensor]:
    """L1 on (center, width) and 1 - gIoU of matched pairs.

    pred_spans [B, Q, 2] normalized cxw; tgt_spans B x [n_i, 2]. Returns ``span_l1``
    (sum |d| / (2 * num_spans): the mean over both coordinates) and ``span_giou``
    (sum (1 - gIoU) / num_spans).
    """
    batch_idx, pred_idx, tgt_idx = matched_pairs(matches)
    src = pred_spans[batch_idx.to(pred_spans.device), pred_idx.to(pred_spans.device)]  # [K, 2]
    tgt = torch.cat([t[j.to(t.device)] for t, (_, j) in zip(tgt_spans, matches)]).to(src)  # [K, 2]
    n = max(float(norm.num_spans), 1.0)
    l1 = (src - tgt).abs().sum() / (2.0 * n)
    giou = torch.diagonal(pairwise_giou(cxw_to_xx(src), cxw_to_xx(tgt)))  # [K]
    return {"span_l1": l1, "span_giou": (1.0 - giou).sum() / n}


def class_loss(pred_logits: Tensor, matches: list[Match], norm: LossNorm, eos_coef: float) -> Tensor:
    """Foreground / background cross-entropy over all B x Q predictions.

    pred_logits [B, Q, 2]; matched predictions are foreground, the rest background with
    weight ``eos_coef``. Sum of weighted NLL / (num_samples * Q), i.e. Moment-DETR's
    unweighted mean of the weighted per-query losses.
    """
    batch_idx, pred_idx, _ = matched_pairs(matches)
    target = torch.full(pred_logits.shape[:2], BACKGROUND, dtype=torch.int64, device=pred_logits.device)
    target[batch_idx.to(target.device), pred_idx.to(target.device)] = FOREGROUND
    weight = pred_logits.new_ones(2)
    weight[BACKGROUND] = eos_coef
    nll = F.cross_entropy(pred_logits.float().transpose(1, 2), target, weight.float(), reduction="none")
    return nll.sum() / (float(norm.num_samples) * norm.num_queries)


def saliency_margin_loss(scores: Tensor, pos_idx: Tensor, neg_idx: Tensor, valid: Tensor,
                         margin: float, norm: LossNorm) -> Tensor:
    """Hinge ``max(0, margin + s[neg] - s[pos])`` over sampled clip pairs (Moment-DETR).

    scores [B, L]; pos_idx, neg_idx [B, P] clip indices; valid [B, P] bool. Sum over valid
    pairs / (num_samples * P) * 2, the official scale.
    """
    pos = scores.gather(1, pos_idx.to(scores.device))  # [B, P]
    neg = scores.gather(1, neg_idx.to(scores.device))
    hinge = (margin + neg - pos).clamp(min=0) * valid.to(scores)
    return hinge.sum() / (float(norm.num_samples) * pos_idx.shape[1]) * 2.0


def rank_contrastive_loss(scores: Tensor, labels: Tensor, video_mask: Tensor, norm: LossNorm,
                          scores_neg: Tensor | None = None) -> Tensor:
    """QD-DETR's rank-aware contrastive saliency loss.

    scores [B, L], labels [B, L] (0 = not relevant; QVHighlights: sum of 3 annotators' 0-4
    scores), video_mask [B, L]; scores_neg [B, L] saliency of the same videos with a wrong
    query (its clips count as label 0). For each rank r in 1..11 the clips with label >= r
    are positives of a softmax over all clips (temperature 0.5); the loss is the mean
    negative log-probability of the positives, summed over r / 12, summed over rows with a
    positive / num_samples.
    """
    mask = video_mask.to(scores)
    if scores_neg is not None:
        scores = torch.cat([scores, scores_neg], dim=1)  # [B, 2L]
        labels = torch.cat([labels, torch.zeros_like(labels)], dim=1)
        mask = torch.cat([mask, mask], dim=1)
    scores = scores.float() * mask + (1.0 - mask) * MASKED_SCORE
    logits = scores / CONTRAST_TAU
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    log_prob = logits - torch.log(logits.exp().sum(1, keepdim=True) + 1e-6)  # [B, 2L]
    ranks = torch.arange(1, CONTRAST_RANKS, device=scores.device, dtype=labels.dtype)  # [R]
    pos = (labels.to(scores.device)[None] >= ranks[:, None, None]).to(scores) * mask  # [R, B, 2L]
    num_pos = pos.sum(-1)  # [R, B]
    mean_log_prob = (pos * log_prob[None]).sum(-1) / (num_pos + 1e-6)  # [R, B]
    loss = -(mean_log_prob * (num_pos > 0).to(scores)).sum()
    return loss / CONTRAST_RANKS / float(norm.num_samples)


def negative_pair_loss(scores_neg: Tensor, video_mask: Tensor, norm: LossNorm) -> Tensor:
    """Clips paired with another sample's query must score low: sum of -log(1 - sigmoid(s)).

    scores_neg [B, L], video_mask [B, L]. Summed over real clips, / num_samples.
    ``softplus(s)`` equals ``-log(1 - sigmoid(s))`` and stays finite where the official
    form overflows (s > ~17 in fp32).
    """
    return (F.softplus(scores_neg.float()) * video_mask.to(torch.float32)).sum() / float(norm.num_samples)


def dyn_match_loss(match: Tensor, gt: Tensor, video_mask: Tensor, norm: LossNorm) -> Tensor:
    """Class-balanced binary cross-entropy of the dynamics attention's match weight against the
    moment's clips: match [B, L] in [0, 1], gt and video_mask [B, L] bool. Each row's moment and
    background clips weigh 1/2 each (a row without either counts only the other); summed over
    rows / ``norm.num_samples``."""
    m = match.float().clamp(1e-6, 1 - 1e-6)
    real = video_mask.bool()
    pos, neg = gt.bool() & real, ~gt.bool() & real
    n_pos, n_neg = pos.sum(1, keepdim=True), neg.sum(1, keepdim=True)  # [B, 1]
    w = pos / n_pos.clamp(min=1) + neg / n_neg.clamp(min=1)
    w = w / ((n_pos > 0).float() + (n_neg > 0).float()).clamp(min=1)  # [B, L]: each row sums to 1
    bce = -(pos * m.log() + neg * (1 - m).log())  # [B, L]
    return (w * bce).sum() / norm.num_samples
