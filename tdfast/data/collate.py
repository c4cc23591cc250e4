"""Batching: pad ragged samples into the ``Batch`` the model and trainer consume."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from tdfast.data.batch import Batch
from tdfast.errors import InputError


def _pad(rows: Sequence[torch.Tensor], fill: float | bool = 0) -> torch.Tensor:
    """Stack [L_i, ...] tensors into [B, max L_i, ...], padding with ``fill``."""
    out = torch.full((len(rows), max(r.shape[0] for r in rows), *rows[0].shape[1:]), fill,
                     dtype=rows[0].dtype)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out


def _mask(lengths: Sequence[int]) -> torch.Tensor:
    """[B, max length] bool, True on real positions."""
    return torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]


def collate(samples: Sequence[dict[str, Any]]) -> Batch:
    """Samples of ``MomentDataset`` -> ``Batch`` (L = the longest video, M the longest query
    of the batch); the labels when every sample is labelled, else none."""
    if not samples:
        raise InputError("collate: expected at least one sample, got an empty list")
    labelled = ["spans" in s for s in samples]
    if any(labelled) and not all(labelled):
        missing = [s["meta"]["qid"] for s, has in zip(samples, labelled) if not has]
        raise InputError(f"collate: expected all samples of a batch with labels or all without; "
                         f"qids without labels: {missing}")
    batch = Batch(
        video=_pad([s["video"] for s in samples]),  # [B, L, video_dim]
        video_mask=_mask([s["video"].shape[0] for s in samples]),  # [B, L]
        query=_pad([s["query"] for s in samples]),  # [B, M, text_dim]
        query_mask=_mask([s["query"].shape[0] for s in samples]),  # [B, M]
        meta=[dict(s["meta"]) for s in samples],
    )
    if all(labelled):
        batch.spans = [s["spans"] for s in samples]  # B x [n_i, 2]
        batch.saliency = _pad([s["saliency"] for s in samples], 0.0)  # [B, L]
        batch.gt_clip_mask = _pad([s["gt_clip_mask"] for s in samples], False)  # [B, L]
    return batch


def _seed_worker(worker_id: int) -> None:
    # numpy is not reseeded by torch in workers; derive its seed from torch's per-worker seed
    np.random.seed(torch.initial_seed() % 2**32)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0,
                sampler: Sampler | None = None) -> DataLoader:
    """DataLoader with ``collate``; the order is a function of ``seed`` alone.

    ``sampler`` (e.g. a DistributedSampler) replaces shuffling, so it can't be
    combined with ``shuffle=True``.
    """
    if batch_size <= 0:
        raise InputError(f"batch_size: expected a positive integer, got {batch_size!r}")
    if sampler is not None and shuffle:
        raise InputError("make_loader: expected shuffle=False when a sampler is given "
                         "(the sampler decides the order), got shuffle=True")
    generator = torch.Generator().manual_seed(int(seed))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler,
                      num_workers=num_workers, collate_fn=collate, generator=generator,
                      worker_init_fn=_seed_worker if num_workers > 0 else None,
                      persistent_workers=num_workers > 0)
