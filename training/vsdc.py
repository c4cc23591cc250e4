"""VSDC: Video Synthesizer for Dynamic Context (paper Sec. 3.1), a vectorized batch transform.

For every video V_i of a batch, its partner k_i is the most similar other video
(similarity: mean of the top-k clip dot products, as the official code; pairs
of queries on the same video are skipped when another video exists). The
synthesized video keeps every ground-truth clip of V_i, each other clip of V_i
with probability ``alpha`` and each clip of V_k with probability ``1 - alpha``;
V_i's kept clips come first, in their order, then V_k's. Windows, saliency and
the GT clip mask move with their clips. The symmetric sample (anchor V_k,
context from V_i, V_k's query) is made too, with the context block first (the
official TD-DETR code's order: with the anchor always first, synthesized
moments sat in the first ~55% of the video, 7% of GT centers past the middle
against 46% in the data), so a batch of B becomes 2B:
rows [0, B) are the synthesized V~_i, rows [B, 2B) the synthesized V~_k_i
(the paper's pair p_i = {V~_i, V~_k_i}); the originals are replaced, as in the
paper (``alpha = 1`` gives back the originals).

Guarantees (tested): no GT clip is dropped, so no window is cut and every
window's clips stay contiguous; the result never exceeds ``max_video_len``
(when it would, a random subset of the partner's clips is dropped); masks are
True exactly on the real clips.
"""
from __future__ import annotations

import torch
from torch import Tensor

from tdfast.data.batch import Batch
from tdfast.model.config import TDDETRConfig
from tdfast.training.config import TrainConfig
from tdfast.spans import cxw_to_xx, xx_to_cxw

EDGE_EPS = 1e-4  # in clips: a window edge this close to a clip border counts as on it


def video_similarity(video: Tensor, video_mask: Tensor, topk: int) -> Tensor:
    """Mean of the ``topk`` largest clip-clip dot products of every video pair.

    video [B, L, D], video_mask [B, L] -> [B, B] (symmetric). Pairs with fewer real
    clip pairs than ``topk`` average the ones they have.
    """
    b, length, d = video.shape
    flat = video.reshape(b * length, d).float()
    dots = (flat @ flat.T).view(b, length, b, length).transpose(1, 2).reshape(b, b, -1)  # [B, B, L*L]
    valid = (video_mask[:, None, :, None] & video_mask[None, :, None, :]).reshape(b, b, -1)
    top = dots.masked_fill(~valid, float("-inf")).topk(min(topk, length * length), dim=-1).values
    real = torch.isfinite(top)
    return torch.where(real, top, 0.0).sum(-1) / real.sum(-1).clamp(min=1)


def choose_partners(similarity: Tensor, vids: list[str]) -> Tensor:
    """Most similar other row per row: similarity [B, B], vids B names -> partner [B] int64.

    Rows on the same video (another query of it) are excluded unless no other video is in
    the batch. Needs B >= 2.
    """
    b = similarity.shape[0]
    codes = {v: i for i, v in enumerate(dict.fromkeys(vids))}
    vid_code = torch.tensor([codes[v] for v in vids], device=similarity.device)
    eye = torch.eye(b, dtype=torch.bool, device=similarity.device)
    blocked = (vid_code[:, None] == vid_code[None, :]) | eye
    only_same = blocked.all(dim=1)
    blocked[only_same] = eye[only_same]
    return similarity.masked_fill(blocked, float("-inf")).argmax(dim=1)


def protected_clips(batch: Batch) -> Tensor:
    """[B, L] bool: clips VSDC must keep: every clip a window touches, plus the GT clip mask
    and clips with a positive saliency label."""
    mask = batch.video_mask
    b, length = mask.shape
    lengths = mask.sum(1)  # [B]
    keep = batch.gt_clip_mask | (batch.saliency > 0)
    spans = batch.spans
    if sum(int(s.shape[0]) for s in spans):
        rows = torch.cat([torch.full((int(s.shape[0]),), i, dtype=torch.int64) for i, s in enumerate(spans)])
        rows = rows.to(mask.device)
        xx = cxw_to_xx(torch.cat(list(spans)).to(mask.device).double()) * lengths[rows, None]  # [S, 2] clips
        first = torch.floor(xx[:, 0] + EDGE_EPS)
        stop = torch.maximum(torch.ceil(xx[:, 1] - EDGE_EPS), first + 1)
        t = torch.arange(length, device=mask.device)
        covered = (t[None] >= first[:, None]) & (t[None] < stop[:, None])  # [S, L]
        keep = keep | (torch.zeros(b, length, device=mask.device).index_add_(0, rows, covered.float()) > 0)
    return keep & mask


