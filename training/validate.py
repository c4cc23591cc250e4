"""Per-epoch validation: predictions in the submission format, scored by ``tdfast.eval``."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from tdfast.presets import DEFAULT_PROTOCOL, PROTOCOLS
from tdfast.model.tddetr import TDDETR

if TYPE_CHECKING:
    from tdfast.data.dataset import MomentDataset


def predict_submission(model: TDDETR, dataset: "MomentDataset", device: torch.device,
                       with_saliency: bool = True) -> list[dict]:
    """``model``'s submission records for every query of ``dataset``, through the same path
    as ``tdfast predict`` (``Retriever`` on the eager backend, fp32; all ``num_queries``
    moments per query, ranked). The model is put back in its training mode afterwards."""
    from tdfast.retrieval.retriever import Retriever
    from tdfast.retrieval.files import predict_annotations

    was_training = model.training
    try:
        retriever = Retriever(model, device=device)  # eval mode, the same module (no copy)
        records = []
        for a, _, p in predict_annotations(retriever, dataset.annotations, dataset.store,
                                           top_k=model.config.num_queries):
            rec = p.to_submission(a.qid, a.query, a.vid)
            if not with_saliency:
                rec.pop("pred_saliency_scores")
            records.append(rec)
    finally:
        model.train(was_training)
    return records


def validate(model: TDDETR, dataset: "MomentDataset", ground_truth: list[dict],
             device: torch.device, protocol: str = DEFAULT_PROTOCOL) -> tuple[dict, list[dict]]:
    """Metrics of ``model`` on a labelled split by ``protocol`` (``TrainConfig.eval_protocol``)
    -> (metrics, submission).

    qvhighlights: the official QVHighlights structure; highlight metrics only when every
    ground-truth record has saliency scores. charades: R1@{0.3,0.5,0.7}, R5, mIoU (no saliency).
    """
    protocol = PROTOCOLS[protocol]
    with_saliency = protocol.highlights and all("saliency_scores" in g for g in ground_truth)
    submission = predict_submission(model, dataset, device, with_saliency)
    return protocol.evaluate(submission, ground_truth), submission


def selection_score(brief: dict, protocol: str) -> tuple[float, ...]:
    """What best-checkpoint selection maximizes (tuples compare in order); a missing or None
    value counts as -inf."""
    values = (brief.get(k) for k in PROTOCOLS[protocol].select)
    return tuple(float("-inf") if v is None else float(v) for v in values)
