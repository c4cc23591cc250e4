"""``spurious_analysis``: the paper's Table 2 protocol for one checkpoint on one labelled split.

Every query is predicted twice through a ``Retriever``: on the video as it is, and on
the video with its ground-truth clips zeroed (``masking``). Both prediction sets are
scored with ``metrics.table2_metrics``. A model that localizes the moment from what
happens inside it loses its recall under masking; one that still finds the (now
blank) moment reads it off the context (the paper's "spurious" R1 / mAP: lower is
better). The gIoU loss of the unmasked run is the paper's "gIoU loss w/o masks".
"""
from __future__ import annotations

import os
from typing import Sequence

from tdfast.data.annotations import Annotation, load_annotations
from tdfast.data.features import FeatureStore
from tdfast.defaults import TOP_K
from tdfast.errors import InputError
from tdfast.experiments.masking import gt_clip_mask, zero_gt_clips
from tdfast.experiments.metrics import GIOU_KEY, TABLE2_KEYS, table2_metrics
from tdfast.retrieval.files import predict_annotations

CONDITIONS = ("normal", "masked")


def predict_split(retriever, annotations: list[Annotation], store: FeatureStore, *, zero_gt: bool,
                  top_k: int = TOP_K, block: int = 256) -> tuple[list[dict], int]:
    """Submission records (``Prediction.to_submission``) for every annotation, in order, and
    the number of clips zeroed. Videos are loaded as ``tdfast predict`` loads them
    (normalised, truncated to ``max_video_len``); spans in seconds of ``L * clip_len``."""
    clip_len = retriever.config.clip_len
    zeroed = 0

    def zero(ann: Annotation, video):
        nonlocal zeroed
        mask = gt_clip_mask(ann, video.shape[0], clip_len)
        zeroed += int(mask.sum())
        return zero_gt_clips(video, mask)

    records = [p.to_submission(a.qid, a.query, a.vid) for a, _, p in
               predict_annotations(retriever, annotations, store, top_k, video_fn=zero if zero_gt else None,
                                   block=block)]
    return records, zeroed


def spurious_analysis(retriever, ann_path: str | os.PathLike, video_dirs: Sequence[str | os.PathLike],
                      text_dir: str | os.PathLike, top_k: int = TOP_K) -> dict:
    """Table 2 numbers of ``retriever``'s model on the labelled split ``ann_path``.

    Returns ``{"ann", "queries", "zeroed_clips", "total_clips", "normal": {metric: value},
    "masked": {...}, "drop": {metric: normal - masked}}`` with the ``TABLE2_KEYS``
    metrics (percent; gIoU loss in [0, 2]).
    """
    annotations = load_annotations(ann_path)
    unlabelled = [a for a in annotations if not a.has_labels]
    if unlabelled:
        raise InputError(f"--ann {str(ann_path)!r}: expected relevant_windows on every line (the "
                         f"analysis needs ground truth), {unlabelled[0].source} has none")
    store = FeatureStore(video_dirs, text_dir, retriever.config, cache_size=256)
    ground_truth = [a.to_json_dict() for a in annotations]
    report: dict = {"ann": str(ann_path), "queries": len(annotations)}
    for condition in CONDITIONS:
        records, zeroed = predict_split(retriever, annotations, store, zero_gt=condition == "masked",
                                        top_k=top_k)
        report[condition] = table2_metrics(records, ground_truth)
        if condition == "masked":
            report["zeroed_clips"] = zeroed
    report["total_clips"] = sum(store.video(a.vid).shape[0] for a in annotations)
    report["drop"] = {k: _diff(report["normal"][k], report["masked"][k]) for k in TABLE2_KEYS}
    return report


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 4)


SHORT_NAMES = {"MR-full-R1@0.3": "R1@0.3", "MR-full-R1@0.5": "R1@0.5", "MR-full-R1@0.7": "R1@0.7",
               "MR-full-mIoU": "mIoU", "MR-full-mAP@0.5": "mAP@0.5", "MR-full-mAP@0.75": "mAP@0.75",
               "MR-full-mAP": "mAP", "HL-min-VeryGood-mAP": "HL-mAP", "HL-min-VeryGood-Hit1": "HL-Hit1",
               GIOU_KEY: "gIoU-loss"}


def format_value(key: str, v: float | None) -> str:
    """Percent with 2 decimals, the gIoU loss with 3; None as '-'."""
    return "-" if v is None else f"{v:.3f}" if key == GIOU_KEY else f"{v:.2f}"


def format_report(report: dict) -> str:
    """The analysis as a fixed-width text table: rows normal / GT clips zeroed / drop."""
    keys = [k for k in TABLE2_KEYS if report["normal"][k] is not None]
    head = ["condition", *(SHORT_NAMES[k] for k in keys)]
    rows = [[name, *(format_value(k, report[cond][k]) for k in keys)]
            for cond, name in (("normal", "normal"), ("masked", "GT zeroed"), ("drop", "drop"))]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [head, *rows]]
    lines.append(f"{report['queries']} queries on {report['ann']}; the masked run zeroed "
                 f"{report['zeroed_clips']} of {report['total_clips']} (query, clip) pairs")
    return "\n".join(lines)
