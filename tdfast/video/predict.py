"""Video files and sentences -> ranked moments in seconds, as QD-DETR's run_on_video ``localize_moment``.

Each distinct video file is decoded and encoded once (one CLIP image feature per
``clip_len`` s clip of the checkpoint's config), each sentence once; then the features are
prepared as ``tdfast.data`` prepares feature files (L2 normalisation per clip and per
token, as run_on_video does; the TEF is added inside the model) and the pairs go through
``Retriever.predict``. Spans are scaled to ``clips * clip_len`` seconds, as run_on_video does.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tdfast.errors import InputError

if TYPE_CHECKING:
    from tdfast.retrieval.retriever import Retriever
    from tdfast.retrieval.postprocess import Prediction
    from tdfast.video.encode import ClipEncoder


def check_compatible(retriever: "Retriever", encoder: "ClipEncoder") -> None:
    """InputError unless the checkpoint takes this CLIP's features (a CLIP-only checkpoint)."""
    c = retriever.config
    if (c.video_dim, c.text_dim) != (encoder.video_dim, encoder.text_dim):
        raise InputError(f"clip weights: the checkpoint expects video features of dim {c.video_dim} and "
                         f"text features of dim {c.text_dim}; this CLIP gives {encoder.video_dim} and "
                         f"{encoder.text_dim}. Raw videos need a CLIP-only checkpoint (e.g. QD-DETR's "
                         f"run_on_video model, video dim 512); SlowFast+CLIP checkpoints need "
                         f"SlowFast features, which tdfast does not extract")


def check_lengths(paths: Sequence[str | Path], clip_len: float, max_clips: int) -> None:
    """InputError before any decoding for a file whose stream duration is clearly over
    ``max_clips`` clips (the exact count is checked again after sampling)."""
    from tdfast.video.decode import probe

    for i, p in enumerate(paths):
        seconds = probe(p).duration
        if seconds > (max_clips + 1) * clip_len:
            raise InputError(f"paths[{i}] {str(p)!r}: {seconds:.1f} s is about {seconds / clip_len:.0f} "
                             f"clips, the checkpoint takes at most max_video_len={max_clips}; pass "
                             f"sliding_window=True (CLI: --sliding-window) for long videos")


def predict_video_files(retriever: "Retriever", encoder: "ClipEncoder", paths: Sequence[str | Path],
                        queries: Sequence[str], top_k: int = 5, nms_iou: float | None = None,
                        sliding_window: bool = False) -> list["Prediction"]:
    """One ``Prediction`` per pair (paths[i], queries[i]): spans [k, 2] in seconds, scores [k],
    saliency [clips]. Videos longer than the checkpoint's max_video_len clips need
    ``sliding_window=True`` (else InputError)."""
    if isinstance(paths, (str, Path)) or isinstance(queries, str):
        raise InputError("paths, queries: expected lists (one entry per pair), got a single "
                         f"{type(paths).__name__ if isinstance(paths, (str, Path)) else 'str'}")
    if len(paths) != len(queries):
        raise InputError(f"paths, queries: expected one query per video path, got {len(paths)} paths "
                         f"and {len(queries)} queries")
    check_compatible(retriever, encoder)
    clip_len = retriever.config.clip_len
    if not sliding_window:
        check_lengths(paths, clip_len, retriever.config.max_video_len)
    videos = {p: retriever.prepare_video(encoder.encode_video(p, clip_len)) for p in dict.fromkeys(map(str, paths))}
    unique = list(dict.fromkeys(queries))
    tokens = dict(zip(unique, (retriever.prepare_query(t) for t in encoder.encode_text(unique))))
    return retriever.predict([videos[str(p)] for p in paths], [tokens[q] for q in queries],
                             top_k=top_k, nms_iou=nms_iou, sliding_window=sliding_window)
