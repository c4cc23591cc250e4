"""Reference trainer for TD-DETR: matcher, losses, VSDC, loop, checkpoints, multi-process.

``train(config, train_ann, val_ann, video_dirs, text_dir, out_dir, ...)`` is the entry point
(``tdfast train`` calls it); ``docs/training.md`` describes the recipe and the choices made.
"""
from tdfast.training.api import train
from tdfast.training.trainer import TrainResult, Trainer

__all__ = ["TrainResult", "Trainer", "train"]
