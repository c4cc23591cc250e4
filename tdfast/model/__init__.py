"""TD-DETR model: config, building blocks, network, postprocessing.

Names are imported on first use, so ``tdfast.model.config`` (the presets, which the CLI
reads to build its choices) loads without PyTorch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from tdfast.lazy import lazy_getattr

# (``postprocess`` is the submodule's name too, so the function is imported from it directly.)
_LAZY = {"PRESETS": "tdfast.model.config", "TDDETRConfig": "tdfast.model.config",
         "check_inputs": "tdfast.model.inputs", "Prediction": "tdfast.model.postprocess",
         "TDDETR": "tdfast.model.tddetr"}

if TYPE_CHECKING:
    from tdfast.model.config import PRESETS, TDDETRConfig
    from tdfast.model.inputs import check_inputs
    from tdfast.model.postprocess import Prediction
    from tdfast.model.tddetr import TDDETR

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
