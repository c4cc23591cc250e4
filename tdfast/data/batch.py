"""``Batch``: B padded (video, query) pairs and their labels, as typed fields.

``collate`` builds it; training prepares it (``tdfast.training.prepare.TrainingBatch`` adds
what the losses need), the distributed trainer gathers and shards it. Every field holds one
entry per row (a tensor along dim 0, a list item), so row selection, moving to a device and
all-gathering treat every field alike, in subclasses too.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

BatchT = TypeVar("BatchT", bound="Batch")


@dataclass
class Batch:
    """B (video, query) pairs padded to the longest video (L clips) and query (M tokens).

    The labels (``spans``, ``saliency``, ``gt_clip_mask``) are set when every sample of the
    batch has them, else all three are None.
    """

    video: Tensor  # [B, L, video_dim] float32, zero on padding
    video_mask: Tensor  # [B, L] bool, True on real clips
    query: Tensor  # [B, M, text_dim] float32, zero on padding
    query_mask: Tensor  # [B, M] bool, True on real tokens
    meta: list[dict[str, Any]]  # B dicts: qid, query, vid, duration (seconds), num_clips
    spans: list[Tensor] | None = None  # B x [n_i, 2] float32, normalized (center, width)
    saliency: Tensor | None = None  # [B, L] float32 labels, 0 on padding
    gt_clip_mask: Tensor | None = None  # [B, L] bool, clips inside a window; False on padding

    # mask field -> the fields padded with it along dim 1 (``rows`` trims them together)
    PADDED: ClassVar[dict[str, tuple[str, ...]]] = {
        "video_mask": ("video", "saliency", "gt_clip_mask"), "query_mask": ("query",)}

    @property
    def size(self) -> int:
        """B, the number of rows."""
        return len(self.meta)

    def per_row(self: BatchT, tensor: Callable[[Tensor], Tensor], items: Callable[[list], list]) -> BatchT:
        """A copy with ``tensor`` applied to every tensor field and ``items`` to every list
        field (``meta``, ``spans``); None fields stay None."""
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                changes[f.name] = tensor(value)
            elif isinstance(value, list):
                changes[f.name] = items(value)
        return dataclasses.replace(self, **changes)

    def to(self: BatchT, device: torch.device | str) -> BatchT:
        """Tensors (the ``spans`` list's too) on ``device``; ``meta`` untouched."""
        return self.per_row(lambda t: t.to(device),
                            lambda xs: [x.to(device) if isinstance(x, Tensor) else x for x in xs])

    def rows(self: BatchT, index: Tensor) -> BatchT:
        """The rows ``index`` [n] int64 (in that order), padding trimmed to the longest kept
        video and query."""
        keep = index.tolist()
        out = self.per_row(lambda t: t[index.to(t.device)], lambda xs: [xs[i] for i in keep])
        for mask_name, names in self.PADDED.items():
            mask = getattr(out, mask_name)
            if mask is None:
                continue
            n = max(int(mask.sum(1).max()), 1)
            trimmed = {k: getattr(out, k)[:, :n] for k in (mask_name, *names) if getattr(out, k) is not None}
            out = dataclasses.replace(out, **trimmed)
        return out
