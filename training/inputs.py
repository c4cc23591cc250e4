"""The records a training run is given: ``TrainData`` (which files), ``TrainSets`` (the opened
datasets a ``Trainer`` takes), ``TrainOptions`` (how the run is carried out). What is learned
is the ``RunConfig`` (``training/config.py``)."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from tdfast.errors import InputError

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from tdfast.data.dataset import MomentDataset


@dataclass(frozen=True)
class TrainData:
    """Where a run's examples come from: annotation jsonl files in the QVHighlights format
    (``train`` labelled; ``val`` labelled or None for no validation) and the features
    (``video_dirs``: one directory per source, concatenated in order; ``text_dir``), as in
    docs/data.md. ``cache_size``: feature arrays kept in memory per process."""

    train: str | os.PathLike
    val: str | os.PathLike | None
    video_dirs: Sequence[str | os.PathLike] | str | os.PathLike
    text_dir: str | os.PathLike
    cache_size: int = 0


@dataclass(frozen=True)
class TrainSets:
    """What a run learns from and is scored on: ``train`` a labelled ``MomentDataset`` (or any
    dataset of its samples); ``val`` a labelled ``MomentDataset`` and ``val_gt`` its annotation
    records (``tdfast.eval.load_jsonl``), both or neither (None: no validation, the last epoch
    is kept)."""

    train: Dataset
    val: MomentDataset | None = None
    val_gt: list[dict] | None = None

    def __post_init__(self) -> None:
        if (self.val is None) != (self.val_gt is None):
            raise InputError(f"TrainSets: expected val and val_gt both or neither, got "
                             f"val={type(self.val).__name__}, val_gt={type(self.val_gt).__name__}")


@dataclass(frozen=True)
class TrainOptions:
    """How a run is carried out (not what is learned: that is the ``RunConfig``).

    ``out_dir``: the run directory. ``epochs`` overrides ``TrainConfig.epochs``.
    ``resume``: a run directory (or its ``last/``) to continue exactly; ``out_dir`` may be
    the same directory. ``device``: where ``train`` runs (a ``Trainer`` takes its
    ``DistContext``'s). ``autocast``: fp32, bf16 or fp16 (GPU). ``save_every_steps`` > 0:
    also checkpoint every that many steps. ``eval_before``: score the untrained model first
    (``TrainResult.initial_metrics``). ``on_step(step, losses)``: called after each step."""

    out_dir: str | os.PathLike
    epochs: int | None = None
    seed: int = 0
    progress: bool = True
    resume: str | os.PathLike | None = None
    device: str = "cpu"
    autocast: str = "fp32"
    save_every_steps: int = 0
    num_workers: int = 0
    eval_before: bool = True
    on_step: Callable[[int, dict[str, float]], None] | None = None
