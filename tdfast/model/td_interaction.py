"""The TD interaction (paper Sec. 3.2, Eq. 2-6): the part a fused kernel replaces.

Per layer, with x = video tokens + positions [B, L, D] and text [B, M, D]:

    T   = [x_1 - st, x_2 - x_1, ..., x_L - x_{L-1}]        temporal-difference tokens
    K   = p_k(text),  V = p_v(text)                         shared by both attentions
    A_v = Attn(p_d(x), K, V)                                video   -> text
    A_t = Attn(p_t(T), K, V)                                dynamics -> text
    out = beta * o_v(A_v) + (1 - beta) * o_t(A_t)           Eq. 6 with output projections

With ``use_tdem`` off the layer is QD-DETR's plain cross-attention
(``out = o_v(A_v)``) and has no dynamics parameters at all.

``td_cross_attention_reference`` is the same math written as plainly as
possible (explicit concatenation, explicit softmax); it is the oracle for the
module and for every kernel.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tdfast.model.attention import attention, mask_to_bias, merge_heads, split_heads


def temporal_differences(x: Tensor, start: Tensor) -> Tensor:
    """Eq. 3: x [B, L, D], start token [D] -> [x_1 - st, x_2 - x_1, ...] [B, L, D]."""
    # Shift by concatenating first and slicing after: slicing x[:, :-1] before the cat makes
    # torch.export guard on L - 1 != 1 and pin L to the traced length.
    prev = torch.cat((start.expand(x.shape[0], 1, -1), x), dim=1)[:, : x.shape[1]]  # [B, L, D]
    return x - prev


class TDCrossAttention(nn.Module):
    """Video->text and dynamics->text cross-attention sharing one text K/V, merged by beta."""

    def __init__(self, dim: int, num_heads: int, use_tdem: bool, beta: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.use_tdem = use_tdem
        self.beta = float(beta)
        self.q_video = nn.Linear(dim, dim)  # p_d
        self.k_text = nn.Linear(dim, dim)  # p_k
        self.v_text = nn.Linear(dim, dim)  # p_v
        self.out_video = nn.Linear(dim, dim)
        if use_tdem:
            self.start_token = nn.Parameter(torch.randn(dim) * 0.02)  # st, Eq. 2
            self.q_dyn = nn.Linear(dim, dim)  # p_t
            self.out_dyn = nn.Linear(dim, dim)

    def forward(self, x: Tensor, text: Tensor, text_bias: Tensor) -> Tensor:
        """x [B, L, D] (video + positions), text [B, M, D], text_bias [B, 1, 1, M] -> [B, L, D]."""
        h = self.num_heads
        k = split_heads(self.k_text(text), h)  # [B, H, M, Dh]
        v = split_heads(self.v_text(text), h)
        q_v = self.q_video(x)  # [B, L, D]
        if not self.use_tdem:
            return self.out_video(merge_heads(attention(split_heads(q_v, h), k, v, text_bias)))
        q_t = self.q_dyn(temporal_differences(x, self.start_token))  # [B, L, D]
        # Both query sets against one K/V: one attention call over 2L query rows.
        q = split_heads(torch.cat((q_v, q_t), dim=1), h)  # [B, H, 2L, Dh]
        a = merge_heads(attention(q, k, v, text_bias))  # [B, 2L, D]
        n = x.shape[1]
        # Slices, not split(L)/chunk: those guard on 2L // L and pin L to the traced length in export.
        a_v, a_t = a[:, :n], a[:, n:]  # [B, L, D] each
        return self.beta * self.out_video(a_v) + (1.0 - self.beta) * self.out_dyn(a_t)

    def weights(self) -> "TDWeights":
        """This layer's parameters as a flat record (for the reference and the kernels)."""
        g = lambda m: (m.weight, m.bias)  # noqa: E731
        dyn = (*g(self.q_dyn), self.start_token, *g(self.out_dyn)) if self.use_tdem else (None,) * 5
        return TDWeights(*g(self.q_video), *g(self.k_text), *g(self.v_text), *g(self.out_video), *dyn)


@dataclass
class TDWeights:
    """nn.Linear layout: weight [out, in], bias [out]. Dynamics fields are None without TDEM."""

    wq_v: Tensor
    bq_v: Tensor
    wk: Tensor
    bk: Tensor
    wv: Tensor
    bv: Tensor
    wo_v: Tensor
    bo_v: Tensor
    wq_t: Tensor | None = None
    bq_t: Tensor | None = None
    start: Tensor | None = None
    wo_t: Tensor | None = None
    bo_t: Tensor | None = None


def td_cross_attention_reference(x: Tensor, text: Tensor, text_mask: Tensor, w: TDWeights,
                                 num_heads: int, beta: float) -> Tensor:
    """Plain-PyTorch oracle of ``TDCrossAttention.forward``.

    x [B, L, D], text [B, M, D], text_mask [B, M] bool (True = real) -> [B, L, D].
    Computes in float64 internally for a tight oracle, returns x's dtype.
    """
    out_dtype = x.dtype
    x, text = x.double(), text.double()
    w = TDWeights(*(None if t is None else t.double() for t in vars(w).values()))
    b, n, d = x.shape
    dh = d // num_heads

    def heads(t: Tensor) -> Tensor:  # [B, S, D] -> [B, H, S, Dh]
        return t.reshape(b, t.shape[1], num_heads, dh).permute(0, 2, 1, 3)

    def attend(q: Tensor) -> Tensor:  # [B, L, D] -> [B, L, D]
        k, v = heads(text @ w.wk.T + w.bk), heads(text @ w.wv.T + w.bv)
        scores = heads(q) @ k.transpose(-1, -2) / dh**0.5  # [B, H, L, M]
        scores = scores + (~text_mask.bool())[:, None, None, :].double() * -1e4
        p = torch.softmax(scores, dim=-1)
        return (p @ v).permute(0, 2, 1, 3).reshape(b, n, d)

    out_v = attend(x @ w.wq_v.T + w.bq_v) @ w.wo_v.T + w.bo_v
    if w.wq_t is None:
        return out_v.to(out_dtype)
    start = w.start.expand(b, 1, d)
    t = x - torch.cat((start, x[:, :-1]), dim=1)  # Eq. 3
    out_t = attend(t @ w.wq_t.T + w.bq_t) @ w.wo_t.T + w.bo_t
    return (beta * out_v + (1 - beta) * out_t).to(out_dtype)


class TDInteractionLayer(nn.Module):
    """One TD layer: TD cross-attention, then residual + FFN (post-norm, as QD-DETR's T2V layer)."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float,
                 use_tdem: bool, beta: float) -> None:
        super().__init__()
        self.cross = TDCrossAttention(dim, num_heads, use_tdem, beta)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(ffn_dim, dim))
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, video: Tensor, pos: Tensor, text: Tensor, text_bias: Tensor) -> Tensor:
        """video [B, L, D], pos [B, L, D], text [B, M, D], text_bias [B, 1, 1, M] -> [B, L, D]."""
        h = self.norm1(video + self.dropout1(self.cross(video + pos, text, text_bias)))
        return self.norm2(h + self.dropout2(self.ffn(h)))


__all__ = ["TDCrossAttention", "TDInteractionLayer", "TDWeights", "mask_to_bias",
           "td_cross_attention_reference", "temporal_differences"]
