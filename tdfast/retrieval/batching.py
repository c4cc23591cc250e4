"""Ragged items -> padded, masked batches on length buckets.

Lengths are rounded up to a small ladder of buckets (multiples of ``step`` and
the maximum), so a compiled graph, a CUDA graph or a TensorRT profile made for
one bucket is reused by every batch that falls in it. Backends with static
shapes also round the batch size up to a power of two (``batch_bucket``);
the extra rows are dummies (one real zero token, so no row is all-padding)
and are dropped from the results.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor


def length_buckets(max_len: int, step: int) -> list[int]:
    """Ascending bucket lengths: step, 2*step, ... below ``max_len``, then ``max_len``."""
    return [*range(step, max_len, step), max_len]


def bucket_of(n: int, buckets: Sequence[int]) -> int:
    """Smallest bucket >= n (``n`` beyond the last bucket keeps its own length)."""
    for b in buckets:
        if n <= b:
            return b
    return n


def batch_bucket(n: int, limit: int) -> int:
    """Next power of two >= n, capped at ``limit`` (the chunk size, itself a valid bucket)."""
    return min(1 << max(0, (n - 1).bit_length()), limit)


@dataclass(frozen=True)
class Chunk:
    """Indices of the jobs that run together, and the padded shape they run at."""

    indices: tuple[int, ...]
    video_len: int
    query_len: int
    batch: int  # >= len(indices): the batch bucket


def plan_chunks(video_lens: Sequence[int], query_lens: Sequence[int], video_buckets: Sequence[int],
                query_buckets: Sequence[int], max_batch: int, static_batch: bool) -> list[Chunk]:
    """Group jobs by (video bucket, query bucket) and cut each group into chunks of at most
    ``max_batch``. Jobs keep their input order inside a group."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, (lv, lq) in enumerate(zip(video_lens, query_lens)):
        groups[(bucket_of(lv, video_buckets), bucket_of(lq, query_buckets))].append(i)
    chunks = []
    for (lv, lq), idx in sorted(groups.items()):
        for s in range(0, len(idx), max_batch):
            part = tuple(idx[s: s + max_batch])
            b = batch_bucket(len(part), max_batch) if static_batch else len(part)
            chunks.append(Chunk(part, lv, lq, b))
    return chunks


def pad_items(items: Sequence[Tensor], length: int, batch: int, dtype: torch.dtype,
              device: torch.device, pin: bool) -> tuple[Tensor, Tensor]:
    """Stack [L_i, D] items into x [batch, length, D] (zeros on padding) and mask
    [batch, length] bool (True = real), allocated on ``device``. Rows past ``len(items)``
    are dummies with one real zero token. ``pin`` (CPU only): page-locked memory, so the
    caller's host-to-GPU copy can be non_blocking."""
    dim = items[0].shape[1]
    pin = pin and device.type == "cpu"
    # empty, not zeros: at B=256 zero-filling the whole buffer costs as much as the copy;
    # only the padding tail of each row is cleared.
    x = torch.empty(batch, length, dim, dtype=dtype, device=device, pin_memory=pin)  # [B, L, D]
    mask = torch.zeros(batch, length, dtype=torch.bool, device=device, pin_memory=pin)  # [B, L]
    for i, t in enumerate(items):
        n = t.shape[0]
        x[i, :n].copy_(t)  # casts and handles non-contiguous / GPU sources
        x[i, n:].zero_()
        mask[i, :n] = True
    x[len(items):].zero_()
    mask[len(items):, 0] = True
    return x, mask
