"""Small building blocks: input projection, MLP, the feed-forward block, sine embeddings, TEF."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class TimeLockedDropout(nn.Module):
    """Dropout whose mask is shared by every position of a sequence ("locked" / variational
    dropout): x [B, L, D] -> x * m / (1 - p) with one Bernoulli(1 - p) mask m [B, 1, D] per
    sample and channel. The opt-in ``time_locked_dropout``: a temporal difference of two clips
    then subtracts two clips masked alike, instead of carrying two independent masks' noise.
    In eval mode (and with p = 0) it is the identity, as ``nn.Dropout``.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return torch.zeros_like(x)
        keep = torch.empty(x.shape[0], *([1] * (x.dim() - 2)), x.shape[-1], device=x.device, dtype=x.dtype)
        return x * keep.bernoulli_(1.0 - self.p) / (1.0 - self.p)  # mask [B, 1, D]

    def extra_repr(self) -> str:
        return f"p={self.p}"


def dropout_layer(p: float, locked: bool) -> nn.Module:
    """``TimeLockedDropout`` if ``locked`` (inputs [B, L, D]), else ``nn.Dropout``."""
    return TimeLockedDropout(p) if locked else nn.Dropout(p)


class LinearLayer(nn.Module):
    """QD-DETR's input projection unit: LayerNorm -> Dropout -> Linear -> (ReLU).

    ``norm=False`` leaves the LayerNorm out (an identity, no parameters): the opt-in
    ``flow_keep_magnitude`` flow unit, which must not rescale its input. ``locked``: the
    dropout is ``TimeLockedDropout`` (inputs [B, L, D]).
    """

    def __init__(self, in_dim: int, out_dim: int, dropout: float, relu: bool, norm: bool = True,
                 locked: bool = False) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim) if norm else nn.Identity()
        self.dropout = dropout_layer(dropout, locked)
        self.linear = nn.Linear(in_dim, out_dim)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = self.linear(self.dropout(self.norm(x)))
        return torch.relu(x) if self.relu else x


def input_projection(in_dim: int, out_dim: int, num_layers: int, dropout: float,
                     locked: bool = False) -> nn.Sequential:
    """``num_layers`` LinearLayers, ReLU on all but the last (QD-DETR ``n_input_proj``);
    ``locked``: their dropout is ``TimeLockedDropout`` (inputs [B, L, in_dim])."""
    dims = [in_dim] + [out_dim] * num_layers
    return nn.Sequential(*[
        LinearLayer(dims[i], dims[i + 1], dropout, relu=i < num_layers - 1, locked=locked)
        for i in range(num_layers)
    ])


class MLP(nn.Module):
    """Plain MLP with ReLU between layers (DETR's box head)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


class FeedForward(nn.Module):
    """The transformer feed-forward block of every layer: Linear -> PReLU -> Dropout -> Linear.

    The official code builds every T2V, encoder and decoder layer with ``activation='prelu'``:
    a learnable PReLU (one slope per layer, initialised to 0.25). Residual and norm belong to
    the layer, because the T2V layer wires them differently from the others. ``locked``: the
    dropout is ``TimeLockedDropout`` (inputs [B, L, D]).
    """

    def __init__(self, dim: int, ffn_dim: int, dropout: float, locked: bool = False) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.activation = nn.PReLU()
        self.dropout = dropout_layer(dropout, locked)
        self.linear2 = nn.Linear(ffn_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """x [..., D] -> [..., D]."""
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


def sine_positions(mask: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """DETR's normalized sine embedding over valid positions: mask [B, L] -> [B, L, dim].

    Positions are counted over real tokens only and scaled to (0, 2*pi] by the
    video's own length, so padding never changes a valid position's embedding.
    """
    m = mask.to(torch.float32)
    pos = m.cumsum(1)  # [B, L]
    pos = pos / (pos[:, -1:] + 1e-6) * (2 * math.pi)
    i = torch.arange(dim, dtype=torch.float32, device=mask.device)
    freq = temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / dim)  # [dim]
    x = pos[:, :, None] / freq  # [B, L, dim]
    return torch.stack((x[:, :, 0::2].sin(), x[:, :, 1::2].cos()), dim=3).flatten(2)


def anchor_sine_embedding(anchors: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """DAB-DETR's sine embedding of (center, width) anchors in [0, 1]: [B, N, 2] -> [B, N, dim].

    Each coordinate gets ``dim // 2`` interleaved sin/cos features of ``2*pi*coord``; center
    first, then width. The official code hard-codes 128 frequencies per coordinate, so it only
    runs at hidden_dim 256, where this is the same function.
    """
    n = dim // 2
    i = torch.arange(n, dtype=torch.float32, device=anchors.device)
    freq = temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / n)  # [n]
    parts = []
    for c in range(2):  # center, width
        x = anchors[:, :, c, None].float() * (2 * math.pi) / freq  # [B, N, n]
        parts.append(torch.stack((x[:, :, 0::2].sin(), x[:, :, 1::2].cos()), dim=3).flatten(2))
    return torch.cat(parts, dim=-1).to(anchors.dtype)  # [B, N, dim]


def temporal_endpoints(mask: Tensor) -> Tensor:
    """Moment-DETR's TEF: clip i of a video with n real clips -> (i/n, (i+1)/n); 0 on padding.

    mask [B, L] -> [B, L, 2].
    """
    m = mask.to(torch.float32)
    n = m.sum(1, keepdim=True).clamp(min=1.0)  # [B, 1]
    start = torch.arange(mask.shape[1], dtype=torch.float32, device=mask.device)[None] / n
    return torch.stack((start, start + 1.0 / n), dim=-1) * m[..., None]


def inverse_sigmoid(x: Tensor, eps: float = 1e-3) -> Tensor:
    """log(x / (1 - x)) with numerator and denominator each clamped at ``eps`` (official form:
    for x < eps this is log(eps / (1 - x)), not log(eps / (1 - eps)))."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))
