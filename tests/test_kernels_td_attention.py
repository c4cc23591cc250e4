"""Fused TD cross-attention kernel vs the float64 reference (fp32, max abs diff <= 1e-4).

Layout, chosen to fit the Triton CPU interpreter in about a minute on 2 cores:
* the full product B x L x M x beta (3 x 5 x 4 x 3 = 180 launches) on a small layer,
  D = 32 with 4 heads (Dh = 8, which also exercises the head-dim padding to 16);
* a diagonal subset on the real width, D = 256 with 8 heads;
* the plain cross-attention (no TDEM) and every launcher variant (precomputed K/V,
  head groups with atomics, small row blocks) on a few shapes each.
"""
from __future__ import annotations

import itertools

import pytest
import torch

from kernels_support import (BATCHES, BETAS, TEXT_LENS, VIDEO_LENS, layer_with_biases, max_diff,
                             td_case)
from tdfast.kernels.packing import pack_weights
from tdfast.kernels.td_attention import td_cross_attention
from tdfast.model.attention import mask_to_bias

TOL = 1e-4


# ~1 min each in the interpreter on 2 cores: beta 0.5 in the default run, the ends with -m slow
@pytest.mark.parametrize("beta", [b if b == 0.5 else pytest.param(b, marks=pytest.mark.slow) for b in BETAS])
def test_full_matrix_small_layer(beta):
    layer = layer_with_biases(32, 4, use_tdem=True, seed=1)
    worst = {}
    for i, (b, n, m) in enumerate(itertools.product(BATCHES, VIDEO_LENS, TEXT_LENS)):
        worst[(b, n, m)] = max_diff(layer, b, n, m, beta, seed=100 + i)
    bad = {k: v for k, v in worst.items() if not v <= TOL}
    assert not bad, f"beta={beta}: (B, L, M) -> max abs diff above {TOL}: {bad}"


DIAGONAL = [(1, 1, 1, 0.5), (3, 2, 5, 0.0), (8, 37, 32, 1.0), (3, 75, 64, 0.5),
            (1, 150, 32, 0.5), (8, 150, 5, 0.5)]


@pytest.mark.parametrize("batch,video_len,text_len,beta", DIAGONAL)
def test_diagonal_full_width(batch, video_len, text_len, beta):
    layer = layer_with_biases(256, 8, use_tdem=True, seed=2)
    assert max_diff(layer, batch, video_len, text_len, beta, seed=7) <= TOL


@pytest.mark.parametrize("dim,heads,batch,video_len,text_len",
                         [(32, 4, 3, 37, 5), (32, 4, 8, 150, 64), (256, 8, 3, 75, 32)])
def test_plain_cross_attention_without_tdem(dim, heads, batch, video_len, text_len):
    layer = layer_with_biases(dim, heads, use_tdem=False, seed=3)
    assert max_diff(layer, batch, video_len, text_len, 0.5, seed=11) <= TOL


@pytest.mark.parametrize("launch", [dict(precompute_kv=True), dict(precompute_kv=False),
                                    dict(head_groups=2), dict(head_groups=4, precompute_kv=True),
                                    dict(block_l=16), dict(block_l=128)])
def test_launcher_variants(launch):
    layer = layer_with_biases(32, 4, use_tdem=True, seed=4)
    for i, (b, n, m) in enumerate([(3, 150, 32), (1, 2, 5), (8, 75, 64)]):
        assert max_diff(layer, b, n, m, 0.5, seed=20 + i, **launch) <= TOL, (launch, b, n, m)


def test_odd_width_and_head_dim():
    """D = 48, 3 heads of 16: D is not a power of two, so K-chunks and output columns are masked."""
    layer = layer_with_biases(48, 3, use_tdem=True, seed=5)
    assert max_diff(layer, 3, 37, 5, 0.5, seed=30) <= TOL


def test_padding_keys_get_no_weight():
    """Changing the text at padded positions must not change the output at all."""
    layer = layer_with_biases(32, 4, use_tdem=True, seed=6)
    x, text, mask = td_case(3, 37, 32, 32, seed=40)
    w = pack_weights(layer.weights(), 4, 0.5, torch.float32)
    bias = mask_to_bias(mask, x.dtype)
    noisy = torch.where(mask[..., None], text, text + 100.0 * torch.randn_like(text))
    assert torch.equal(td_cross_attention(x, text, bias, w), td_cross_attention(x, noisy, bias, w))


def test_float16_within_1e_2():
    """fp16 runs in the interpreter too (bf16 does not: its tl.dot there multiplies bit
    patterns, triton-lang/triton#11584; bf16 is covered by test_kernels_gpu.py)."""
    layer = layer_with_biases(256, 8, use_tdem=True, seed=8)
    for i, (b, n, m) in enumerate([(3, 75, 32), (1, 150, 64)]):
        assert max_diff(layer, b, n, m, 0.5, seed=50 + i, dtype=torch.float16) <= 1e-2
