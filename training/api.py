"""``train(...)``: the one call behind ``tdfast train`` and the demo."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Sequence

from tdfast.errors import InputError
from tdfast.model.config import TDDETRConfig
from tdfast.training.config import TrainConfig
from tdfast.training import run_dir
from tdfast.training.trainer import TrainResult, Trainer


def check_feature_files(dataset) -> None:
    """InputError naming the file and the annotation line for the first feature file that is
    missing, before anything is written (features are otherwise read lazily, mid-epoch)."""
    store = dataset.store
    for ann in dataset.annotations:
        paths = [*store.video_paths(ann.vid), store.query_path(ann.qid)]
        for path in paths:
            if not path.is_file():
                raise InputError(f"{path}: feature file not found (needed by {ann.source})")


def train(config: TDDETRConfig, train_ann: str | os.PathLike, val_ann: str | os.PathLike | None,
          video_dirs: Sequence[str | os.PathLike], text_dir: str | os.PathLike, out_dir: str | os.PathLike,
          *, training: TrainConfig | None = None, epochs: int | None = None, seed: int = 0, progress: bool = True,
          resume: str | os.PathLike | None = None, device: str = "cpu", autocast: str = "fp32",
          save_every_steps: int = 0, num_workers: int = 0, cache_size: int = 0, eval_before: bool = True,
          on_step: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Train TD-DETR and leave the best weights loadable by ``TDDETR.from_pretrained(out_dir)``.

    ``config`` is the network, ``training`` the settings (default ``TrainConfig()``).
    Annotations in the QVHighlights jsonl format, features as in docs/data.md. ``epochs``
    overrides ``training.epochs``. ``val_ann`` None: no validation, the last epoch is kept.
    ``eval_before``: score the untrained model first (``TrainResult.initial_metrics``).
    ``resume``: a run directory (or its ``last/``) to continue exactly; ``out_dir`` may be
    the same directory. ``cache_size``: feature arrays kept in memory per process.
    Under ``torchrun`` every process calls this; process 0 writes. Bad input raises
    InputError before ``out_dir`` is created.
    """
    from tdfast.data.dataset import MomentDataset
    from tdfast.eval import load_jsonl
    from tdfast.training.distributed import init_distributed, shutdown

    out = Path(out_dir)
    training = training or TrainConfig()
    if epochs is not None:
        if int(epochs) <= 0:
            raise InputError(f"--epochs: expected a positive integer, got {epochs!r}")
        training = TrainConfig.from_dict({**training.to_dict(), "epochs": int(epochs)})
    if save_every_steps < 0:
        raise InputError(f"--save-every-steps: expected an integer >= 0, got {save_every_steps!r}")
    ckpt = run_dir.check_out(out, None if resume is None else Path(resume))
    src_run = None if ckpt is None else ckpt.parent if ckpt.name == run_dir.LAST else ckpt
    train_set = MomentDataset(train_ann, video_dirs, text_dir, config, cache_size=cache_size)
    if not train_set.has_labels:
        raise InputError(f"--train {str(train_ann)!r}: expected relevant_windows on every line")
    check_feature_files(train_set)
    val_set = val_gt = None
    if val_ann is not None:
        val_set = MomentDataset(val_ann, video_dirs, text_dir, config, cache_size=cache_size)
        if not val_set.has_labels:
            raise InputError(f"--val {str(val_ann)!r}: expected relevant_windows on every line")
        check_feature_files(val_set)
        val_gt = load_jsonl(val_ann)
    ctx = init_distributed(device)
    try:
        if src_run is not None and ctx.is_main and src_run.resolve() != out.resolve():
            run_dir.copy_run_files(src_run, out)
        trainer = Trainer(config, train_set, val_set, val_gt, out, training=training, seed=seed, ctx=ctx,
                          autocast=autocast,
                          save_every_steps=save_every_steps, progress=progress, num_workers=num_workers)
        return trainer.fit(training.epochs, resume=ckpt, eval_before=eval_before, on_step=on_step)
    finally:
        shutdown(ctx)
