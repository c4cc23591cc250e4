"""The official code's post-norm encoder layer and its DAB-DETR style moment decoder.

Decoder (one layer per ``DecoderLayer``; anchors are (center, width) in [0, 1]):

    sine  = anchor_sine_embedding(anchor)                    [B, N, D]
    qpos  = ref_point_head(sine)                             query position
    sine *= query_scale(tgt)                                 (not in layer 0)
    sine *= sigmoid(ref_anchor_head(tgt)) / anchor.width     width-modulated attention
    tgt   = layer(tgt, qpos, sine, memory)                   self-attn, cross-attn on
                                                             [content ; sine] (width 2D), FFN
    anchor' = sigmoid(bbox_embed(tgt) + inverse_sigmoid(anchor))   refined for the next layer

Layer i's outputs use the anchor it was given; the next layer's input anchor is detached
(as in DAB-DETR), the one used for outputs is not, so ``bbox_embed`` learns through the
auxiliary losses.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from tdfast.model.attention import MultiHeadAttention, attention, merge_heads, split_heads
from tdfast.model.layers import MLP, FeedForward, anchor_sine_embedding, inverse_sigmoid


class EncoderLayer(nn.Module):
    """Self-attention (positions added to q and k), then the FFN; post-norm."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(dim, num_heads, dropout)
        self.ffn = FeedForward(dim, ffn_dim, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: Tensor, pos: Tensor, bias: Tensor) -> Tensor:
        """x, pos [B, S, D], bias [B, 1, 1, S] -> [B, S, D]."""
        qk = x + pos
        x = self.norm1(x + self.dropout1(self.attn(qk, qk, x, bias)))
        return self.norm2(x + self.dropout2(self.ffn(x)))


class DecoderLayer(nn.Module):
    """Moment-query self-attention, conditional cross-attention to the video memory, FFN.

    Content and position are projected separately; the cross-attention concatenates, per
    head, the content part with the sine part (queries) or the memory position (keys), so its
    q/k heads are 2 * D / H wide. Only the first layer adds the query position to the content
    query (``first=True`` builds ``ca_q_pos``).
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float, first: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attn_dropout = dropout
        lin = lambda: nn.Linear(dim, dim)  # noqa: E731
        self.sa_q_content, self.sa_q_pos, self.sa_k_content, self.sa_k_pos = lin(), lin(), lin(), lin()
        self.sa_v, self.sa_out = lin(), lin()
        self.ca_q_content, self.ca_k_content, self.ca_k_pos = lin(), lin(), lin()
        self.ca_v, self.ca_q_sine, self.ca_out = lin(), lin(), lin()
        self.ca_q_pos = lin() if first else None
        self.ffn = FeedForward(dim, ffn_dim, dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout1, self.dropout2, self.dropout3 = (nn.Dropout(dropout), nn.Dropout(dropout),
                                                       nn.Dropout(dropout))

    def forward(self, tgt: Tensor, query_pos: Tensor, query_sine: Tensor, memory: Tensor,
                memory_pos: Tensor, memory_bias: Tensor) -> Tensor:
        """tgt, query_pos, query_sine [B, N, D]; memory, memory_pos [B, L, D];
        memory_bias [B, 1, 1, L] -> [B, N, D]. Every moment query is real: no self-attn mask."""
        h = self.num_heads
        p = self.attn_dropout if self.training else 0.0
        q = split_heads(self.sa_q_content(tgt) + self.sa_q_pos(query_pos), h)  # [B, H, N, Dh]
        k = split_heads(self.sa_k_content(tgt) + self.sa_k_pos(query_pos), h)
        v = split_heads(self.sa_v(tgt), h)
        tgt = self.norm1(tgt + self.dropout1(self.sa_out(merge_heads(attention(q, k, v, None, p)))))

        q = self.ca_q_content(tgt)  # [B, N, D]
        k = self.ca_k_content(memory)  # [B, L, D]
        k_pos = self.ca_k_pos(memory_pos)
        if self.ca_q_pos is not None:
            q = q + self.ca_q_pos(query_pos)
            k = k + k_pos
        q = torch.cat((split_heads(q, h), split_heads(self.ca_q_sine(query_sine), h)), -1)  # [B, H, N, 2Dh]
        k = torch.cat((split_heads(k, h), split_heads(k_pos, h)), -1)  # [B, H, L, 2Dh]
        a = attention(q, k, split_heads(self.ca_v(memory), h), memory_bias, p)  # [B, H, N, Dh]
        tgt = self.norm2(tgt + self.dropout2(self.ca_out(merge_heads(a))))
        return self.norm3(tgt + self.dropout3(self.ffn(tgt)))


class Decoder(nn.Module):
    """DAB-DETR decoder over the video memory; anchors refined layer by layer."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(dim, num_heads, ffn_dim, dropout, first=i == 0)
                                    for i in range(num_layers))
        self.norm = nn.LayerNorm(dim)
        self.query_scale = MLP(dim, dim, dim, 2)
        self.ref_point_head = MLP(dim, dim, dim, 2)
        self.ref_anchor_head = MLP(dim, dim, 1, 2)
        self.bbox_embed = MLP(dim, dim, 2, 3)  # anchor refinement (not the output span head)

    def forward(self, anchors: Tensor, memory: Tensor, memory_pos: Tensor, memory_bias: Tensor
                ) -> tuple[list[Tensor], list[Tensor]]:
        """anchors [N, 2] (before sigmoid); memory, memory_pos [B, L, D]; memory_bias [B, 1, 1, L]
        -> per layer: normalised hidden states [B, N, D] and the anchor it used [B, N, 2]."""
        b, d = memory.shape[0], memory.shape[-1]
        anchor = anchors.to(memory.dtype).sigmoid().expand(b, -1, -1)  # [B, N, 2]
        tgt = memory.new_zeros(b, anchors.shape[0], d)
        hidden, used = [], []
        for i, layer in enumerate(self.layers):
            ref = anchor.detach() if i else anchor  # this layer's input anchor [B, N, 2]
            sine = anchor_sine_embedding(ref, d)  # [B, N, D]
            query_pos = self.ref_point_head(sine)
            if i:
                sine = sine * self.query_scale(tgt)
            sine = sine * (self.ref_anchor_head(tgt).sigmoid() / ref[..., 1:])
            tgt = layer(tgt, query_pos, sine, memory, memory_pos, memory_bias)
            hidden.append(self.norm(tgt))
            used.append(anchor)
            if i + 1 < len(self.layers):
                anchor = (self.bbox_embed(tgt) + inverse_sigmoid(ref)).sigmoid()
        return hidden, used
