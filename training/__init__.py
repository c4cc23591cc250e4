"""Reference trainer for TD-DETR: matcher, losses, VSDC, loop, checkpoints, multi-process.

``train(config, train_config, train_ann, val_ann, video_dirs, text_dir, out_dir, ...)`` is the
entry point (``tdfast train`` calls it); ``TrainConfig`` holds the training settings beside the
network's ``TDDETRConfig``; ``docs/training.md`` describes the recipe and the choices made.
"""
from tdfast.training.api import train
from tdfast.training.config import RunConfig, TrainConfig
from tdfast.training.trainer import TrainResult, Trainer

__all__ = ["RunConfig", "TrainConfig", "TrainResult", "Trainer", "train"]
