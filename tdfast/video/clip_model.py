"""CLIP's ViT image tower and text tower, as the official QD-DETR ``run_on_video`` uses them.

The math of OpenAI CLIP's ``VisualTransformer`` and text ``Transformer`` (pre-norm
residual blocks, QuickGELU MLP, class token, ``ln_post`` on it and ``proj``; a causal
text transformer whose ``ln_final`` states are returned as ``last_hidden_state``), with
the same parameter names, so an OpenAI state dict loads as is. The sizes are read from
the state dict's shapes (as CLIP's ``build_model`` does): ViT-B/32 and any smaller or
larger ViT work; ResNet CLIPs are refused.

QD-DETR's run_on_video loads the weights through CLIP's ``build_model``, which casts them
to float16 and, on CPU, back to float32; OpenAI's files are float16 already, so loading
them as float32 here gives the same numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tdfast.errors import InputError


@dataclass(frozen=True)
class ClipShape:
    """Sizes of a CLIP ViT, read from its state dict."""

    image_size: int  # pixels, square
    patch: int
    vision_width: int
    vision_layers: int
    embed_dim: int  # image feature size (512 for ViT-B/32)
    text_width: int  # token state size (512 for ViT-B/32)
    text_layers: int
    context_length: int  # 77
    vocab_size: int  # 49408

    @classmethod
    def from_state_dict(cls, sd: dict[str, Tensor], source: str) -> "ClipShape":
        if "visual.proj" not in sd:
            raise InputError(f"{source}: not a CLIP ViT state dict (no 'visual.proj'; ResNet CLIPs "
                             f"are not supported)")
        try:
            patch = sd["visual.conv1.weight"].shape[-1]
            grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
            return cls(
                image_size=patch * grid, patch=patch, vision_width=sd["visual.conv1.weight"].shape[0],
                vision_layers=_count_blocks(sd, "visual.transformer.resblocks."),
                embed_dim=sd["visual.proj"].shape[1], text_width=sd["ln_final.weight"].shape[0],
                text_layers=_count_blocks(sd, "transformer.resblocks."),
                context_length=sd["positional_embedding"].shape[0],
                vocab_size=sd["token_embedding.weight"].shape[0])
        except KeyError as e:
            raise InputError(f"{source}: CLIP state dict lacks {e.args[0]!r}") from None


def _count_blocks(sd: dict[str, Tensor], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})


class QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    """nn.MultiheadAttention's parameters (``in_proj_weight`` stacks q, k, v), batch-first."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        b, n, d = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # [B, N, 3D]
        q, k, v = qkv.view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)  # [B, H, N, d/H] each
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # [B, H, N, d/H]
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = Attention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("gelu", QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        x = x + self.attn(self.ln_1(x), causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(Block(width, heads) for _ in range(layers))

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        for block in self.resblocks:
            x = block(x, causal)
        return x


class ClipVision(nn.Module):
    """Image tower: [N, 3, S, S] CLIP-normalised pixels -> [N, embed_dim] image features
    (projected, not normalised: QD-DETR L2-normalises them afterwards)."""

    def __init__(self, shape: ClipShape) -> None:
        super().__init__()
        w = shape.vision_width
        self.conv1 = nn.Conv2d(3, w, shape.patch, stride=shape.patch, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(w))
        self.positional_embedding = nn.Parameter(torch.empty((shape.image_size // shape.patch) ** 2 + 1, w))
        self.ln_pre = nn.LayerNorm(w)
        self.transformer = Transformer(w, shape.vision_layers, w // 64)
        self.ln_post = nn.LayerNorm(w)
        self.proj = nn.Parameter(torch.empty(w, shape.embed_dim))

    def forward(self, pixels: Tensor) -> Tensor:
        x = self.conv1(pixels).flatten(2).transpose(1, 2)  # [N, grid*grid, W]
        cls = self.class_embedding.expand(x.shape[0], 1, -1)  # [N, 1, W]
        x = self.ln_pre(torch.cat([cls, x], dim=1) + self.positional_embedding)  # [N, 1+grid*grid, W]
        x = self.transformer(x)
        return self.ln_post(x[:, 0]) @ self.proj  # [N, embed_dim]


class ClipText(nn.Module):
    """Text tower: token ids [N, T] (T <= context_length) -> ``ln_final`` states [N, T, text_width].

    The attention is causal, so a token's state depends only on the tokens before it: running
    the first T positions gives the same states as CLIP's fixed 77 (T = the longest valid length).
    """

    def __init__(self, shape: ClipShape) -> None:
        super().__init__()
        w = shape.text_width
        self.token_embedding = nn.Embedding(shape.vocab_size, w)
        self.positional_embedding = nn.Parameter(torch.empty(shape.context_length, w))
        self.transformer = Transformer(w, shape.text_layers, w // 64)
        self.ln_final = nn.LayerNorm(w)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[1]]  # [N, T, W]
        return self.ln_final(self.transformer(x, causal=True))


def build_towers(sd: dict[str, Tensor], source: str) -> tuple[ClipVision, ClipText, ClipShape]:
    """Both towers in eval mode, float32, with the state dict's weights; InputError naming the
    file for a missing or wrongly shaped tensor."""
    shape = ClipShape.from_state_dict(sd, source)
    towers = (ClipVision(shape), ClipText(shape))
    for prefix, tower in zip(("visual.", ""), towers):
        wanted = tower.state_dict()
        for name, t in wanted.items():
            key = prefix + name
            if key not in sd:
                raise InputError(f"{source}: CLIP state dict lacks {key!r}")
            if sd[key].shape != t.shape:
                raise InputError(f"{source}: {key} has shape {tuple(sd[key].shape)}, expected {tuple(t.shape)}")
        tower.load_state_dict({n: sd[prefix + n].float() for n in wanted})
        tower.eval().requires_grad_(False)
    return towers[0], towers[1], shape
