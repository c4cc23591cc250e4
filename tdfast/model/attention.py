"""The one attention implementation, plus the finite additive masks it takes.

Masks in tdfast are bool with True = real token. Attention takes an additive
bias instead: 0 on real keys, ``MASK_BIAS`` (large, negative, *finite*) on
padding. Finite so that fp16/bf16 never see -inf and a fused kernel can use
the same convention; a query row with no real key at all is rejected as an
input error before it reaches here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# exp(-1e4) underflows to exactly 0 in fp32 and is representable in fp16/bf16.
MASK_BIAS = -1e4


def mask_to_bias(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Key mask [B, M] (True = real) -> additive bias [B, 1, 1, M] (0 or MASK_BIAS)."""
    return (~mask.bool()).to(dtype)[:, None, None, :] * MASK_BIAS


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """[B, L, D] -> [B, H, L, D/H]."""
    b, n, d = x.shape
    return x.view(b, n, num_heads, d // num_heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """[B, H, L, Dh] -> [B, L, H*Dh]."""
    b, h, n, dh = x.shape
    return x.transpose(1, 2).reshape(b, n, h * dh)


def attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, dropout_p: float = 0.0) -> Tensor:
    """softmax(q k^T / sqrt(Dh) + bias) v.

    q [B, H, Lq, Dh], k and v [B, H, Lk, Dh], bias broadcastable to [B, H, Lq, Lk]
    (None: every key is real)
    -> [B, H, Lq, Dh].
    """
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p)


def append_null(k: Tensor, v: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """One more key / value slot, all zeros: k, v [B, H, S, Dh] -> [B, H, S + 1, Dh];
    bias [B, 1, 1, S] -> [B, 1, 1, S + 1] with 0 (a real key) on the new slot."""
    k = torch.cat((k, k.new_zeros(*k.shape[:-2], 1, k.shape[-1])), dim=-2)
    v = torch.cat((v, v.new_zeros(*v.shape[:-2], 1, v.shape[-1])), dim=-2)
    if bias is not None:
        bias = torch.cat((bias, bias.new_zeros(*bias.shape[:-1], 1)), dim=-1)
    return k, v, bias


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate q/k/v/out projections (DETR layout).

    ``null_slot=True`` appends one key and one value that are exactly zero after projection
    (no parameters): a query can put its weight on "nothing", so the output's size, not
    only its direction, says how well the query matches any key.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, null_slot: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.null_slot = null_slot
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, bias: Tensor | None) -> Tensor:
        """query [B, Lq, D], key/value [B, Lk, D], bias [B, 1, 1, Lk] or None -> [B, Lq, D]."""
        h = self.num_heads
        q = split_heads(self.q_proj(query), h)
        k = split_heads(self.k_proj(key), h)
        v = split_heads(self.v_proj(value), h)
        if self.null_slot:
            k, v, bias = append_null(k, v, bias)  # [B, H, Lk + 1, Dh], bias [B, 1, 1, Lk + 1]
        p = self.dropout if self.training else 0.0
        return self.out_proj(merge_heads(attention(q, k, v, bias, p)))

    def match_weight(self, query: Tensor, key: Tensor, bias: Tensor | None) -> Tensor:
        """How much each query attends to real keys, not to the null slot: 1 - the null slot's
        softmax weight, averaged over heads. query [B, Lq, D], key [B, Lk, D], bias as in
        ``forward`` -> [B, Lq] in [0, 1]. Needs ``null_slot`` (the training loss
        ``w_dyn_match`` reads it)."""
        if not self.null_slot:
            raise ValueError("match_weight needs an attention built with null_slot=True")
        h = self.num_heads
        q, k = split_heads(self.q_proj(query), h), split_heads(self.k_proj(key), h)  # [B, H, L, Dh]
        scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5  # [B, H, Lq, Lk]
        if bias is not None:
            scores = scores + bias
        scores = torch.cat((scores, scores.new_zeros(*scores.shape[:-1], 1)), dim=-1)  # the null key scores 0
        return 1.0 - scores.softmax(-1)[..., -1].mean(1)
