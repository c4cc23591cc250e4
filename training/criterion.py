"""The total training loss: matching + every loss term with its config weight (paper Eq. 7-9)."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from torch import Tensor

from tdfast.training.config import TrainConfig
from tdfast.training.losses import (LossNorm, class_loss, negative_pair_loss, rank_contrastive_loss,
                                    saliency_margin_loss, span_losses)
from tdfast.training.matcher import hungarian_match

if TYPE_CHECKING:
    from tdfast.data.batch import Batch
    from tdfast.training.prepare import TrainingBatch

_AUX_SUFFIX = re.compile(r"_\d+$")  # "class_0" (aux decoder layer 0) -> "class"


def loss_norm(batch: Batch, num_queries: int) -> LossNorm:
    """Counts of a (global) labelled batch: rows and matchable target spans (min(Q, n_i) per row)."""
    spans = sum(min(num_queries, int(s.shape[0])) for s in batch.spans)
    return LossNorm(num_samples=float(len(batch.spans)), num_spans=float(spans), num_queries=num_queries)


class Criterion:
    """Weighted sum of the losses; weights and matching costs from one config.

    ``__call__(outputs, batch, norm)`` takes the training wrapper's outputs (``pred_spans``,
    ``pred_logits``, ``saliency_scores``, optional ``aux_outputs`` and
    ``saliency_scores_neg``) and a ``TrainingBatch`` (of which it reads ``spans``,
    ``saliency``, ``video_mask`` and the saliency pairs). Returns a dict
    of unweighted terms (aux layers suffixed ``_0``, ``_1``...) and ``loss``, the weighted
    total to back-propagate.
    """

    def __init__(self, config: TrainConfig) -> None:
        self.config = c = config
        self.weights = {
            "span_l1": c.w_span_l1, "span_giou": c.w_span_giou, "class": c.w_class,
            "saliency_margin": c.w_saliency_margin, "saliency_contrast": c.w_saliency_contrast,
            "negative": c.w_negative,
        }

    def moment_terms(self, out: dict[str, Tensor], tgt_spans: list[Tensor], norm: LossNorm
                     ) -> dict[str, Tensor]:
        """Span L1, span gIoU and class loss of one decoder layer's outputs, after matching."""
        c = self.config
        matches = hungarian_match(out["pred_spans"], out["pred_logits"], tgt_spans,
                                  c.w_class, c.w_span_l1, c.w_span_giou)
        terms = span_losses(out["pred_spans"].float(), tgt_spans, matches, norm)
        terms["class"] = class_loss(out["pred_logits"], matches, norm, c.eos_coef)
        return terms

    def __call__(self, outputs: dict[str, Any], batch: TrainingBatch, norm: LossNorm
                 ) -> dict[str, Tensor]:
        c = self.config
        terms = self.moment_terms(outputs, batch.spans, norm)
        for i, aux in enumerate(outputs.get("aux_outputs", []) if c.aux_loss else []):
            terms.update({f"{k}_{i}": v for k, v in self.moment_terms(aux, batch.spans, norm).items()})
        scores = outputs["saliency_scores"].float()  # [B, L]
        video_mask = batch.video_mask.to(scores.device)
        labels = batch.saliency.to(scores.device)
        neg = outputs.get("saliency_scores_neg")
        terms["saliency_margin"] = saliency_margin_loss(
            scores, batch.sal_pos_idx, batch.sal_neg_idx, batch.sal_pair_valid.to(scores.device),
            c.saliency_margin, norm)
        terms["saliency_contrast"] = rank_contrastive_loss(
            scores, labels, video_mask, norm, None if neg is None else neg.float())
        if neg is not None:
            terms["negative"] = negative_pair_loss(neg, video_mask, norm)
        terms["loss"] = sum(self.weights[_AUX_SUFFIX.sub("", k)] * v for k, v in terms.items())
        return terms
