"""Per-epoch validation: predictions in the submission format, scored by ``tdfast.eval``."""
from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Iterable

import torch

from tdfast.eval import eval_charades, eval_submission
from tdfast.model.postprocess import postprocess
from tdfast.model.tddetr import TDDETR


@torch.no_grad()
def predict_submission(model: TDDETR, batches: Iterable[dict[str, Any]], device: torch.device,
                       autocast: Any = None, with_saliency: bool = True) -> list[dict]:
    """Run ``model`` (eval mode) over collated batches -> one submission record per query.

    Normalized spans are scaled by ``num_clips * clip_len`` seconds, the length the
    training labels are normalized by (``tdfast.data.labels``).
    """
    was_training = model.training
    model.eval()
    records = []
    clip_len = model.config.clip_len
    try:
        for batch in batches:
            with autocast or nullcontext():
                out = model(batch["video"].to(device), batch["video_mask"].to(device),
                            batch["query"].to(device), batch["query_mask"].to(device))
            lengths = torch.tensor([m["num_clips"] * clip_len for m in batch["meta"]])
            preds = postprocess(out["pred_spans"], out["pred_logits"], out["saliency_scores"],
                                batch["video_mask"], lengths)
            for p, m in zip(preds, batch["meta"]):
                rec = p.to_submission(m["qid"], m["query"], m["vid"])
                if not with_saliency:
                    rec.pop("pred_saliency_scores")
                records.append(rec)
    finally:
        model.train(was_training)
    return records


@dataclass(frozen=True)
class Protocol:
    """How validation scores a split: ``evaluate`` (submission, ground truth) -> metrics with a
    ``brief`` dict; ``select``: the ``brief`` keys best-checkpoint selection maximizes, compared
    in order (later keys break ties); ``highlights``: whether it scores saliency predictions."""

    evaluate: Callable[[list[dict], list[dict]], dict]
    select: tuple[str, ...]
    highlights: bool


PROTOCOLS = {  # config.eval_protocol -> Protocol; QVHighlights selects by the paper's main number
    "qvhighlights": Protocol(eval_submission, ("MR-full-mAP",), highlights=True),
    "charades": Protocol(eval_charades, ("MR-full-R1@0.5", "MR-full-mIoU"), highlights=False),
}


def validate(model: TDDETR, batches: Iterable[dict[str, Any]], ground_truth: list[dict],
             device: torch.device, autocast: Any = None) -> tuple[dict, list[dict]]:
    """Metrics of ``model`` on a labelled split by ``model.config.eval_protocol`` ->
    (metrics, submission).

    qvhighlights: the official QVHighlights structure; highlight metrics only when every
    ground-truth record has saliency scores. charades: R1@{0.3,0.5,0.7}, R5, mIoU (no saliency).
    """
    protocol = PROTOCOLS[model.config.eval_protocol]
    with_saliency = protocol.highlights and all("saliency_scores" in g for g in ground_truth)
    submission = predict_submission(model, batches, device, autocast, with_saliency)
    return protocol.evaluate(submission, ground_truth), submission


def selection_score(brief: dict, protocol: str) -> tuple[float, ...]:
    """What best-checkpoint selection maximizes (tuples compare in order); a missing or None
    value counts as -inf."""
    values = (brief.get(k) for k in PROTOCOLS[protocol].select)
    return tuple(float("-inf") if v is None else float(v) for v in values)
