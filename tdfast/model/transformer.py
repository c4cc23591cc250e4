"""Post-norm transformer encoder and decoder layers (DETR / Moment-DETR layout)."""
from __future__ import annotations

from torch import Tensor, nn

from tdfast.model.attention import MultiHeadAttention


class FeedForward(nn.Module):
    """Residual FFN block with post-norm: norm(x + Dropout(W2 Dropout(ReLU(W1 x))))."""

    def __init__(self, dim: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(ffn_dim, dim), nn.Dropout(dropout))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.net(x))


class EncoderLayer(nn.Module):
    """Self-attention (positions added to q and k) + FFN."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(dim, num_heads, dropout)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, dropout)

    def forward(self, x: Tensor, pos: Tensor, bias: Tensor) -> Tensor:
        """x, pos [B, S, D], bias [B, 1, 1, S] -> [B, S, D]."""
        qk = x + pos
        x = self.norm(x + self.dropout(self.attn(qk, qk, x, bias)))
        return self.ffn(x)


class DecoderLayer(nn.Module):
    """Moment-query self-attention, cross-attention to the video memory, FFN."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, num_heads, dropout)
        self.cross_attn = MultiHeadAttention(dim, num_heads, dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, dropout)

    def forward(self, tgt: Tensor, query_pos: Tensor, memory: Tensor, memory_pos: Tensor,
                memory_bias: Tensor) -> Tensor:
        """tgt, query_pos [B, N, D]; memory, memory_pos [B, L, D]; memory_bias [B, 1, 1, L]
        -> [B, N, D]. Every moment query is real, so self-attention has no mask."""
        q = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, q, tgt, None)))
        attended = self.cross_attn(tgt + query_pos, memory + memory_pos, memory, memory_bias)
        tgt = self.norm2(tgt + self.dropout2(attended))
        return self.ffn(tgt)
