"""Global batch -> training batch: VSDC, negative queries, saliency pairs; then row selection.

Every process runs ``prepare_batch`` on the same global batch with the same
generator state, so all random choices agree across processes; each then keeps
its own rows with ``select_rows``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tdfast.data.collate import BATCH_LISTS, BATCH_TENSORS
from tdfast.model.config import TDDETRConfig
from tdfast.training.config import TrainConfig
from tdfast.training.saliency_pairs import sample_saliency_pairs
from tdfast.training.vsdc import vsdc

# Keys with one entry per row of a prepared batch (tensors: first dim; lists: items).
ROW_TENSORS = (*BATCH_TENSORS, "owner", "sal_pos_idx", "sal_neg_idx", "sal_pair_valid", "neg_query",
               "neg_query_mask")  # the collated batch's, then what prepare adds
ROW_LISTS = BATCH_LISTS


def to_device(batch: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    """Tensors (and the ``spans`` list) moved to ``device``; meta untouched."""
    out = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
    if "spans" in out:
        out["spans"] = [s.to(device) for s in out["spans"]]
    return out


def prepare_batch(batch: dict[str, Any], config: TDDETRConfig, training: TrainConfig,
                  generator: torch.Generator) -> dict[str, Any]:
    """Collated labelled batch (B rows) -> training batch (B rows, 2B with VSDC).

    Adds ``owner`` [P] (input row of each row's pair), ``sal_pos_idx``/``sal_neg_idx``/
    ``sal_pair_valid`` [P, 2 * num_saliency_pairs] and, with ``use_negative_pair`` and
    P > 1, ``neg_query`` [P, M, Dt] / ``neg_query_mask`` [P, M]: row p gets the query of
    the next row on other videos (``negative_query_rows``; QD-DETR's shift by one row).
    """
    b = batch["video"].shape[0]
    if training.use_vsdc:
        batch = vsdc(batch, config, training, generator)
    else:
        batch = {**batch, "owner": torch.arange(b, device=batch["video"].device)}
    pos, neg, valid = sample_saliency_pairs(batch["saliency"], batch["gt_clip_mask"], batch["video_mask"],
                                            training.num_saliency_pairs, generator)
    batch.update(sal_pos_idx=pos, sal_neg_idx=neg, sal_pair_valid=valid)
    p = batch["video"].shape[0]
    if training.use_negative_pair and p > 1:
        source = negative_query_rows(batch["meta"]).to(batch["query"].device)
        batch.update(neg_query=batch["query"][source], neg_query_mask=batch["query_mask"][source])
    return batch


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


def select_rows(batch: dict[str, Any], rows: Tensor) -> dict[str, Any]:
    """The given rows [n] of a prepared batch, with padding trimmed to the longest kept row."""
    out = dict(batch)
    index = rows.tolist()
    for k in ROW_TENSORS:
        if k in out:
            out[k] = out[k][rows.to(out[k].device)]
    for k in ROW_LISTS:
        if k in out:
            out[k] = [out[k][i] for i in index]
    for data, mask in (("video", "video_mask"), ("query", "query_mask"), ("neg_query", "neg_query_mask")):
        if data in out:
            n = max(int(out[mask].sum(1).max()), 1)
            out[data], out[mask] = out[data][:, :n], out[mask][:, :n]
            if data == "video":
                out["saliency"], out["gt_clip_mask"] = out["saliency"][:, :n], out["gt_clip_mask"][:, :n]
    return out


def shard(batch: dict[str, Any], rank: int, world_size: int) -> dict[str, Any]:
    """This process's rows: those whose ``owner`` (global input row g = world_size * j + rank,
    see ``distributed.gather_batch``) belongs to ``rank``."""
    if world_size == 1:
        return batch
    rows = torch.nonzero(batch["owner"] % world_size == rank).flatten()
    return select_rows(batch, rows)
