"""The module DDP wraps in training: TD-DETR plus QD-DETR's negative-pair pass.

The negative pass (videos with another sample's query) is training-only work, so
it lives here and not in ``TDDETR.forward``; putting both passes in one forward
lets DDP see every parameter's gradient in a single backward.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from tdfast.model.tddetr import TDDETR


class TrainingModel(nn.Module):
    """``forward(video, video_mask, query, query_mask, neg_query=None, neg_query_mask=None)``.

    Shapes as in ``TDDETR.forward``; neg_query [B, M', text_dim] and neg_query_mask [B, M']
    are the queries paired with each video as negatives. Returns TDDETR's dict plus
    ``saliency_scores_neg`` [B, L] when negatives are given, and with ``dyn_match`` (the
    opt-in ``w_dyn_match`` loss) ``dyn_match`` [B, L]: how much each clip's dynamics attend to
    the query (``MultiHeadAttention.match_weight``), averaged over the TD layers.
    """

    def __init__(self, model: TDDETR, dyn_match: bool = False) -> None:
        super().__init__()
        self.model = model
        self.dyn_match = dyn_match

    def forward(self, video: Tensor, video_mask: Tensor, query: Tensor, query_mask: Tensor,
                neg_query: Tensor | None = None, neg_query_mask: Tensor | None = None) -> dict:
        matches: list[Tensor] = []

        def record(module: nn.Module, args: tuple, _out: Tensor) -> None:
            flow, text, _, bias = args  # attn_dyn(flow, text, text, text_bias)
            matches.append(module.match_weight(flow, text, bias))

        # hooks only around the positive pass: the negative pass's dynamics are not labelled
        hooks = ([layer.cross.attn_dyn.register_forward_hook(record) for layer in self.model.td_layers]
                 if self.dyn_match else [])
        try:
            out = self.model(video, video_mask, query, query_mask)
        finally:
            for h in hooks:
                h.remove()
        if matches:
            out["dyn_match"] = torch.stack(matches).mean(0)  # [B, L]
        if neg_query is not None:
            memory, _, _ = self.model.encode(video, video_mask, neg_query, neg_query_mask)
            out["saliency_scores_neg"] = self.model.saliency(memory)  # [B, L]
        return out
