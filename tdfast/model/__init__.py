"""TD-DETR model: config, building blocks, network, postprocessing."""
from tdfast.model.config import PRESETS, TDDETRConfig

__all__ = ["PRESETS", "TDDETRConfig"]
