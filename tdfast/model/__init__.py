"""TD-DETR model: config, building blocks, network, postprocessing."""
from tdfast.model.config import PRESETS, TDDETRConfig
from tdfast.model.inputs import check_inputs
from tdfast.model.postprocess import Prediction, postprocess
from tdfast.model.tddetr import TDDETR

__all__ = ["PRESETS", "Prediction", "TDDETR", "TDDETRConfig", "check_inputs", "postprocess"]
