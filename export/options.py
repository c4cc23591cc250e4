"""The options of every export format, in one typed record.

Light on purpose (no torch import): the CLI builds its choices and defaults from here
without slowing ``tdfast --help``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tdfast.defaults import MAX_BATCH
from tdfast.errors import InputError

PRECISIONS = ("fp32", "fp16", "bf16")  # TensorRT kernel precisions (I/O stays fp32 / bool)
EXPORTERS = ("dynamo", "torchscript")  # PyTorch's ONNX exporters
DEFAULT_OPSET = 18  # >= 17 (LayerNormalization); <= 20 keeps TensorRT 10.0's parser happy
DEFAULT_PRECISION = "fp16"
DEFAULT_MODEL_NAME = "tdfast_tddetr"  # Triton model name


@dataclass(frozen=True)
class ExportOptions:
    """``opset``: ONNX opset (None: the exporter's default); ``exporter``: one of EXPORTERS;
    ``verify``: check the artifact against eager PyTorch; ``precision`` / ``max_batch``:
    TensorRT build (``max_batch`` is also Triton's max_batch_size); ``model_name``: Triton's;
    ``log``: progress lines (None: quiet)."""

    opset: int | None = None
    exporter: str = "dynamo"
    verify: bool = True
    precision: str = DEFAULT_PRECISION
    max_batch: int = MAX_BATCH
    model_name: str = DEFAULT_MODEL_NAME
    log: Callable[[str], Any] | None = print

    @classmethod
    def of(cls, options: "ExportOptions | None" = None, **changes: Any) -> "ExportOptions":
        """``options`` (default: the defaults) with ``changes``; an unknown option name is an
        InputError naming it (a misspelt option used to be dropped silently)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise InputError(f"export options: unknown {unknown}; known: {sorted(known)}")
        return dataclasses.replace(options or cls(), **changes)
