"""Reference trainer for TD-DETR: matcher, losses, VSDC, loop, checkpoints, multi-process.

``train(run, data, options)`` is the entry point (``tdfast train`` calls it): ``run`` a
``RunConfig`` (the network's ``TDDETRConfig`` and the ``TrainConfig``), ``data`` a
``TrainData`` (annotation files, feature directories), ``options`` a ``TrainOptions`` (run
directory, epochs, seed, device, resume, ...); a ``Trainer`` takes the ``RunConfig``, the
opened datasets (``TrainSets``) and the same ``TrainOptions``. ``docs/training.md`` describes
the recipe.
"""
from tdfast.training.api import train
from tdfast.training.config import RunConfig, TrainConfig
from tdfast.training.inputs import TrainData, TrainOptions, TrainSets
from tdfast.training.trainer import TrainResult, Trainer

__all__ = ["RunConfig", "TrainConfig", "TrainData", "TrainOptions", "TrainResult", "TrainSets", "Trainer", "train"]