def synthesize(batch: Batch, anchors: Tensor, contexts: Tensor, u_anchor: Tensor,
               u_context: Tensor, alpha: float, max_len: int, clip_len: float,
               context_first: Tensor | None = None, moment_slot: Tensor | None = None,
               strip_look: Tensor | None = None) -> Batch:
    """Row p of the result: the clips of ``anchors[p]`` kept (GT, or ``u_anchor < alpha``)
    followed by the clips of ``contexts[p]`` kept (``u_context < 1 - alpha``); rows where
    ``context_first`` [P] bool is True put the context block first (default: none do).

    ``moment_slot`` [P] in [0, 1) (opt-in, ``vsdc_moment_in_context``; None = the official
    layout above): the anchor's GT clips leave the anchor block and go *inside* the context
    block, after ``floor(slot * (n_c + 1))`` of its n_c kept clips, so the moment's neighbours
    are context clips; the anchor's other kept clips stay one block, in order, after the
    context block (before it where ``context_first``).

    ``strip_look`` [P] bool (opt-in, ``vsdc_strip_look``; None = none): in those rows the
    anchor's moment clips are shifted by one vector so their mean is the mean of the row's
    context clips (``strip_moment_look``).

    batch: labelled, B rows (video [B, L, D]); anchors, contexts [P] int64; u_anchor, u_context [P, L]
    uniform [0, 1). Labels and query come from the anchor. Partner clips beyond
    ``max_len`` are dropped in the order of ``u_context`` (a random subset).
    """
    video, mask = batch.video, batch.video_mask
    length = mask.shape[1]
    protect = protected_clips(batch)
    keep_a = mask[anchors] & (protect[anchors] | (u_anchor < alpha))  # [P, L]
    u_c = u_context.masked_fill(~mask[contexts], 2.0)  # padding never kept
    keep_c = u_c < 1.0 - alpha
    n_a = keep_a.sum(1)  # [P]
    budget = (max_len - n_a).clamp(min=0)
    rank_c = torch.argsort(torch.argsort(u_c, dim=1), dim=1)  # smallest u first
    keep_c = keep_c & (rank_c < budget[:, None])
    n_c = keep_c.sum(1)
    total = n_a + n_c  # [P] new lengths
    gt_a = protect[anchors] & keep_a
    order = _clip_order(keep_a, keep_c, gt_a, context_first, moment_slot)  # [P, 2L]: the kept ones first
    out_len = int(total.max())
    src = order[:, :out_len]  # [P, L'] position in cat(anchor, context) of each new clip
    new_mask = torch.arange(out_len, device=mask.device)[None] < total[:, None]
    from_anchor = (src < length) & new_mask
    idx = src % length
    d = video.shape[-1]
    both = torch.cat((video[anchors], video[contexts]), dim=1)  # [P, 2L, D]
    new_video = both.gather(1, src[..., None].expand(-1, -1, d)) * new_mask[..., None]
    new_saliency = batch.saliency[anchors].gather(1, idx) * from_anchor
    new_gt = batch.gt_clip_mask[anchors].gather(1, idx) & from_anchor
    if strip_look is not None:
        moment = protect[anchors].gather(1, idx) & from_anchor & strip_look.to(mask.device)[:, None]  # [P, L']
        new_video = strip_moment_look(new_video, moment, new_mask & ~from_anchor)
    dest = torch.argsort(order, dim=1)[:, :length]  # [P, L] new index of each anchor clip
    new_spans = _move_spans(batch.spans, anchors, dest, mask.sum(1), total)
    meta = []
    for q, (a, c) in enumerate(zip(anchors.tolist(), contexts.tolist())):
        n = int(total[q])
        meta.append({**batch.meta[a], "num_clips": n, "duration": n * clip_len,
                     "vsdc_context_vid": batch.meta[c]["vid"]})
    return Batch(video=new_video, video_mask=new_mask, query=batch.query[anchors],
                 query_mask=batch.query_mask[anchors], meta=meta, spans=new_spans,
                 saliency=new_saliency, gt_clip_mask=new_gt)


