"""Annotation jsonl + feature dirs -> QVHighlights prediction jsonl, through a ``Retriever``.

Features are read and prepared by ``tdfast.data.features.FeatureStore`` (the
training pipeline's loader: per-source L2 normalisation, truncation to
``max_video_len`` unless sliding windows are on). Spans are scaled by
``num_clips * clip_len`` seconds, the length training labels are normalized
by, so this file and ``tdfast.training.validate`` write the same numbers.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Sequence

from tdfast.api import Retriever
from tdfast.atomic import atomic_write_file
from tdfast.errors import InputError

UNTRUNCATED = 2**62  # max_video_len for the loader when long videos go through windows


def predict_jsonl(retriever: Retriever, ann_path: str | os.PathLike,
                  video_dirs: Sequence[str | os.PathLike] | str | os.PathLike,
                  text_dir: str | os.PathLike, out_path: str | os.PathLike, top_k: int = 10,
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

    if isinstance(block, bool) or not isinstance(block, int) or block <= 0:
        raise InputError(f"block: expected a positive integer, got {block!r}")
    config = retriever.config
    if sliding_window:  # the loader must keep whole videos; windows cut them later
        config = dataclasses.replace(config, max_video_len=UNTRUNCATED)
    annotations = load_annotations(ann_path)
    store = FeatureStore(video_dirs, text_dir, config, cache_size=64)
    out_path = Path(out_path)
    if out_path.is_dir():
        raise InputError(f"out_path {str(out_path)!r}: expected a file to write, but it is a directory")
    windowed = 0

    def write(tmp: Path) -> None:
        nonlocal windowed
        with tmp.open("w", encoding="utf-8") as f:
            for s in range(0, len(annotations), block):
                anns = annotations[s: s + block]
                videos = [store.video(a.vid, f"needed by {a.source}") for a in anns]
                queries = [store.query(a.qid, f"needed by {a.source}") for a in anns]
                windowed += sum(v.shape[0] > retriever.config.max_video_len for v in videos)
                preds = retriever.predict(videos, queries, top_k=top_k, nms_iou=nms_iou,
                                          sliding_window=sliding_window)
                for a, p in zip(anns, preds):
                    f.write(json.dumps(p.to_submission(a.qid, a.query, a.vid)) + "\n")

    atomic_write_file(out_path, write)  # staged under this process's own name, umask permissions
    return {"queries": len(annotations), "windowed": windowed, "out": str(out_path)}
