"""The paper's zero-mask protocol (Sec. 4.1, Table 2): the ground-truth clips of a video
replaced by zeros, its length unchanged.

Which clips: ``tdfast.data.labels`` ``gt_clip_mask``, every clip a relevant window
overlaps by a positive length (on QVHighlights exactly ``relevant_clip_ids``), after
the same truncation to ``max_video_len`` the model sees. What changes: only the
feature rows of those clips, set to 0 (after the per-source L2 normalisation; a zero
row stays zero either way). The attention mask stays True on them: the paper keeps
"the video duration unchanged", and the model's temporal-endpoint features and
positions are computed from the mask, so masking the clips out would also move every
other clip in time.
"""
from __future__ import annotations

import numpy as np

from tdfast.data.annotations import Annotation
from tdfast.data.labels import truncate_windows, windows_to_clip_mask
from tdfast.errors import InputError


def gt_clip_mask(ann: Annotation, num_clips: int, clip_len: float) -> np.ndarray:
    """[num_clips] bool: the clips of a video of ``num_clips`` clips (``clip_len`` s each)
    that a relevant window of ``ann`` overlaps. InputError for an unlabelled annotation."""
    if ann.windows is None:
        raise InputError(f"{ann.source}: expected relevant_windows (the zero-mask analysis needs "
                         f"ground truth), got a record without labels (qid {ann.qid!r})")
    windows = truncate_windows(np.asarray(ann.windows, dtype=np.float64), num_clips, clip_len)
    return windows_to_clip_mask(windows, num_clips, clip_len)


def zero_gt_clips(video: np.ndarray, clip_mask: np.ndarray) -> np.ndarray:
    """A copy of ``video`` [L, D] with the rows where ``clip_mask`` [L] is True set to 0."""
    if clip_mask.shape != video.shape[:1]:
        raise InputError(f"clip_mask: expected shape ({video.shape[0]},) to match the video's clips, "
                         f"got {clip_mask.shape}")
    out = np.array(video, copy=True)
    out[clip_mask] = 0.0
    return out
