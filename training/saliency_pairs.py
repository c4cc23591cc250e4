"""Clip pairs for the saliency margin loss, sampled on batch tensors (Moment-DETR's recipe)."""
from __future__ import annotations

import torch
from torch import Tensor


def _top(values: Tensor, allowed: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Indices of the k largest ``values`` among ``allowed`` per row, and whether each exists.

    values [B, L] float, allowed [B, L] bool -> (idx [B, k] int64, found [B, k] bool).
    Rows with fewer than k allowed entries get ``found=False`` for the rest.
    """
    b, length = values.shape
    kk = min(k, length)
    masked = values.masked_fill(~allowed, float("-inf"))
    top = masked.topk(kk, dim=1)
    found = torch.isfinite(top.values)
    idx = torch.where(found, top.indices, 0)  # a missing entry points at clip 0 (always real)
    if kk < k:
        idx = torch.cat([idx, idx.new_zeros(b, k - kk)], dim=1)
        found = torch.cat([found, found.new_zeros(b, k - kk)], dim=1)
    return idx, found


def sample_saliency_pairs(saliency: Tensor, gt_clip_mask: Tensor, video_mask: Tensor, num_pairs: int,
                          generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """(positive, negative) clip pairs per row for the margin loss.

    saliency [B, L] float labels, gt_clip_mask [B, L] and video_mask [B, L] bool.
    ``num_pairs`` hard pairs: the relevant clips with the highest labels against the relevant
    clips with the lowest; ``num_pairs`` easy pairs: random relevant clips against random
    clips outside every window. A pair is valid only when its positive's label is strictly
    higher (so Charades-style 0/1 labels use the easy pairs alone, and an annotation whose
    relevant clips all score the same adds no hard pair); Moment-DETR instead keeps tied hard
    pairs and copies them when no easy negative exists.
    Randomness: two [B, L] uniform draws from ``generator`` (CPU), whatever the device.
    Returns pos_idx [B, 2P], neg_idx [B, 2P] int64 and valid [B, 2P] bool.
    """
    b, length = saliency.shape
    relevant = gt_clip_mask & video_mask
    outside = video_mask & ~gt_clip_mask
    hard_pos, f1 = _top(saliency, relevant, num_pairs)
    hard_neg, f2 = _top(-saliency, relevant, num_pairs)
    u = torch.rand(2, b, length, generator=generator).to(saliency.device)
    easy_pos, f3 = _top(u[0], relevant, num_pairs)
    easy_neg, f4 = _top(u[1], outside, num_pairs)
    hard_ok = f1 & f2 & (saliency.gather(1, hard_pos) > saliency.gather(1, hard_neg))
    pos = torch.cat([hard_pos, easy_pos], dim=1)  # [B, 2P]
    neg = torch.cat([hard_neg, easy_neg], dim=1)
    return pos, neg, torch.cat([hard_ok, f3 & f4], dim=1)
