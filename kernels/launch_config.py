"""Tile sizes of the fused TD kernels: the default the launcher picks, every choice it can make,
and the checks that turn a bad explicit choice into an ``InputError``.

Two kernels per TD layer (``kernels/td_interaction.py``):

* ``text_kv`` -- grid ceil(B * M / kv_block_t) x (S * P / kv_block_c): projects the flattened
  text into K_v, V_v (, K_t, V_t) once (P = H * padded head dim, S = 2 or 4 sets);
* ``rows`` -- grid ceil(B * L / block_l): one program owns ``block_l`` rows of the flattened
  [B * L, D] video and every head, so the LayerNorms of the flow projection see whole rows
  and the output projection sums heads in registers.

The default is a function of (dtype, B, L, M, D, H), the target's SM version and the Triton
version (3.6, 3.8 and 3.9 generate code of different register pressure: the 16-bit tile budget is
measured per Triton version and arch, and probed once for a version not measured, ``tile_probe``),
so ``python -m tdfast.kernels.aot --arch N`` compiles exactly what the launcher will run on sm_N
with the installed Triton. docs/kernels.md has the arithmetic behind it.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import NamedTuple

import torch

from tdfast.errors import InputError
from tdfast.kernels.packing import padded_head_dim

SMS = 132  # streaming multiprocessors of an H100 SXM: the wave the row split aims to fill
BLOCK_LS = (16, 32, 64)  # rows per program the default can pick
MAX_TEXT_LEN = 64  # M: all text keys are one register tile
TUNED_ARCH = 90  # the SM version the defaults were fitted for (H100); also the CPU interpreter's


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
    kv_block_t: int  # text_kv kernel: flattened text rows per program
    kv_block_c: int  # text_kv kernel: projection columns per program (divides P)
    kv_num_warps: int
    head_groups: int = 2  # rows kernel: heads attend in this many groups, one after the other
    kv_num_stages: int = 2  # text_kv kernel

    @property
    def name(self) -> str:
        """The rows kernel's tiles, e.g. ``bl64_bk64_bn64_w8_s2``."""
        return (f"bl{self.block_l}_bk{self.block_k}_bn{self.block_n}_hg{self.head_groups}"
                f"_w{self.num_warps}_s{self.num_stages}")

    @property
    def kv_name(self) -> str:
        """The text kernel's tiles, e.g. ``bt128_bc128_bk64_w8_s2``."""
        return (f"bt{self.kv_block_t}_bc{self.kv_block_c}_bk{self.block_k}_w{self.kv_num_warps}"
                f"_s{self.kv_num_stages}")


def device_arch(device: torch.device | str | None = None) -> int:
    """SM version (10 * major + minor, e.g. 90 for an H100, 80 for an A100) of a CUDA device
    (default: the current one); ``TUNED_ARCH`` for anything else (CPU under the interpreter,
    or no GPU at all). Reads cached device properties: no sync, fine under CUDA-graph capture."""
    if device is None:
        if not torch.cuda.is_available():
            return TUNED_ARCH
        device = torch.device("cuda", torch.cuda.current_device())
    device = torch.device(device)
    if device.type != "cuda":
        return TUNED_ARCH
    major, minor = torch.cuda.get_device_capability(device)
    return 10 * major + minor


class Fit16(NamedTuple):
    """The 16-bit rows-kernel tiles ptxas compiles without spilling, for one Triton generation
    and arch (fp32 / TF32 tiles do not depend on either)."""

    block_ls: tuple[int, ...]  # row tiles the default may pick
    warps_16_rows: int  # num_warps of a 16-row tile
    chunk_64_keys: int  # K / N chunk when the key tile is 64 (M > 32)
    stages_64_keys: int  # software-pipelining stages when the key tile is 64


# The 16-bit tile budgets, largest first: what the probe (``tile_probe``) tries in this order,
# taking the first that compiles without a spill.
FIT16_CANDIDATES = (
    Fit16(BLOCK_LS, 4, 64, 2),       # up to 64 rows: Triton 3.9 on sm_90
    Fit16(BLOCK_LS[:2], 4, 64, 2),   # up to 32 rows: Triton 3.9 on sm_80
    Fit16(BLOCK_LS[:2], 4, 32, 1),   # up to 32 rows, 64 keys in 32-column chunks unpipelined
    Fit16(BLOCK_LS[:1], 8, 32, 1),   # 16 rows, 8 warps, 32-column chunks unpipelined: Triton 3.6
)
SAFEST_FIT16 = FIT16_CANDIDATES[-1]

