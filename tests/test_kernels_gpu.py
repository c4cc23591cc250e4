"""The fused TD kernels compiled on a CUDA GPU: the issue's parity matrix at the real width
(D = 256, 8 heads) in fp32 (IEEE and TF32), fp16 and bf16, every tile, and the fused model end
to end. Skipped without CUDA (CI runs the interpreter versions in test_kernels_td_interaction.py).
On a GPU: ``bash benchmarks/run_gpu.sh session`` (runs this file first).
"""
from __future__ import annotations

import copy
import itertools

import pytest
import torch

from kernels_support import (BATCHES, BETAS, KERNEL_DEVICE, TEXT_LENS, VIDEO_LENS, max_diff, td_layer)
from tdfast import TDDETR, TDDETRConfig
from tdfast.kernels import all_configs, fuse_model
from conftest import random_batch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(KERNEL_DEVICE != "cuda", reason="needs a CUDA GPU (compiled Triton)")]

# dtype, allow_tf32, tolerance (DESIGN.md, "Tolerances")
PRECISIONS = {"fp32": (torch.float32, False, 1e-4), "tf32": (torch.float32, True, 1e-2),
              "fp16": (torch.float16, False, 1e-2), "bf16": (torch.bfloat16, False, 1e-2)}


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("use_tdem", [True, False])
def test_full_matrix(precision, use_tdem):
    dtype, tf32, tol = PRECISIONS[precision]
    layer, start = td_layer(256, 8, use_tdem, seed=1)
    cases = itertools.product(BATCHES + (32, 256), VIDEO_LENS, TEXT_LENS, BETAS)
    worst = {c: max_diff(layer, start, *c, seed=i, dtype=dtype, allow_tf32=tf32)
             for i, c in enumerate(cases)}
    bad = {c: d for c, d in worst.items() if not d <= tol}
    assert not bad, f"{precision}: (B, L, M, beta) above {tol}: {bad}"


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_tile_choice(precision):
    dtype, tf32, tol = PRECISIONS[precision]
    layer, start = td_layer(256, 8, True, seed=2)
    for cfg in all_configs(dtype, 256, 8, tf32):
        for i, (b, n, m) in enumerate([(1, 75, 32), (32, 150, 32), (256, 75, 64)]):
            d = max_diff(layer, start, b, n, m, 0.7, seed=i, dtype=dtype, allow_tf32=tf32, config=cfg)
            assert d <= tol, (cfg, b, n, m, d)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
def test_fused_qvhighlights_model_matches_eager(dtype, tol):
    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 case compares IEEE to IEEE
    eager = TDDETR(TDDETRConfig.from_name("qvhighlights")).cuda().eval().to(dtype)
    fused = fuse_model(copy.deepcopy(eager))
    video, vmask, query, qmask = (t.cuda() for t in random_batch(eager.config, 16, 75, 32, seed=5))
    with torch.inference_mode():
        want = eager(video.to(dtype), vmask, query.to(dtype), qmask)
        got = fused(video.to(dtype), vmask, query.to(dtype), qmask)
    for key in ("pred_spans", "pred_logits", "saliency_scores"):
        diff = got[key].float() - want[key].float()
        if key == "saliency_scores":
            diff = diff[vmask]
        assert diff.abs().max().item() <= tol, f"{dtype} {key}: max abs diff {diff.abs().max().item()}"
