"""tdfast: fast, deployable TD-DETR for video moment retrieval and highlight detection.

The public names are imported on first use, so ``import tdfast`` (and commands that
need no model, such as ``tdfast eval``) don't pay for importing PyTorch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from tdfast.errors import BackendUnavailableError, InputError
from tdfast.lazy import lazy_getattr

__version__ = "0.1.0"

_LAZY = {  # public name -> module that defines it
    "Prediction": "tdfast.retrieval.postprocess",
    "Retriever": "tdfast.retrieval.retriever",
    "TDDETR": "tdfast.model",
    "TDDETRConfig": "tdfast.model",
    "convert_official": "tdfast.convert",
}

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on demand
    from tdfast.retrieval.retriever import Retriever
    from tdfast.convert import convert_official
    from tdfast.model import TDDETR, TDDETRConfig
    from tdfast.retrieval.postprocess import Prediction

__all__ = ["BackendUnavailableError", "InputError", "Prediction", "Retriever", "TDDETR",
           "TDDETRConfig", "__version__", "convert_official"]


__getattr__ = lazy_getattr(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
