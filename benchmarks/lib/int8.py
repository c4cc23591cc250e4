"""Quality of the int8 ONNX Runtime variant against fp32 on a synthetic val set: top-1 moment
agreement (``int8_agreement``) and the change in the val metrics (``int8_metric_change``)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np


def dataset_at(root: Path) -> SimpleNamespace:
    """A dataset directory in the QVHighlights formats (``val.jsonl``, ``video_feats*/``,
    ``text_feats/``; e.g. a demo's ``data/``) as the dataset object the functions below take."""
    return SimpleNamespace(val=root / "val.jsonl", video_dirs=tuple(sorted(root.glob("video_feats*"))),
                           text_dir=root / "text_feats")


def val_pairs(dataset: Any, config: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The prepared (video, query) features of ``dataset.val`` (a ``SyntheticDataset`` or any
    object with ``val``, ``video_dirs``, ``text_dir``), one pair per annotation line."""
    from tdfast.data import FeatureStore, load_annotations

    anns = load_annotations(dataset.val)
    store = FeatureStore(dataset.video_dirs, dataset.text_dir, config)
    return [store.video(a.vid) for a in anns], [store.query(a.qid) for a in anns]


def int8_agreement(fp32: Any, int8: Any, videos: list[np.ndarray], queries: list[np.ndarray],
                   decisive_margin: float = 0.01) -> dict[str, Any]:
    """Compare the int8 Retriever with the fp32 one on the same pairs.

    ``top1_agreement``: fraction of pairs whose highest-scoring moment query (strict argmax
    of the foreground probability) is the same (the issue's metric); ``top1_span_iou_mean``:
    IoU of the two top-1 spans; ``fp32_top1_margin_median``: best minus second fp32 score
    (a small margin lets int8 rounding flip the argmax); ``top1_agreement_decisive``: the
    agreement on pairs whose fp32 margin is >= ``decisive_margin``.
    """
    from tdfast.export.verify import foreground_prob
    from tdfast.spans import cxw_to_xx, elementwise_iou

    a, b = fp32.raw_outputs(videos, queries), int8.raw_outputs(videos, queries)
    pa = foreground_prob(np.stack([x["pred_logits"] for x in a]))  # [N, Q]
    pb = foreground_prob(np.stack([x["pred_logits"] for x in b]))
    ia, ib = pa.argmax(-1), pb.argmax(-1)
    rows = np.arange(len(ia))
    spans_a = np.stack([x["pred_spans"] for x in a])[rows, ia]  # [N, 2] cxw
    spans_b = np.stack([x["pred_spans"] for x in b])[rows, ib]
    # float64: under qemu-x86_64 7.2 (-cpu Haswell) this float32 IoU of a trained model's spans
    # segfaults in numpy, which would end the emulated AVX2 run; the mean IoU is rounded anyway.
    iou = elementwise_iou(cxw_to_xx(spans_a.astype(np.float64)), cxw_to_xx(spans_b.astype(np.float64)))
    top2 = np.sort(pa, -1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    same = ia == ib
    decisive = margin >= decisive_margin
    return {
        "pairs": int(same.size),
        "top1_agreement": round(float(same.mean()), 4),
        "top1_span_iou_mean": round(float(iou.mean()), 4),
        "fp32_top1_margin_median": float(np.median(margin)),
        "max_abs_delta_fg_prob_median": float(np.median(np.abs(pa - pb).max(-1))),
        "decisive_pairs": int(decisive.sum()),
        "top1_agreement_decisive": round(float(same[decisive].mean()), 4) if decisive.any() else None,
    }


QUALITY_METRICS = ("MR-full-mAP", "MR-full-R1@0.5", "HL-min-VeryGood-mAP")


def val_metrics(retriever: Any, anns: list, store: Any, ground_truth: list[dict], top_k: int) -> dict[str, float]:
    """``QUALITY_METRICS`` of ``retriever`` on the annotations ``anns`` (features from
    ``store``), predicted the way ``tdfast predict`` does and scored by ``tdfast.eval``."""
    from tdfast.eval import eval_submission
    from tdfast.retrieval.files import predict_annotations

    submission = [p.to_submission(a.qid, a.query, a.vid)
                  for a, _, p in predict_annotations(retriever, anns, store, top_k=top_k)]
    brief = eval_submission(submission, ground_truth)["brief"]
    return {k: brief[k] for k in QUALITY_METRICS}


def int8_metric_change(fp32: Any, int8: Any, dataset: Any, config: Any) -> dict[str, Any]:
    """The val metrics of both variants on ``dataset.val`` (all ``num_queries`` moments per
    query) and ``{metric}_loss`` = fp32 - int8 (points; positive means int8 scores lower)."""
    from tdfast.data import FeatureStore, load_annotations
    from tdfast.eval import load_jsonl

    anns, gt = load_annotations(dataset.val), load_jsonl(dataset.val)
    store = FeatureStore(dataset.video_dirs, dataset.text_dir, config, cache_size=len(anns))
    a, b = (val_metrics(r, anns, store, gt, config.num_queries) for r in (fp32, int8))
    return {"fp32_val": a, "int8_val": b, **{f"{k}_loss": round(a[k] - b[k], 4) for k in QUALITY_METRICS}}
