"""Where and in which precision a model runs: ``parse_device``, ``parse_dtype`` and the one
table of dtype names (``DTYPES``) that the Retriever, the trainer, the CLI and the
benchmarks all read."""
from __future__ import annotations

from typing import Any

import torch

from tdfast.errors import BackendUnavailableError, InputError

# Name -> dtype; the short names (fp32, fp16, bf16) are the ones commands print and records hold.
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16}
SHORT_DTYPE_NAMES = ("fp32", "fp16", "bf16")


def parse_device(device: Any) -> torch.device:
    """'cpu' / 'cuda' / 'cuda:1' / torch.device -> torch.device; InputError if malformed,
    BackendUnavailableError if CUDA is asked for and missing."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device: expected 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"device: expected 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailableError(f"device={device!r}: no CUDA GPU is visible to torch "
                                          f"(torch {torch.__version__}); use device='cpu'")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def parse_dtype(dtype: Any) -> torch.dtype:
    """None -> float32; a torch dtype or one of ``DTYPES``' names."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise InputError(f"dtype: expected one of float32, float16, bfloat16 (torch dtype or name), "
                     f"got {dtype!r}")
