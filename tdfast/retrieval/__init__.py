"""Inference: the ``Retriever`` and everything a prediction passes through.

inputs (checks) -> batching / windows (padding, length buckets, sliding windows) ->
backends (one runner per backend) -> postprocess (moments in seconds) -> files (jsonl in/out).
Names are imported on first use, so ``import tdfast.retrieval`` does not import PyTorch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from tdfast.lazy import lazy_getattr

_LAZY = {"Retriever": "tdfast.retrieval.retriever", "Prediction": "tdfast.retrieval.postprocess",
         "check_inputs": "tdfast.retrieval.inputs", "predict_jsonl": "tdfast.retrieval.files"}

if TYPE_CHECKING:
    from tdfast.retrieval.files import predict_jsonl
    from tdfast.retrieval.inputs import check_inputs
    from tdfast.retrieval.postprocess import Prediction
    from tdfast.retrieval.retriever import Retriever

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
