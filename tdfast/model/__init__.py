"""TD-DETR model: config, building blocks, network, checkpoint format.

Names are imported on first use, so ``tdfast.model.config`` loads without PyTorch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from tdfast.lazy import lazy_getattr

_LAZY = {"PRESETS": "tdfast.presets", "TDDETRConfig": "tdfast.model.config",
         "TDDETR": "tdfast.model.tddetr"}

if TYPE_CHECKING:
    from tdfast.model.config import TDDETRConfig
    from tdfast.presets import PRESETS
    from tdfast.model.tddetr import TDDETR

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
