"""Shared setup for the kernel tests (tests/test_kernels_*.py).

Importing this module first makes the kernels run in Triton's CPU interpreter
when there is no CUDA device (TRITON_INTERPRET must be set before the kernel
module is imported); with a GPU, the same tests run compiled on it.
"""
from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from tdfast.kernels.availability import interpreting  # noqa: E402

KERNEL_DEVICE = "cuda" if torch.cuda.is_available() and not interpreting() else "cpu"


def td_case(batch: int, video_len: int, text_len: int, dim: int, seed: int,
            device: str = KERNEL_DEVICE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random x [B, L, D], text [B, M, D] and a random padding mask [B, M] (True = real):
    row i keeps a random subset (not a prefix) of 1..M real tokens."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, video_len, dim, generator=g)
    text = torch.randn(batch, text_len, dim, generator=g)
    mask = torch.zeros(batch, text_len, dtype=torch.bool)
    for i in range(batch):
        real = int(torch.randint(1, text_len + 1, (1,), generator=g))
        mask[i, torch.randperm(text_len, generator=g)[:real]] = True
    return x.to(device), text.to(device), mask.to(device)
