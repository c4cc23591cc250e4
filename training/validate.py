"""Per-epoch validation: predictions in the submission format, scored by ``tdfast.eval``."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Iterable

import torch

from tdfast.model.postprocess import postprocess
from tdfast.model.tddetr import TDDETR

SELECT_METRIC = "MR-full-mAP"  # the checkpoint kept as best maximizes this (paper's main number)


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


def validate(model: TDDETR, batches: Iterable[dict[str, Any]], ground_truth: list[dict],
             device: torch.device, autocast: Any = None) -> tuple[dict, list[dict]]:
    """Official QVHighlights metrics of ``model`` on a labelled split -> (metrics, submission).

    Highlight metrics only when every ground-truth record has saliency scores
    (Charades-STA / TACoS have none).
    """
    from tdfast.eval import eval_submission

    with_saliency = all("saliency_scores" in g for g in ground_truth)
    submission = predict_submission(model, batches, device, autocast, with_saliency)
    return eval_submission(submission, ground_truth), submission


def selection_score(metrics: dict) -> float:
    """The value best-checkpoint selection maximizes (None counts as -inf)."""
    value = metrics.get("brief", {}).get(SELECT_METRIC)
    return float("-inf") if value is None else float(value)
