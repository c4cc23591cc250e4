"""The module DDP wraps in training: TD-DETR plus QD-DETR's negative-pair pass.

The negative pass (videos with another sample's query) is training-only work, so
it lives here and not in ``TDDETR.forward``; putting both passes in one forward
lets DDP see every parameter's gradient in a single backward.
"""
from __future__ import annotations

from torch import Tensor, nn

from tdfast.model.tddetr import TDDETR


class TrainingModel(nn.Module):
    """``forward(video, video_mask, query, query_mask, neg_query=None, neg_query_mask=None)``.

    Shapes as in ``TDDETR.forward``; neg_query [B, M', text_dim] and neg_query_mask [B, M']
    are the queries paired with each video as negatives. Returns TDDETR's dict plus
    ``saliency_scores_neg`` [B, L] when negatives are given.
    """

    def __init__(self, model: TDDETR) -> None:
        super().__init__()
        self.model = model

    def forward(self, video: Tensor, video_mask: Tensor, query: Tensor, query_mask: Tensor,
                neg_query: Tensor | None = None, neg_query_mask: Tensor | None = None) -> dict:
        out = self.model(video, video_mask, query, query_mask)
        if neg_query is not None:
            memory, _, _ = self.model.encode(video, video_mask, neg_query, neg_query_mask)
            out["saliency_scores_neg"] = self.model.saliency(memory)  # [B, L]
        return out
