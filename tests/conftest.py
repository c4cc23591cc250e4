"""Shared test fixtures: deterministic seeds, tiny model and batches."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Triton reads TRITON_INTERPRET when a kernel is first defined: set it before any test
# imports tdfast.kernels, so that without a GPU every kernel runs in the interpreter.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

SHARED_QVH = Path(__file__).resolve().parents[2] / "shared" / "qvhighlights"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def random_batch(config, batch: int, video_len: int, query_len: int, seed: int = 0,
                 ragged: bool = True):
    """A padded random batch: (video, video_mask, query, query_mask); row i keeps
    a different number of real clips/tokens when ``ragged``."""
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(batch, video_len, config.video_dim, generator=g)
    query = torch.randn(batch, query_len, config.text_dim, generator=g)
    vmask = torch.ones(batch, video_len, dtype=torch.bool)
    qmask = torch.ones(batch, query_len, dtype=torch.bool)
    if ragged:
        for i in range(batch):
            vmask[i, max(1, video_len - 3 * i):] = False
            qmask[i, max(1, query_len - 2 * i):] = False
    return video, vmask, query, qmask


def assert_names(error: BaseException, argument: str, *parts: str) -> None:
    """A user error names ``argument`` first (``argument: ...``) and says each of ``parts``
    (the expected value, the value seen); the words around them may change."""
    message = str(error)
    assert message.startswith(f"{argument}:") or message.startswith(f"{argument} "), message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
