"""The T2V / TD layer of the official TD-DETR code (paper Sec. 3.2): the part a fused kernel replaces.

Per layer, with V the video tokens [B, L, D] (no positions), x = V + pos, text [B, M, D]
and one learned start token st [D] shared by all layers:

    A_v = MHA(Q = x, K = V = text)                        video    -> text
    T   = [x_1 - st, x_2 - x_1, ..., x_L - x_{L-1}]       temporal differences (Eq. 3)
    F   = flow_proj(T)                                    (LayerNorm, Dropout, Linear, ReLU) x 2
    A_t = MHA'(Q = F, K = V = text)                       dynamics -> text, its own q/k/v/out
    s   = beta * V + (1 - beta) * A_t + A_v               official residual merge
    out = norm2(s + FFN(norm1(s)))                        the FFN residual bypasses norm1

The paper's Eq. 6 merges ``beta * A_v + (1 - beta) * A_t`` after a plain residual; the
official code (which produced the published numbers) merges as above, so tdfast does too.
With ``use_tdem`` off the layer is QD-DETR's T2V layer, ``s = V + A_v``, and has no
dynamics parameters at all.

Opt-in variant (``TDDETRConfig`` fields, default off; docs/fidelity.md, section 5):
``flow_keep_magnitude`` drops flow_proj's first LayerNorm, which rescales every difference
to unit size and so erases how much a clip changes; ``dyn_null_slot`` gives MHA' a zero
key and value, so a clip whose dynamics match no query token attends to nothing and A_t
is small there: A_t's size, not only its direction, says where the query's dynamics are.

``td_interaction_reference`` is the same math written as plainly as possible in float64
(explicit projections, explicit softmax); it is the oracle for the module and for every
kernel.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from tdfast.model.attention import MultiHeadAttention
from tdfast.model.layers import FeedForward, LinearLayer, dropout_layer


def temporal_differences(x: Tensor, start: Tensor) -> Tensor:
    """Eq. 3: x [B, L, D], start token [D] -> [x_1 - st, x_2 - x_1, ...] [B, L, D]."""
    # Shift by concatenating first and slicing after: slicing x[:, :-1] before the cat makes
    # torch.export guard on L - 1 != 1 and pin L to the traced length.
    prev = torch.cat((start.to(x.dtype).expand(x.shape[0], 1, -1), x), dim=1)[:, : x.shape[1]]
    return x - prev


class TDCrossAttention(nn.Module):
    """Both cross-attentions of one T2V / TD layer and the residual merge (everything but the FFN)."""

    def __init__(self, dim: int, num_heads: int, dropout: float, use_tdem: bool, beta: float,
                 flow_keep_magnitude: bool = False, dyn_null_slot: bool = False, locked: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.use_tdem = use_tdem
        self.beta = float(beta)
        self.flow_keep_magnitude = flow_keep_magnitude
        self.dyn_null_slot = dyn_null_slot
        self.attn = MultiHeadAttention(dim, num_heads, dropout)  # video -> text
        self.dropout = dropout_layer(dropout, locked)
        if use_tdem:
            self.flow_proj = nn.Sequential(LinearLayer(dim, dim, dropout, relu=True, norm=not flow_keep_magnitude),
                                           LinearLayer(dim, dim, dropout, relu=True))
            self.attn_dyn = MultiHeadAttention(dim, num_heads, dropout, null_slot=dyn_null_slot)  # dynamics -> text

    def forward(self, video: Tensor, pos: Tensor, start: Tensor | None, text: Tensor,
                text_bias: Tensor) -> Tensor:
        """video, pos [B, L, D]; start [D] (None without TDEM); text [B, M, D];
        text_bias [B, 1, 1, M] -> s [B, L, D]."""
        x = video + pos
        a_v = self.dropout(self.attn(x, text, text, text_bias))
        if not self.use_tdem:
            return video + a_v
        flow = self.flow_proj(temporal_differences(x, start))  # [B, L, D]
        a_t = self.attn_dyn(flow, text, text, text_bias)
        return self.beta * video + (1.0 - self.beta) * a_t + a_v

    def weights(self, start: Tensor | None) -> "TDWeights":
        """This layer's parameters (and the model's shared start token) as a flat record."""
        def mha(m: MultiHeadAttention) -> tuple[Tensor, ...]:
            return tuple(t for lin in (m.q_proj, m.k_proj, m.v_proj, m.out_proj)
                         for t in (lin.weight, lin.bias))

        if not self.use_tdem:
            return TDWeights(*mha(self.attn))
        flow = tuple(t for unit in self.flow_proj
                     for t in (getattr(unit.norm, "weight", None), getattr(unit.norm, "bias", None),
                               unit.linear.weight, unit.linear.bias))
        return TDWeights(*mha(self.attn), *mha(self.attn_dyn), *flow, start)


@dataclass
class TDWeights:
    """nn.Linear layout: weight [out, in], bias [out]. ``*_t`` / flow / start are None without TDEM;
    ``ln1_*`` are None with ``flow_keep_magnitude`` (no first LayerNorm).

    ``v`` = video -> text attention, ``t`` = dynamics -> text attention; ``f1`` / ``f2`` the two
    flow-projection units (LayerNorm ``ln*``, Linear ``w*``/``b*``).
    """

    wq_v: Tensor
    bq_v: Tensor
    wk_v: Tensor
    bk_v: Tensor
    wv_v: Tensor
    bv_v: Tensor
    wo_v: Tensor
    bo_v: Tensor
    wq_t: Tensor | None = None
    bq_t: Tensor | None = None
    wk_t: Tensor | None = None
    bk_t: Tensor | None = None
    wv_t: Tensor | None = None
    bv_t: Tensor | None = None
    wo_t: Tensor | None = None
    bo_t: Tensor | None = None
    ln1_w: Tensor | None = None
    ln1_b: Tensor | None = None
    w_f1: Tensor | None = None
    b_f1: Tensor | None = None
    ln2_w: Tensor | None = None
    ln2_b: Tensor | None = None
    w_f2: Tensor | None = None
    b_f2: Tensor | None = None
    start: Tensor | None = None

    def to(self, dtype: torch.dtype) -> "TDWeights":
        return TDWeights(*(None if (t := getattr(self, f.name)) is None else t.detach().to(dtype)
                           for f in fields(self)))


def td_interaction_reference(video: Tensor, pos: Tensor, text: Tensor, text_mask: Tensor,
                             w: TDWeights, num_heads: int, beta: float, dyn_null_slot: bool = False) -> Tensor:
    """Plain-PyTorch float64 oracle of ``TDCrossAttention.forward`` (eval mode).

    video, pos [B, L, D], text [B, M, D], text_mask [B, M] bool (True = real) -> s [B, L, D]
    in video's dtype. ``w.ln1_w`` None: the ``flow_keep_magnitude`` flow unit (no LayerNorm);
    ``dyn_null_slot``: the dynamics attention's softmax has one more score, 0, whose value is 0.
    """
    out_dtype = video.dtype
    video, pos, text = video.double(), pos.double(), text.double()
    w = w.to(torch.float64)
    b, n, d = video.shape
    dh = d // num_heads

    def heads(t: Tensor) -> Tensor:  # [B, S, D] -> [B, H, S, Dh]
        return t.reshape(b, t.shape[1], num_heads, dh).permute(0, 2, 1, 3)

    def attend(q_in: Tensor, wq, bq, wk, bk, wv, bv, wo, bo, null: bool = False) -> Tensor:  # [B, L, D] -> [B, L, D]
        q, k, v = heads(q_in @ wq.T + bq), heads(text @ wk.T + bk), heads(text @ wv.T + bv)
        scores = q @ k.transpose(-1, -2) / dh**0.5  # [B, H, L, M]
        scores = scores.masked_fill(~text_mask.bool()[:, None, None, :], float("-inf"))
        if null:  # the zero key scores exactly 0; its zero value adds nothing to p @ v
            scores = torch.cat((scores, scores.new_zeros(*scores.shape[:-1], 1)), dim=-1)  # [B, H, L, M + 1]
            v = torch.cat((v, v.new_zeros(b, num_heads, 1, dh)), dim=2)  # [B, H, M + 1, Dh]
        p = torch.softmax(scores, dim=-1)
        return (p @ v).permute(0, 2, 1, 3).reshape(b, n, d) @ wo.T + bo

    def unit(t: Tensor, g, beta_ln, wl, bl) -> Tensor:  # (LayerNorm) -> Linear -> ReLU
        if g is not None:
            t = torch.nn.functional.layer_norm(t, (d,), g, beta_ln)
        return torch.relu(t @ wl.T + bl)

    x = video + pos
    a_v = attend(x, w.wq_v, w.bq_v, w.wk_v, w.bk_v, w.wv_v, w.bv_v, w.wo_v, w.bo_v)
    if w.wq_t is None:
        return (video + a_v).to(out_dtype)
    t = x - torch.cat((w.start.expand(b, 1, d), x[:, :-1]), dim=1)  # Eq. 3
    flow = unit(unit(t, w.ln1_w, w.ln1_b, w.w_f1, w.b_f1), w.ln2_w, w.ln2_b, w.w_f2, w.b_f2)
    a_t = attend(flow, w.wq_t, w.bq_t, w.wk_t, w.bk_t, w.wv_t, w.bv_t, w.wo_t, w.bo_t, dyn_null_slot)
    return (beta * video + (1 - beta) * a_t + a_v).to(out_dtype)


class TDInteractionLayer(nn.Module):
    """One T2V / TD layer: ``TDCrossAttention``, then ``norm2(s + FFN(norm1(s)))`` (official).

    ``locked``: the dropouts on its clip tokens [B, L, D] (after A_v, in and after the FFN) are
    ``TimeLockedDropout`` (the opt-in ``time_locked_dropout``; training only): the next TD layer
    takes temporal differences of this layer's output. The attention weights' dropout stays.
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float,
                 use_tdem: bool, beta: float, flow_keep_magnitude: bool = False,
                 dyn_null_slot: bool = False, locked: bool = False) -> None:
        super().__init__()
        self.cross = TDCrossAttention(dim, num_heads, dropout, use_tdem, beta, flow_keep_magnitude,
                                      dyn_null_slot, locked)
        self.ffn = FeedForward(dim, ffn_dim, dropout, locked)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = dropout_layer(dropout, locked)

    def forward(self, video: Tensor, pos: Tensor, start: Tensor | None, text: Tensor,
                text_bias: Tensor) -> Tensor:
        """video, pos [B, L, D], start [D] or None, text [B, M, D], text_bias [B, 1, 1, M]
        -> [B, L, D]."""
        s = self.cross(video, pos, start, text, text_bias)
        return self.norm2(s + self.dropout(self.ffn(self.norm1(s))))


__all__ = ["TDCrossAttention", "TDInteractionLayer", "TDWeights", "td_interaction_reference",
           "temporal_differences"]
