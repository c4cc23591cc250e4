"""Synthetic video files (PyAV-encoded) and random CLIP weights for tests, fixtures and benchmarks.

``write_video`` draws scenes of smooth colour gradients with a moving square and a little
noise, cutting to a new scene every few seconds, and encodes them with the codec asked
for (H.264 by default). ``random_clip_state_dict`` builds a CLIP ViT state dict from a seed
in OpenAI's names and layout (float16, as OpenAI's files), so a test can rebuild the exact
weights a fixture was made with instead of storing them.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tdfast.video.decode import _av


def _scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A background [H, W, 3] float and a square's colour [3]."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    c0, c1, c2 = rng.uniform(0, 255, (3, 3))
    bg = (c0 + np.outer(yy.ravel() / height, c1 - c0).reshape(height, width, 3)
          + np.outer(xx.ravel() / width, c2 - c0).reshape(height, width, 3) / 2)
    return bg, rng.uniform(0, 255, 3)


def write_video(path: str | Path, seconds: float, fps: float = 30, width: int = 320, height: int = 240,
                scene_seconds: float = 3.0, codec: str = "libx264", noise: float = 1.5,
                bit_rate: int | None = None, seed: int = 0) -> Path:
    """Write ``seconds`` of synthetic video at ``fps`` (may be fractional, e.g. 29.97) to ``path``.

    ``noise``: std of the Gaussian pixel noise (grey levels; drawn once per scene and shifted
    frame to frame). ``bit_rate`` (bits/s): encode at that average rate instead of x264's
    constant quality (crf 23), e.g. 3_000_000 for a typical 720p stream's decoding cost.
    """
    av = _av()
    rng = np.random.default_rng(seed)
    rate = Fraction(fps).limit_denominator(1001)
    n_frames = int(round(seconds * float(rate)))
    path = Path(path)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if bit_rate is not None:
            stream.bit_rate = bit_rate
        if codec == "libx264":
            stream.options = {"preset": "veryfast", **({} if bit_rate else {"crf": "23"})}
        side = max(8, min(width, height) // 4)
        for i in range(n_frames):
            t = i / float(rate)
            if i == 0 or int(t / scene_seconds) != int((i - 1) / float(rate) / scene_seconds):
                bg, colour = _scene(rng, height, width)
                grain = rng.normal(0, noise, (height + 16, width + 16, 3)).astype(np.float32)
            img = bg.astype(np.float32)
            x = int((width - side) * (0.5 + 0.5 * np.sin(1.3 * t)))
            y = int((height - side) * (0.5 + 0.5 * np.cos(0.9 * t)))
            img[y: y + side, x: x + side] = colour
            dy, dx = (i * 3) % 16, (i * 5) % 16
            img += grain[dy: dy + height, dx: dx + width]
            frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def random_clip_state_dict(seed: int, vision_width: int = 128, vision_layers: int = 2, patch: int = 32,
                           image_size: int = 224, embed_dim: int = 512, text_width: int = 128,
                           text_layers: int = 2, context_length: int = 77,
                           vocab_size: int = 49408) -> dict[str, Tensor]:
    """A CLIP ViT state dict in OpenAI's names, drawn from ``seed`` (float16 weights, LayerNorm
    weights near 1). The defaults are a small ViT with ViT-B/32's input and output sizes;
    ``vision_width=768, vision_layers=12, text_width=512, text_layers=12`` is ViT-B/32's shape."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, Tensor] = {}

    def normal(name: str, *shape: int, std: float, mean: float = 0.0) -> None:
        sd[name] = (mean + std * torch.randn(*shape, generator=g)).half()

    def blocks(prefix: str, width: int, layers: int) -> None:
        for i in range(layers):
            b = f"{prefix}resblocks.{i}."
            normal(b + "attn.in_proj_weight", 3 * width, width, std=width ** -0.5)
            normal(b + "attn.in_proj_bias", 3 * width, std=0.02)
            normal(b + "attn.out_proj.weight", width, width, std=width ** -0.5)
            normal(b + "attn.out_proj.bias", width, std=0.02)
            for ln in ("ln_1", "ln_2"):
                normal(b + ln + ".weight", width, std=0.1, mean=1.0)
                normal(b + ln + ".bias", width, std=0.1)
            normal(b + "mlp.c_fc.weight", 4 * width, width, std=width ** -0.5)
            normal(b + "mlp.c_fc.bias", 4 * width, std=0.02)
            normal(b + "mlp.c_proj.weight", width, 4 * width, std=(4 * width) ** -0.5)
            normal(b + "mlp.c_proj.bias", width, std=0.02)

    grid = image_size // patch
    normal("visual.conv1.weight", vision_width, 3, patch, patch, std=(3 * patch * patch) ** -0.5)
    normal("visual.class_embedding", vision_width, std=vision_width ** -0.5)
    normal("visual.positional_embedding", grid * grid + 1, vision_width, std=vision_width ** -0.5)
    for ln in ("visual.ln_pre", "visual.ln_post"):
        normal(ln + ".weight", vision_width, std=0.1, mean=1.0)
        normal(ln + ".bias", vision_width, std=0.1)
    blocks("visual.transformer.", vision_width, vision_layers)
    normal("visual.proj", vision_width, embed_dim, std=vision_width ** -0.5)
    normal("token_embedding.weight", vocab_size, text_width, std=0.02)
    normal("positional_embedding", context_length, text_width, std=0.01)
    blocks("transformer.", text_width, text_layers)
    normal("ln_final.weight", text_width, std=0.1, mean=1.0)
    normal("ln_final.bias", text_width, std=0.1)
    normal("text_projection", text_width, embed_dim, std=text_width ** -0.5)
    sd["logit_scale"] = torch.tensor(np.log(1 / 0.07), dtype=torch.float32)
    return sd
