"""Annotations + features -> predictions through a ``Retriever``: the one loop every caller shares.

``predict_annotations`` is the path from labelled or unlabelled queries to ranked moments
for ``tdfast predict`` (``predict_jsonl``), per-epoch validation in training and the
spurious-correlation analysis. Features are read and prepared by
``tdfast.data.features.FeatureStore`` (the training pipeline's loader: per-source L2
normalisation, truncation to ``max_video_len`` unless sliding windows are on). Spans are
scaled by ``num_clips * clip_len`` seconds, the length training labels are normalized by.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from tdfast.atomic import atomic_write_file
from tdfast.defaults import TOP_K
from tdfast.errors import InputError
from tdfast.retrieval.postprocess import Prediction
from tdfast.retrieval.retriever import Retriever

if TYPE_CHECKING:
    from tdfast.data.annotations import Annotation
    from tdfast.data.features import FeatureStore


def predict_annotations(retriever: Retriever, annotations: Sequence["Annotation"], store: "FeatureStore",
                        top_k: int = TOP_K, nms_iou: float | None = None, sliding_window: bool = False,
                        video_fn: Callable[["Annotation", np.ndarray], np.ndarray] | None = None,
                        block: int = 256) -> Iterator[tuple["Annotation", np.ndarray, Prediction]]:
    """(annotation, the video as predicted [L, video_dim], its Prediction) for every annotation,
    in order. ``block`` queries are loaded and predicted at a time; ``video_fn(ann, video)``
    may replace a video before prediction (e.g. the analysis zeroes its ground-truth clips)."""
    if isinstance(block, bool) or not isinstance(block, int) or block <= 0:
        raise InputError(f"block: expected a positive integer, got {block!r}")
    for s in range(0, len(annotations), block):
        anns = annotations[s: s + block]
        videos = [store.video(a.vid, f"needed by {a.source}") for a in anns]
        if video_fn is not None:
            videos = [video_fn(a, v) for a, v in zip(anns, videos)]
        queries = [store.query(a.qid, f"needed by {a.source}") for a in anns]
        preds = retriever.predict(videos, queries, top_k=top_k, nms_iou=nms_iou, sliding_window=sliding_window)
        yield from zip(anns, videos, preds)


def predict_jsonl(retriever: Retriever, ann_path: str | os.PathLike,
                  video_dirs: Sequence[str | os.PathLike] | str | os.PathLike,
                  text_dir: str | os.PathLike, out_path: str | os.PathLike, top_k: int = TOP_K,
                  nms_iou: float | None = None, sliding_window: bool = False,
                  block: int = 256) -> dict:
    """Predict every query of ``ann_path`` and write ``out_path`` atomically (temp + rename).

    One line per query: ``qid, query, vid, pred_relevant_windows [[st, ed, score], ...]``
    (``top_k`` of them, seconds) and ``pred_saliency_scores`` (one per clip), in file
    order. ``block`` queries are loaded and predicted at a time. Returns a summary
    (``queries``, ``windowed`` = queries whose video needed windows, ``out``).
    """
    from tdfast.data.annotations import load_annotations
    from tdfast.data.features import FeatureStore

    annotations = load_annotations(ann_path)
    # With windows the loader keeps whole videos; the Retriever cuts them.
    store = FeatureStore(video_dirs, text_dir, retriever.config, cache_size=64, truncate=not sliding_window)
    out_path = Path(out_path)
    if out_path.is_dir():
        raise InputError(f"out_path {str(out_path)!r}: expected a file to write, but it is a directory")
    windowed = 0

    def write(tmp: Path) -> None:
        nonlocal windowed
        with tmp.open("w", encoding="utf-8") as f:
            for a, video, p in predict_annotations(retriever, annotations, store, top_k, nms_iou,
                                                   sliding_window, block=block):
                windowed += video.shape[0] > retriever.config.max_video_len
                f.write(json.dumps(p.to_submission(a.qid, a.query, a.vid)) + "\n")

    atomic_write_file(out_path, write)  # staged under this process's own name, umask permissions
    return {"queries": len(annotations), "windowed": windowed, "out": str(out_path)}