def strip_moment_look(video: Tensor, moment: Tensor, context: Tensor) -> Tensor:
    """Give the moment the look of its context and keep its dynamics: video [P, L, D] with the
    clips of ``moment`` [P, L] bool shifted by ``mean(context clips) - mean(moment clips)`` [P, D]
    (``context`` [P, L] bool), so every difference between two moment clips is unchanged.
    Rows with no moment or no context clip are returned as they are."""
    m, c = moment[..., None].to(video.dtype), context[..., None].to(video.dtype)  # [P, L, 1]
    n_m, n_c = m.sum(1), c.sum(1)  # [P, 1]
    shift = (video * c).sum(1) / n_c.clamp(min=1) - (video * m).sum(1) / n_m.clamp(min=1)  # [P, D]
    shift = shift * ((n_m > 0) & (n_c > 0))
    return video + m * shift[:, None, :]


def _clip_order(keep_a: Tensor, keep_c: Tensor, gt_a: Tensor, context_first: Tensor | None,
                moment_slot: Tensor | None) -> Tensor:
    """[P, 2L] positions in cat(anchor clips, context clips), the kept ones first in the order
    of the new video (layouts as in ``synthesize``): every clip gets a sort key, dropped
    clips +inf. keep_a, keep_c, gt_a (the anchor's kept GT clips) [P, L] bool."""
    p, length = keep_a.shape
    device = keep_a.device
    first = (torch.zeros(p, dtype=torch.bool, device=device) if context_first is None else context_first)[:, None]
    j = torch.arange(length, device=device, dtype=torch.float64)[None].expand(p, -1)  # [P, L]
    key_a = torch.where(first, j + length, j)  # official: anchor block, then context block
    key_c = torch.where(first, j, j + length)
    if moment_slot is not None:
        n_c = keep_c.sum(1)
        before = (moment_slot.to(device) * (n_c + 1).double()).floor()  # [P] context clips before GT
        c_rank = keep_c.long().cumsum(1) - 1  # [P, L] rank among kept context clips
        key_c = c_rank.double() + 0.5 * (c_rank.double() >= before[:, None])  # [0, n_c], GT at before
        key_a = torch.where(gt_a, before[:, None] - 0.25 + j / (4 * length),
                            torch.where(first, j - 2 * length, j + 2 * length))
    keys = torch.cat((key_a.masked_fill(~keep_a, float("inf")),
                      key_c.masked_fill(~keep_c, float("inf"))), dim=1)  # [P, 2L]
    return torch.argsort(keys, dim=1, stable=True)


def _move_spans(spans: list[Tensor], anchors: Tensor, dest: Tensor, old_len: Tensor,
                new_len: Tensor) -> list[Tensor]:
    """Windows of each anchor moved to where their clips went, renormalized.

    spans B x [n_i, 2] normalized by the old length; dest [P, L] the new index of each kept
    anchor clip; old_len [B], new_len [P] in clips. A window's clips are all kept and stay
    contiguous and in order, so one shift per window (measured at the clip holding its
    center) moves it exactly.
    """
    rows = [spans[a] for a in anchors.tolist()]
    sizes = [int(r.shape[0]) for r in rows]
    if not sum(sizes):
        return [r.clone() for r in rows]
    device = dest.device
    row_of = torch.cat([torch.full((n,), p, dtype=torch.int64) for p, n in enumerate(sizes)]).to(device)
    xx = cxw_to_xx(torch.cat(rows).to(device).double()) * old_len[anchors][row_of, None]  # [S, 2] clips
    center = (0.5 * (xx[:, 0] + xx[:, 1])).floor().long()
    first = torch.floor(xx[:, 0] + EDGE_EPS).long()
    ref = torch.maximum(center, first).clamp(0, dest.shape[1] - 1)  # a kept clip of the window
    shift = (ref - dest[row_of, ref]).double()
    moved = (xx - shift[:, None]) / new_len[row_of, None].double()
    cxw = xx_to_cxw(moved.clamp(0.0, 1.0)).float()
    return list(torch.split(cxw, sizes))


