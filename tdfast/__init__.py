"""tdfast: fast, deployable TD-DETR for video moment retrieval and highlight detection."""
from tdfast.errors import BackendUnavailableError, InputError
from tdfast.model import TDDETR, Prediction, TDDETRConfig
from tdfast.api import Retriever

__version__ = "0.1.0"

__all__ = ["BackendUnavailableError", "InputError", "Prediction", "Retriever", "TDDETR",
           "TDDETRConfig", "__version__"]
