"""Model outputs -> ranked moments in seconds, and the QVHighlights submission format."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from tdfast.spans import cxw_to_xx, pairwise_iou


@dataclass
class Prediction:
    """One (video, query) pair's answer.

    spans [k, 2] (start, end) in seconds, sorted by ``scores`` [k] (foreground probability,
    descending); saliency [L_i] per-clip scores of the video's real clips.
    """

    spans: np.ndarray
    scores: np.ndarray
    saliency: np.ndarray

    def to_submission(self, qid, query: str, vid: str, decimals: int = 4) -> dict:
        """One line of a QVHighlights prediction jsonl."""
        windows = [[round(float(s), decimals), round(float(e), decimals), round(float(p), decimals)]
                   for (s, e), p in zip(self.spans, self.scores)]
        return {"qid": qid, "query": query, "vid": vid, "pred_relevant_windows": windows,
                "pred_saliency_scores": [round(float(x), decimals) for x in self.saliency]}


def temporal_nms(spans: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS on score-sorted spans [k, 2]; returns kept indices in score order."""
    order = np.argsort(-scores, kind="stable")
    iou = pairwise_iou(spans, spans)
    keep: list[int] = []
    for i in order:
        if all(iou[i, j] < iou_threshold for j in keep):
            keep.append(int(i))
    return np.asarray(keep, dtype=np.int64)


def moments_in_seconds(pred_spans: Tensor, pred_logits: Tensor, durations: Tensor
                       ) -> tuple[np.ndarray, np.ndarray]:
    """pred_spans [B, Q, 2] normalized (center, width), pred_logits [B, Q, 2] (fg, bg),
    durations [B] seconds (the length the normalized spans refer to) -> spans [B, Q, 2]
    (start, end) seconds clamped to [0, duration] and foreground probabilities [B, Q], in
    query order."""
    scores = torch.softmax(pred_logits.float(), dim=-1)[..., 0]  # [B, Q]
    secs = durations.float()[:, None, None]
    spans = cxw_to_xx(pred_spans.float()) * secs  # [B, Q, 2]
    spans = torch.minimum(spans.clamp(min=0), secs)
    return spans.cpu().numpy(), scores.cpu().numpy()


def postprocess(pred_spans: Tensor, pred_logits: Tensor, saliency: Tensor, lengths: Sequence[int],
                durations: Tensor, top_k: int | None = None, nms_iou: float | None = None
                ) -> list[Prediction]:
    """A batch of raw outputs -> one ranked ``Prediction`` per row.

    Shapes as in ``moments_in_seconds``; saliency [B, L]; ``lengths``: each row's real clips.
    Moments are sorted by foreground probability, optionally NMS-ed, cut to ``top_k``.
    """
    spans, scores = moments_in_seconds(pred_spans, pred_logits, durations)
    sal = saliency.float().cpu().numpy()
    return [Prediction(*select_moments(spans[i], scores[i], top_k, nms_iou), saliency=sal[i, :n])
            for i, n in enumerate(lengths)]


def select_moments(spans: np.ndarray, scores: np.ndarray, top_k: int | None = None,
                   nms_iou: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """spans [k, 2], scores [k] -> the same sorted by score (descending, stable), then
    optional NMS at ``nms_iou``, then the first ``top_k``."""
    order = np.argsort(-scores, kind="stable")
    s, p = spans[order], scores[order]
    if nms_iou is not None:
        keep = temporal_nms(s, p, nms_iou)
        s, p = s[keep], p[keep]
    if top_k is not None:
        s, p = s[:top_k], p[:top_k]
    return s, p