# Measured with the AOT tool (``python -m tdfast.kernels.aot``, registers a thread at bf16,
# D = 256, 8 heads; docs/kernels.md has the full table): (Triton major.minor, sm_90 or newer)
# -> index into FIT16_CANDIDATES. Any other Triton is probed once per arch (``tile_probe``).
# * Triton 3.9: 16 rows on 4 warps (204 registers, none spilled); sm_90 goes to 64 rows
#   (237), sm_80 stops at 32: without wgmma, mma.sync keeps its operands in registers and
#   64 rows spilled 200-380 B (32 rows: 190, none).
# * Triton 3.8 (probed, then the defaults recorded: kernels_aot_triton38.json): 64 rows spill
#   1.9-9.1 KB on sm_90 (0.5-2.5 KB on sm_80); 32 rows are clean at 32 keys but spill at 64 keys
#   (140 / 224 B pipelined in 64-column chunks, 40 / 312 B in 32-column chunks unpipelined), so
#   rows stop at 16 on 8 warps, as under 3.6.
# * Triton 3.6 (the GPU machine's) generates heavier code: every one of those tiles hits
#   255 registers and spills (16 rows on 4 warps 96-224 B, 32 rows 56-72 B even with 4 head
#   groups or 1 stage, 64 rows 1.8 KB on sm_90). 16 rows on 8 warps is clean on both archs
#   (M = 32: 196 / 197 registers; M = 16: 190 / 150); at 64 keys it still spills 16-112 B
#   unless the weight chunks shrink to 32 columns without pipelining (206 / 208, none; with
#   2 stages 20-32 B, with 3 stages 255 registers). Rows stop at 16 on both archs.
MEASURED_FIT16 = {((3, 9), True): 0, ((3, 9), False): 1, ((3, 8), True): 3, ((3, 8), False): 3,
                 ((3, 6), True): 3, ((3, 6), False): 3}


def installed_triton() -> str | None:
    """``triton.__version__``, or None where triton is not installed."""
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def triton_minor(version: str | None) -> tuple[int, int] | None:
    """(major, minor) of a Triton version string ("3.8.0" -> (3, 8)); None if it has none."""
    found = re.match(r"(\d+)\.(\d+)", version or "")
    return (int(found[1]), int(found[2])) if found else None


def fit_16bit(arch: int = TUNED_ARCH, triton_version: str | None = None) -> Fit16:
    """The 16-bit tile budget for sm_<arch> and that Triton version (default: the installed one):
    measured (``MEASURED_FIT16``), else what the probe found and cached for this version and
    arch (``tile_probe.ensure_fit16``), else the safest budget (16 rows; no probe has run yet,
    e.g. under the CPU interpreter, where registers do not exist)."""
    version = installed_triton() if triton_version is None else triton_version
    known = known_fit16(version, arch)
    return FIT16_CANDIDATES[known] if known is not None else SAFEST_FIT16


def known_fit16(version: str | None, arch: int) -> int | None:
    """Index into FIT16_CANDIDATES for Triton ``version`` on sm_<arch>: measured
    (``MEASURED_FIT16``), else the probe's cached verdict; None when neither exists."""
    measured = MEASURED_FIT16.get((triton_minor(version), arch >= 90))
    if measured is not None:
        return measured
    from tdfast.kernels.tile_cache import cached_fit16

    probed = cached_fit16(version, arch)
    return probed if probed is not None and probed < len(FIT16_CANDIDATES) else None


def block_ls(dtype: torch.dtype, tf32: bool = False, arch: int = TUNED_ARCH,
             triton_version: str | None = None, fit: Fit16 | None = None) -> tuple[int, ...]:
    """Row tiles the default may pick (see the AOT records, ``python -m tdfast.kernels.aot``).

    fp32 (IEEE or TF32) stays at 16 rows: at 32 ptxas spills (IEEE products are FMA outer
    products with register operands; TF32 spilled 1.5 KB at 4 warps). 16-bit: ``fit`` (default
    ``fit_16bit(arch, triton_version)``: up to 64 rows on sm_90 with Triton 3.9, 16 with 3.6)."""
    if dtype not in (torch.float16, torch.bfloat16):
        return BLOCK_LS[:1]
    return (fit or fit_16bit(arch, triton_version)).block_ls


def _tile_for(dtype: torch.dtype, tf32: bool) -> int:
    """K / N chunk: one [chunk, 256] weight tile is 32 KB in 16-bit at 64, 32 KB in fp32 at 32."""
    return 64 if dtype in (torch.float16, torch.bfloat16) else 32


