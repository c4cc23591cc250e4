"""MomentDataset: annotation jsonl + feature dirs -> one sample per query."""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from tdfast.data.annotations import Annotation, load_annotations
from tdfast.data.features import FeatureStore
from tdfast.data.labels import make_labels
from tdfast.model.config import TDDETRConfig


def make_sample(ann: Annotation, video: np.ndarray, query: np.ndarray,
                config: TDDETRConfig) -> dict[str, Any]:
    """One sample from prepared features (see ``tdfast.data.features``).

    ``video`` [L, video_dim] and ``query`` [M, text_dim] are already truncated
    and normalised. Returns ``video``, ``query`` (float32 tensors), ``meta``
    (qid, query, vid, duration in seconds from the annotation, num_clips = L)
    and, for labelled annotations, ``spans`` [n, 2], ``saliency`` [L] and
    ``gt_clip_mask`` [L] as defined in ``tdfast.data.labels``.
    """
    num_clips = int(video.shape[0])
    sample: dict[str, Any] = {
        "video": torch.from_numpy(np.array(video, dtype=np.float32)),  # [L, video_dim]
        "query": torch.from_numpy(np.array(query, dtype=np.float32)),  # [M, text_dim]
        "meta": {"qid": ann.qid, "query": ann.query, "vid": ann.vid, "duration": ann.duration,
                 "num_clips": num_clips},
    }
    if ann.has_labels:
        labels = make_labels(ann, num_clips, config.clip_len)
        sample["spans"] = torch.from_numpy(labels["spans"])  # [n, 2] cxw, normalized
        sample["saliency"] = torch.from_numpy(labels["saliency"])  # [L]
        sample["gt_clip_mask"] = torch.from_numpy(labels["gt_clip_mask"])  # [L]
    return sample


class MomentDataset(Dataset):
    """Queries of an annotation file with their video and query features.

    ``video_dirs``: one dir or several (concatenated along D in this order);
    ``text_dir``: holds ``qid<qid>.npz``. Features are read lazily in
    ``__getitem__``; ``cache_size`` > 0 keeps that many arrays in an LRU
    cache per process (per DataLoader worker). Errors name the feature file
    and the annotation line that needed it.
    """

    def __init__(self, ann_path: str | os.PathLike,
                 video_dirs: Sequence[str | os.PathLike] | str | os.PathLike,
                 text_dir: str | os.PathLike, config: TDDETRConfig, cache_size: int = 0):
        self.config = config
        self.annotations = load_annotations(ann_path)
        self.store = FeatureStore(video_dirs, text_dir, config, cache_size=cache_size)

    def __len__(self) -> int:
        return len(self.annotations)

    @property
    def has_labels(self) -> bool:
        """True when every record carries relevant_windows."""
        return all(a.has_labels for a in self.annotations)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ann = self.annotations[index]
        context = f"needed by {ann.source}"
        video = self.store.video(ann.vid, context)
        query = self.store.query(ann.qid, context)
        return make_sample(ann, video, query, self.config)
