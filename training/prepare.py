"""Global batch -> training batch: VSDC, negative queries, saliency pairs; then row selection.

Every process runs ``prepare_batch`` on the same global batch with the same
generator state, so all random choices agree across processes; each then keeps
its own rows with ``shard``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from tdfast.data.batch import Batch
from tdfast.model.config import TDDETRConfig
from tdfast.training.config import TrainConfig
from tdfast.training.saliency_pairs import sample_saliency_pairs
from tdfast.training.vsdc import vsdc


@dataclass(kw_only=True)
class TrainingBatch(Batch):
    """A prepared batch of P rows (P = B, or 2B with VSDC): a labelled ``Batch`` plus what the
    losses and the negative-pair pass need. K = ``2 * num_saliency_pairs``."""

    owner: Tensor  # [P] int64: the input row of each row's pair (``shard`` splits by it)
    sal_pos_idx: Tensor  # [P, K] int64: clip index of each margin-loss pair's positive
    sal_neg_idx: Tensor  # [P, K] int64: ... and of its negative
    sal_pair_valid: Tensor  # [P, K] bool: whether the pair exists
    neg_query: Tensor | None = None  # [P, M', text_dim]: the query paired with each video as negative
    neg_query_mask: Tensor | None = None  # [P, M'] bool

    PADDED = {**Batch.PADDED, "neg_query_mask": ("neg_query",)}


def prepare_batch(batch: Batch, config: TDDETRConfig, training: TrainConfig,
                  generator: torch.Generator, done: float = 0.0) -> TrainingBatch:
    """Collated labelled batch (B rows) -> training batch (B rows, 2B with VSDC).

    ``owner``: row p's input row, p mod B (VSDC puts pair i's rows at i and B + i). The
    saliency pairs are sampled per row; with ``use_negative_pair`` and P > 1, row p's
    ``neg_query`` is the query of the next row on other videos (``negative_query_rows``;
    QD-DETR's shift by one row). ``done``: the fraction of the epochs finished (VSDC's opt-in
    strip-look schedule reads it).
    """
    b = batch.size
    if training.use_vsdc:
        batch = vsdc(batch, config, training, generator, done)
    p = batch.size
    pos, neg, valid = sample_saliency_pairs(batch.saliency, batch.gt_clip_mask, batch.video_mask,
                                            training.num_saliency_pairs, generator)
    neg_query = neg_query_mask = None
    if training.use_negative_pair and p > 1:
        source = negative_query_rows(batch.meta).to(batch.query.device)
        neg_query, neg_query_mask = batch.query[source], batch.query_mask[source]
    owner = torch.arange(p, device=batch.video.device) % b
    return TrainingBatch(**{f.name: getattr(batch, f.name) for f in fields(Batch)}, owner=owner,
                         sal_pos_idx=pos, sal_neg_idx=neg, sal_pair_valid=valid, neg_query=neg_query,
                         neg_query_mask=neg_query_mask)


def negative_query_rows(meta: list[dict[str, Any]]) -> Tensor:
    """Row whose query is row p's negative -> [P] int64: the first row after p (cyclically)
    whose query's video (its anchor) is neither row p's anchor nor its VSDC context video,
    i.e. whose moment has no clip in row p's video.

    QD-DETR takes row p + 1. After VSDC that is often row p's own query (rows [B, 2B) with the
    same partner sit side by side), which would push the saliency of the query's own moment
    down; so rows on row p's video and, after VSDC, on its context video are skipped. Falls back
    to p + 1 when every row shares those videos.
    """
    vids = [m["vid"] for m in meta]
    contexts = [m.get("vsdc_context_vid", m["vid"]) for m in meta]
    code = {v: i for i, v in enumerate(dict.fromkeys(vids + contexts))}
    anchor = torch.tensor([code[v] for v in vids])  # [P]
    context = torch.tensor([code[v] for v in contexts])  # [P]
    p = len(meta)
    shifts = torch.arange(1, p)  # [P-1]
    cand = (torch.arange(p)[:, None] + shifts[None]) % p  # [P, P-1]: rows p+1, p+2, ...
    ok = (anchor[cand] != anchor[:, None]) & (anchor[cand] != context[:, None])  # [P, P-1]
    first = torch.where(ok.any(1), ok.int().argmax(1), 0)  # [P] index of the first usable shift
    return cand.gather(1, first[:, None]).squeeze(1)


def shard(batch: TrainingBatch, rank: int, world_size: int) -> TrainingBatch:
    """This process's rows: those whose ``owner`` (global input row g = world_size * j + rank,
    see ``distributed.gather_batch``) belongs to ``rank``, padding trimmed."""
    if world_size == 1:
        return batch
    return batch.rows(torch.nonzero(batch.owner % world_size == rank).flatten())
