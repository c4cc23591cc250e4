"""Fused TD interaction vs the float64 reference (fp32: max abs diff <= 1e-4).

Layout, sized for Triton's CPU interpreter on 2 cores (its cost grows with the number of
programs, i.e. B * L / block_l):
* the issue's matrix B {1, 3, 8} x L {1, 2, 37, 75, 150} x M {1, 5, 32, 64} x beta {0, 0.5, 1}
  on a small layer (D = 32, 4 heads of Dh = 8, padded to 16 in the kernel): a fixed random
  draw of 30 of the 180 cases by default, all 180 under ``-m slow``; each case also draws
  its row tile, so tiles that span several videos are covered;
* D = 256 / 8 heads spot checks, no TDEM, every launcher tile choice, a width that is not a
  power of two, exact zero weight of padded keys, fp16.
"""
from __future__ import annotations

import itertools
import random

import pytest
import torch

from kernels_support import (BATCHES, BETAS, TEXT_LENS, VIDEO_LENS, max_diff, td_case, td_layer)
from tdfast.kernels.launch_config import LaunchConfig, default_config
from tdfast.kernels.packing import pack_weights
from tdfast.kernels.td_interaction import td_interaction
from tdfast.model.attention import mask_to_bias

TOL = 1e-4
MATRIX = list(itertools.product(BATCHES, VIDEO_LENS, TEXT_LENS, BETAS))
SAMPLE = random.Random(17).sample(MATRIX, 30)


def _config(block_l: int, kv_block_t: int = 16, kv_block_c: int = 64, chunk: int = 32,
            head_groups: int = 2) -> LaunchConfig:
    return LaunchConfig(block_l=block_l, block_k=chunk, block_n=chunk, num_warps=4, num_stages=2,
                        kv_block_t=kv_block_t, kv_block_c=kv_block_c, kv_num_warps=4,
                        head_groups=head_groups)


def _check_matrix(cases) -> None:
    layer, start = td_layer(32, 4, use_tdem=True, seed=1)
    worst = {}
    for i, (b, n, m, beta) in enumerate(cases):
        cfg = _config(block_l=(16, 32, 64)[i % 3], kv_block_t=(16, 32, 128)[i % 3],
                      kv_block_c=(64, 32, 16)[i % 3], head_groups=(2, 4)[i % 2])
        worst[(b, n, m, beta)] = max_diff(layer, start, b, n, m, beta, seed=100 + i, config=cfg)
    bad = {k: v for k, v in worst.items() if not v <= TOL}
    assert not bad, f"(B, L, M, beta) -> max abs diff above {TOL}: {bad}"


def test_matrix_random_draw():
    _check_matrix(SAMPLE)


@pytest.mark.slow
def test_matrix_full():
    _check_matrix(MATRIX)


@pytest.mark.parametrize("batch,video_len,text_len,beta", [(1, 75, 32, 0.7), (3, 37, 5, 0.0),
                                                           (2, 150, 64, 1.0)])
def test_full_width(batch, video_len, text_len, beta):
    """qvhighlights widths (D = 256, 8 heads of 32), the launcher's default tiles."""
    layer, start = td_layer(256, 8, use_tdem=True, seed=2)
    assert max_diff(layer, start, batch, video_len, text_len, beta, seed=7) <= TOL


@pytest.mark.parametrize("dim,heads,batch,video_len,text_len",
                         [(32, 4, 3, 37, 5), (32, 4, 8, 75, 64), (256, 8, 2, 75, 32)])
def test_without_tdem(dim, heads, batch, video_len, text_len):
    """QD-DETR's plain T2V layer (no start token, no dynamics weights): s = V + A_v."""
    layer, start = td_layer(dim, heads, use_tdem=False, seed=3)
    assert start is None
    assert max_diff(layer, None, batch, video_len, text_len, 0.5, seed=11) <= TOL


@pytest.mark.parametrize("config", [_config(16, 16, 16), _config(32, 64, 32, head_groups=4),
                                    _config(64, 128, 64, head_groups=4),
                                    _config(128, 32, 64, chunk=16), _config(16, 16, 64, chunk=16)],
                         ids=lambda c: f"{c.name}_{c.kv_name}")
def test_tile_choices(config):
    """Every tile the launcher accepts gives the same answer, including row tiles that cross
    from one video into the next (L = 37 with 64- and 128-row tiles)."""
    layer, start = td_layer(32, 4, use_tdem=True, seed=4)
    for i, (b, n, m) in enumerate([(3, 37, 32), (1, 2, 5), (4, 75, 64)]):
        assert max_diff(layer, start, b, n, m, 0.5, seed=20 + i, config=config) <= TOL, (b, n, m)


def test_width_not_a_power_of_two():
    """D = 48 with 2 heads of 24 (padded to 32): masked K / N chunks and LayerNorm columns."""
    layer, start = td_layer(48, 2, use_tdem=True, seed=5)
    assert max_diff(layer, start, 3, 37, 5, 0.5, seed=30) <= TOL


def test_padding_keys_get_no_weight():
    """Changing the text at padded positions must not change the output at all."""
    layer, start = td_layer(32, 4, use_tdem=True, seed=6)
    video, pos, text, mask = td_case(3, 37, 32, 32, seed=40)
    w = layer.weights(start)
    packed = pack_weights(w, 4, 0.5, torch.float32)
    bias = mask_to_bias(mask, torch.float32)
    noisy = torch.where(mask[..., None], text, text + 100.0 * torch.randn_like(text))
    assert torch.equal(td_interaction(video, pos, start, text, bias, packed),
                       td_interaction(video, pos, start, noisy, bias, packed))


def test_videos_do_not_leak_into_each_other():
    """A video's output does not depend on its batch mates (row tiles span videos; the
    temporal difference of a video's first clip takes the start token, not the previous
    video's last clip)."""
    layer, start = td_layer(32, 4, use_tdem=True, seed=9)
    video, pos, text, mask = td_case(3, 37, 5, 32, seed=41)
    packed = pack_weights(layer.weights(start), 4, 0.5, torch.float32)
    bias = mask_to_bias(mask, torch.float32)
    cfg = _config(64)
    together = td_interaction(video, pos, start, text, bias, packed, config=cfg)
    for i in range(3):
        alone = td_interaction(video[i:i + 1], pos[i:i + 1], start, text[i:i + 1], bias[i:i + 1],
                               packed, config=cfg)
        assert (alone[0] - together[i]).abs().max().item() <= 1e-6


def test_float16_within_1e_2():
    """fp16 runs in the interpreter too (bf16 does not: its tl.dot there multiplies bit
    patterns; bf16 is covered on a GPU by test_kernels_gpu.py and benchmarks/run_gpu.sh session)."""
    layer, start = td_layer(32, 4, use_tdem=True, seed=8)
    assert max_diff(layer, start, 3, 75, 32, 0.5, seed=50, dtype=torch.float16) <= 1e-2


@pytest.mark.parametrize("version", ["3.6.0", "3.9.0"])
def test_float16_default_tiles_per_triton_version(version):
    """The 16-bit tiles each Triton version gets at 64 keys (3.6: 32-column chunks, 4 head
    groups, 1 stage; 3.9: 64-column chunks) at qvhighlights widths, fp16, within 1e-2."""
    layer, start = td_layer(256, 8, use_tdem=True, seed=10)
    cfg = default_config(torch.float16, 1, 75, 64, 256, 8, arch=90, triton_version=version)
    assert cfg.block_k == (32 if version == "3.6.0" else 64)
    assert max_diff(layer, start, 1, 75, 64, 0.5, seed=60, dtype=torch.float16, config=cfg) <= 1e-2
