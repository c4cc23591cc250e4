"""Tile sizes of the fused TD kernels: the default the launcher picks, every choice it can make,
and the checks that turn a bad explicit choice into an ``InputError``.

Two kernels per TD layer (``kernels/td_interaction.py``):

* ``text_kv`` -- grid B x (H / kv_heads): projects the text into K_v, V_v (, K_t, V_t) once per
  (batch element, head block);
* ``rows`` -- grid ceil(B * L / block_l): one program owns ``block_l`` rows of the flattened
  [B * L, D] video and every head, so the LayerNorms of the flow projection see whole rows
  and the output projection sums heads in registers.

The default is a function of (dtype, B, L, M, D, H) only, so ``python -m tdfast.kernels.aot``
compiles exactly what the launcher will run. docs/kernels.md has the arithmetic behind it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from tdfast.errors import InputError

SMS = 132  # streaming multiprocessors of an H100 SXM: the wave the row split aims to fill
BLOCK_LS = (16, 32, 64)  # rows per program the default can pick
MAX_TEXT_LEN = 64  # M: all text keys are one register tile


def next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def is_pow2(n: object) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n > 0 and n & (n - 1) == 0


@dataclass(frozen=True)
class LaunchConfig:
    """Tiles and launch parameters of both kernels (all powers of two)."""

    block_l: int  # rows kernel: flattened video rows per program
    block_k: int  # rows kernel: reduction chunk of the x-side GEMMs (flow 1, video query)
    block_n: int  # rows kernel: output-column chunk (flow 2 -> dynamics query, output projection)
    num_warps: int  # rows kernel
    num_stages: int  # rows kernel: software pipelining depth of its K / N loops
    kv_heads: int  # text_kv kernel: heads per program
    kv_num_warps: int = 4

    @property
    def name(self) -> str:
        """The rows kernel's tiles, e.g. ``bl64_bk64_bn64_w8_s2``."""
        return f"bl{self.block_l}_bk{self.block_k}_bn{self.block_n}_w{self.num_warps}_s{self.num_stages}"

    @property
    def kv_name(self) -> str:
        """The text kernel's tiles, e.g. ``kvh2_bk64_w4``."""
        return f"kvh{self.kv_heads}_bk{self.block_k}_w{self.kv_num_warps}"


def block_ls(dtype: torch.dtype, tf32: bool = False) -> tuple[int, ...]:
    """Row tiles the default may pick. fp32 (IEEE or TF32) stays at 16 rows: at 32 ptxas
    spills (IEEE products are FMA outer products with register operands; TF32 spills 1.5 KB
    at 4 warps), see the AOT record (``python -m tdfast.kernels.aot``)."""
    return BLOCK_LS if dtype in (torch.float16, torch.bfloat16) else BLOCK_LS[:1]


def _tile_for(dtype: torch.dtype, tf32: bool) -> int:
    """K / N chunk: one [chunk, 256] weight tile is 32 KB in 16-bit at 64, 32 KB in fp32 at 32."""
    return 64 if dtype in (torch.float16, torch.bfloat16) else 32


def default_config(dtype: torch.dtype, batch: int, video_len: int, text_len: int, dim: int,
                   num_heads: int, tf32: bool = False) -> LaunchConfig:
    """What the launcher runs when the caller passes no tiles.

    block_l: the largest of 16 / 32 / 64 that still gives one full wave (>= SMS programs);
    small batches get 16-row programs (5 at B = 1, L = 75) so the weights, read once per
    program, are spread over more SMs. Larger tiles read the weights fewer times in total
    (every program reads all of them): that decides B = 256 (docs/kernels.md, roofline).
    """
    rows = batch * video_len
    block_l = next((bl for bl in reversed(block_ls(dtype, tf32)) if -(-rows // bl) >= SMS), BLOCK_LS[0])
    chunk = min(_tile_for(dtype, tf32), max(16, next_pow2(dim)))
    heads = num_heads
    kv_heads = max(1, min(heads, 2))
    return LaunchConfig(block_l=block_l, block_k=chunk, block_n=chunk,
                        num_warps=4 if block_l <= 16 else 8, num_stages=2, kv_heads=kv_heads)


def all_configs(dtype: torch.dtype, dim: int, num_heads: int, tf32: bool = False) -> list[LaunchConfig]:
    """Every configuration ``default_config`` can return for this dtype and width (one per block_l)."""
    seen: dict[str, LaunchConfig] = {}
    for block_l in block_ls(dtype, tf32):
        rows = block_l * SMS  # a (B, L) for which the default picks this block_l
        cfg = default_config(dtype, 1, rows, 1, dim, num_heads, tf32)
        seen.setdefault(cfg.name + cfg.kv_name, cfg)
    return list(seen.values())


def check_config(cfg: LaunchConfig, dim: int, num_heads: int) -> None:
    """``InputError`` naming the field if a tile is not a power of two or out of its range."""
    bd = max(16, next_pow2(dim))
    limits = {"block_l": (16, 128), "block_k": (16, bd), "block_n": (16, bd), "num_warps": (1, 16),
              "kv_num_warps": (1, 16), "kv_heads": (1, num_heads)}
    for name, (lo, hi) in limits.items():
        value = getattr(cfg, name)
        if not is_pow2(value) or not lo <= value <= hi:
            raise InputError(f"{name}: expected a power of two in [{lo}, {hi}], got {value!r}")
    if not isinstance(cfg.num_stages, int) or not 1 <= cfg.num_stages <= 4:
        raise InputError(f"num_stages: expected an integer in [1, 4], got {cfg.num_stages!r}")
    if num_heads % cfg.kv_heads:
        raise InputError(f"kv_heads: expected a divisor of num_heads={num_heads}, got {cfg.kv_heads}")