def default_config(dtype: torch.dtype, batch: int, video_len: int, text_len: int, dim: int,
                   num_heads: int, tf32: bool = False, arch: int | None = None,
                   triton_version: str | None = None, fit: Fit16 | None = None) -> LaunchConfig:
    """What the launcher runs on sm_<arch> when the caller passes no tiles (``arch``: SM
    version, 10 * major + minor; default: the current CUDA device's, ``device_arch()``; the
    launcher passes its tensors' device), compiled by Triton ``triton_version`` (default: the
    installed one; its 16-bit tile budget, ``fit_16bit``; ``fit`` overrides it: the probe's candidates).

    rows kernel, block_l: the largest row tile (16 / 32 / 64; below sm_90: 16 / 32; fp32 and
    Triton 3.6: 16) that still gives one full wave (>= SMS programs). Every program reads all six D x D
    row-side weights, so larger tiles read them fewer times in total (that decides B = 256),
    while small batches get 16-row programs (5 at B = 1, L = 75) that spread the weight reads over more SMs.
    text kernel: the same rule for its row tile (16 .. 128 text rows; fp32: 16 .. 32), with
    128-column blocks once there are >= 1024 text rows, else 64 (more programs at small B).
    """
    arch = device_arch() if arch is None else arch
    sixteen_bit = dtype in (torch.float16, torch.bfloat16)
    fit = fit or (fit_16bit(arch, triton_version) if sixteen_bit else SAFEST_FIT16)
    block_m = max(16, next_pow2(text_len))
    chunk = fit.chunk_64_keys if sixteen_bit and block_m >= 64 else _tile_for(dtype, tf32)
    chunk = min(chunk, max(16, next_pow2(dim)))
    block_l = _fill(batch * video_len, block_ls(dtype, tf32, arch, triton_version, fit), 1)
    padded = num_heads * padded_head_dim(dim // num_heads)
    wide = sixteen_bit and batch * text_len >= 1024
    kv_block_c = min(128 if wide else 64, padded)
    kv_block_t = _fill(batch * text_len, (16, 32, 64, 128) if wide else (16, 32), 4 * padded // kv_block_c)
    # Register budget, from the AOT records (python -m tdfast.kernels.aot): four head groups
    # where score / output tiles are large (64 rows or 64 keys); 64-row tiles without software
    # pipelining (its prefetched operands spilled 0.9 KB a thread; without it: 235 registers, no
    # spill); TF32, and fp32 with 64 keys, on 8 warps (4 spilled); 16-bit: ``fit``.
    big = block_l >= 64 or block_m >= 64
    head_groups = 4 if big and num_heads >= 4 and num_heads % 4 == 0 else 2
    num_warps = fit.warps_16_rows if block_l <= 16 and sixteen_bit else 8
    num_stages = 1 if block_l >= 64 else fit.stages_64_keys if sixteen_bit and block_m >= 64 else 2
    return LaunchConfig(block_l=block_l, block_k=chunk, block_n=chunk, num_warps=num_warps,
                        num_stages=num_stages, head_groups=head_groups,
                        kv_block_t=kv_block_t, kv_block_c=kv_block_c,
                        kv_num_warps=8 if kv_block_t * kv_block_c >= 64 * 128 else 4)


def _fill(rows: int, tiles: tuple[int, ...], col_blocks: int) -> int:
    """The largest tile that still gives >= SMS programs (else the smallest)."""
    return next((t for t in reversed(tiles) if -(-rows // t) * col_blocks >= SMS), tiles[0])


def all_configs(dtype: torch.dtype, dim: int, num_heads: int, tf32: bool = False,
                arch: int | None = None, triton_version: str | None = None,
                fit: Fit16 | None = None) -> list[LaunchConfig]:
    """Every configuration ``default_config`` can return on sm_<arch> (default: the current
    device's) with Triton ``triton_version`` (default: the installed one; ``fit``: a 16-bit tile
    budget instead of that version's) for this dtype and width, found by running it over batch sizes 1 .. 4096,
    L = 16 / 75 / 150 and M tiles 32 / 64 (the choices depend only on B * L, B * M and the M
    tile, through thresholds those sizes cross)."""
    arch = device_arch() if arch is None else arch
    seen: dict[str, LaunchConfig] = {}
    for batch in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096):
        for video_len, text_len in itertools.product((16, 75, 150), (32, 64)):
            cfg = default_config(dtype, batch, video_len, text_len, dim, num_heads, tf32, arch,
                                 triton_version, fit)
            seen.setdefault(cfg.name + cfg.kv_name, cfg)
    return list(seen.values())


def check_config(cfg: LaunchConfig, dim: int, num_heads: int) -> None:
    """``InputError`` naming the field if a tile is not a power of two or out of its range."""
    bd = max(16, next_pow2(dim))
    padded = num_heads * padded_head_dim(dim // num_heads)
    limits = {"block_l": (16, 128), "block_k": (16, bd), "block_n": (16, bd), "num_warps": (1, 16),
              "kv_block_t": (16, 128), "kv_block_c": (16, padded), "kv_num_warps": (1, 16)}
    for name, (lo, hi) in limits.items():
        value = getattr(cfg, name)
        if not is_pow2(value) or not lo <= value <= hi:
            raise InputError(f"{name}: expected a power of two in [{lo}, {hi}], got {value!r}")
    if cfg.head_groups not in (2, 4) or num_heads % cfg.head_groups:
        raise InputError(f"head_groups: expected 2 or 4 dividing num_heads={num_heads}, got "
                         f"{cfg.head_groups!r}")
    for name in ("num_stages", "kv_num_stages"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 4:
            raise InputError(f"{name}: expected an integer in [1, 4], got {value!r}")