def moment_dynamics_ratio(video: Tensor, moment: Tensor) -> Tensor:
    """How much a moment's clips change from one clip to the next, against their spread: the von
    Neumann ratio ``mean_t ||f_t - f_{t-1}||^2 / (2 * var)`` over consecutive pairs of moment
    clips, var = the moment clips' mean squared distance to their mean (unbiased, n - 1).

    video [B, L, D], moment [B, L] bool -> [B] float32 (dimensionless). Independent clips give
    ~1, clips that drift slowly < 1, clips whose changes alternate (a sign flipping on every
    clip) up to 2. Scale-free, so the L2 normalization of the features does not move it. Rows
    with fewer than 3 moment clips, no consecutive pair or no spread give 0 (never gated in).
    """
    v = video.float()
    m = moment.to(v.dtype)  # [B, L]
    n = m.sum(1)  # [B]
    mean = (v * m[..., None]).sum(1) / n.clamp(min=1)[:, None]  # [B, D]
    spread = (((v - mean[:, None]) ** 2).sum(-1) * m).sum(1) / (n - 1).clamp(min=1)  # [B]
    pair = m[:, 1:] * m[:, :-1]  # [B, L-1]
    change = ((v[:, 1:] - v[:, :-1]) ** 2).sum(-1)  # [B, L-1]
    mean_change = (change * pair).sum(1) / pair.sum(1).clamp(min=1)
    ok = (n >= 3) & (pair.sum(1) > 0) & (spread > 0)
    return torch.where(ok, mean_change / (2 * spread).clamp(min=torch.finfo(v.dtype).tiny), 0.0)


def strip_look_probability(training: TrainConfig, done: float) -> float:
    """The ``vsdc_strip_look`` probability after a fraction ``done`` in [0, 1] of the epochs:
    1 while ``done < vsdc_strip_all_first``, ``vsdc_strip_look`` after (and without the schedule)."""
    return 1.0 if done < training.vsdc_strip_all_first else training.vsdc_strip_look


def vsdc(batch: Batch, config: TDDETRConfig, training: TrainConfig, generator: torch.Generator,
         done: float = 0.0) -> Batch:
    """The transform: partners by similarity, then both synthesized samples of each pair.

    B rows -> 2B rows (see the module docstring); a batch of one row is returned as is.
    Row p's meta names its context video (``vsdc_context_vid``). Randomness: four [B, L] uniform
    draws from ``generator`` (CPU), the same on every process and device. ``done``: the fraction
    of the epochs finished, read only by the opt-in strip-look schedule (``strip_look_probability``).
    ``vsdc_strip_gate`` (opt-in) strips only anchors whose ``moment_dynamics_ratio`` exceeds it;
    it draws nothing.
    """
    b, length = batch.video_mask.shape
    device = batch.video.device
    if b < 2:
        return batch
    sim = video_similarity(batch.video, batch.video_mask, training.vsdc_topk)
    partner = choose_partners(sim, [m["vid"] for m in batch.meta])
    own = torch.arange(b, device=device)
    anchors, contexts = torch.cat([own, partner]), torch.cat([partner, own])  # [2B]
    u = torch.rand(2, 2 * b, length, generator=generator).to(device)
    context_first = torch.arange(2 * b, device=device) >= b  # the symmetric rows
    # Drawn only with the option on, so the official stream of draws is unchanged without it.
    slot = torch.rand(2 * b, generator=generator).to(device) if training.vsdc_moment_in_context else None
    # [2B] bool, drawn after the slots so turning it on leaves their draws alone; drawn on every
    # step of a schedule (also where p is 0), so p's value never shifts the later draws
    strip = (torch.rand(2 * b, generator=generator) < strip_look_probability(training, done)
             if training.vsdc_strip_look > 0 or training.vsdc_strip_all_first > 0 else None)
    if strip is not None and training.vsdc_strip_gate > 0:  # only moments that show dynamics
        dynamic = moment_dynamics_ratio(batch.video, protected_clips(batch)) > training.vsdc_strip_gate  # [B]
        strip = strip & dynamic.cpu()[anchors.cpu()]
    return synthesize(batch, anchors, contexts, u[0], u[1], training.alpha, config.max_video_len,
                      config.clip_len, context_first, slot, strip)
