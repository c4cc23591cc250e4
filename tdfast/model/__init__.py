"""TD-DETR model: config, building blocks, network, postprocessing.

Names are imported on first use, so ``tdfast.model.config`` (the presets, which the CLI
reads to build its choices) loads without PyTorch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {"PRESETS": "config", "TDDETRConfig": "config", "check_inputs": "inputs",
         "Prediction": "postprocess", "postprocess": "postprocess", "TDDETR": "tddetr"}

if TYPE_CHECKING:
    from tdfast.model.config import PRESETS, TDDETRConfig
    from tdfast.model.inputs import check_inputs
    from tdfast.model.postprocess import Prediction, postprocess
    from tdfast.model.tddetr import TDDETR

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"tdfast.model.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tdfast.model' has no attribute {name!r}")
