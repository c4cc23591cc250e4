"""Model outputs -> ranked moments in seconds, and the QVHighlights submission format."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from tdfast.errors import InputError
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

    def to_submission(self, qid, query: str, vid: str, decimals: int | None = 4) -> dict:
        """One line of a QVHighlights prediction jsonl; every number rounded to ``decimals``
        (None: written as held, e.g. after ``official_postprocess``)."""
        def num(x) -> float:
            return float(x) if decimals is None else round(float(x), decimals)

        windows = [[num(s), num(e), num(p)] for (s, e), p in zip(self.spans, self.scores)]
        return {"qid": qid, "query": query, "vid": vid, "pred_relevant_windows": windows,
                "pred_saliency_scores": [num(x) for x in self.saliency]}


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


# Post-processing protocols of ``Retriever.predict`` / ``tdfast predict --postprocess``.
POSTPROCESS = ("none", "official")
# The official QD-DETR / TD-DETR inference.py writes every submission through
# PostProcessorDETR(clip_length=2, min_ts_val=0, max_ts_val=150, min_w_l=2, max_w_l=150,
# move_window_method="left", process_func_names=("clip_ts", "round_multiple")): only the
# clipping and rounding run, so the window-length bounds never apply.
OFFICIAL_CLIP_S = 2.0
OFFICIAL_MAX_S = 150.0


def official_postprocess(pred: Prediction) -> Prediction:
    """A ranked Prediction as the official submission files hold it.

    As the official code: each number is first rounded to 4 decimals (``f"{x:.4f}"``), then,
    in float32, spans are clipped to [0, 150] s and rounded to multiples of 2 s
    (``torch.round``: halves to even, so 3 s -> 4 s, 1 s -> 0 s; a window may shrink to zero
    length), scores are rounded to 4 decimals again and saliency passes through float16.
    Order and count are kept (no re-sorting, no NMS).
    """
    def dec4(x) -> float:
        return float(f"{float(x):.4f}")

    spans = np.array([[dec4(x) for x in row] for row in pred.spans], dtype=np.float32).reshape(-1, 2)
    clip = np.float32(OFFICIAL_CLIP_S)
    spans = np.round(np.clip(spans, np.float32(0), np.float32(OFFICIAL_MAX_S)) / clip) * clip  # [k, 2]
    scores = np.array([dec4(np.float32(dec4(p))) for p in pred.scores], dtype=np.float64)
    saliency = pred.saliency.astype(np.float16).astype(np.float32)
    return Prediction(spans=spans, scores=scores, saliency=saliency)


def apply_postprocess(preds: list[Prediction], name: str) -> list[Prediction]:
    """``name`` in ``POSTPROCESS``: "none" returns ``preds``, "official" maps
    ``official_postprocess`` over them."""
    if name not in POSTPROCESS:
        raise InputError(f"postprocess: expected one of {', '.join(POSTPROCESS)}, got {name!r}")
    return preds if name == "none" else [official_postprocess(p) for p in preds]
