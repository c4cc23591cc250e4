"""Seeds, in one place, and random-number states that survive ``torch.load(weights_only=True)``.

Streams used in training:
- ``batch_generator(seed)``: VSDC and saliency-pair draws. Identical on every
  process (each process draws for the whole global batch and keeps its rows),
  so multi-process runs match one process.
- torch's default generators (dropout): seeded ``seed + RANK_STRIDE * rank``, so
  ranks drop different units, as independent replicas should.
- python ``random`` and numpy: seeded for any library code that uses them.
- The data order comes from the sampler, a function of (seed, epoch) alone.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

RANK_STRIDE = 1_000_003  # dropout seed offset between ranks (a prime, far from small seeds)
BATCH_STREAM = 7919  # offset of the batch-transform stream from the model-init seed


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA), the same on every process.

    Call before building the model (identical init everywhere), then ``seed_dropout``.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_dropout(seed: int, rank: int) -> None:
    """Re-seed torch's default generators so each rank draws its own dropout masks."""
    torch.manual_seed(seed + RANK_STRIDE * rank)


def batch_generator(seed: int) -> torch.Generator:
    """The CPU generator for batch transforms (same on every rank)."""
    return torch.Generator().manual_seed(seed + BATCH_STREAM)


def capture_rng(batch_gen: torch.Generator) -> dict[str, Any]:
    """All random states as tensors and plain python values (weights_only-loadable)."""
    version, state, gauss = random.getstate()
    np_state = np.random.get_state()
    out: dict[str, Any] = {
        "python": [version, list(state), gauss],
        "numpy": [np_state[0], torch.from_numpy(np.asarray(np_state[1]).astype(np.int64)),
                  int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
        "batch": batch_gen.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(state: dict[str, Any], batch_gen: torch.Generator) -> None:
    """Inverse of ``capture_rng``."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    batch_gen.set_state(state["batch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
