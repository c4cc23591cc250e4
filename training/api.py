"""``train(run, data, options)``: the one call behind ``tdfast train``, the demo and the
experiments, with its inputs as three small records (what is learned, from which files,
how the run is carried out)."""
from __future__ import annotations

import contextlib
from pathlib import Path

from tdfast.errors import InputError
from tdfast.training.config import RunConfig
from tdfast.training import run_dir
from tdfast.training.inputs import TrainData, TrainOptions, TrainSets
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


def train(run: RunConfig, data: TrainData, options: TrainOptions) -> TrainResult:
    """Train the network ``run.model`` with the settings ``run.training`` and leave the best
    weights loadable by ``TDDETR.from_pretrained(options.out_dir)``.

    ``val`` None: no validation, the last epoch is kept. Under ``torchrun`` every process
    calls this; process 0 writes, alone (``run_dir.claim``: a second run into the same
    ``out_dir`` is refused). Bad input raises InputError before ``out_dir`` is created; an
    unwritable ``out_dir`` fails before training.
    """
    from tdfast.data.dataset import MomentDataset
    from tdfast.eval import load_jsonl
    from tdfast.training.distributed import init_distributed, shutdown

    config, o = run.model, options
    out = Path(o.out_dir)
    if o.epochs is not None and int(o.epochs) <= 0:  # checked before out_dir exists; Trainer applies it
        raise InputError(f"--epochs: expected a positive integer, got {o.epochs!r}")
    if o.save_every_steps < 0:
        raise InputError(f"--save-every-steps: expected an integer >= 0, got {o.save_every_steps!r}")
    ckpt = run_dir.check_out(out, None if o.resume is None else Path(o.resume))
    src_run = None if ckpt is None else ckpt.parent if ckpt.name == run_dir.LAST else ckpt
    train_set = MomentDataset(data.train, data.video_dirs, data.text_dir, config, cache_size=data.cache_size)
    if not train_set.has_labels:
        raise InputError(f"--train {str(data.train)!r}: expected relevant_windows on every line")
    check_feature_files(train_set)
    val_set = val_gt = None
    if data.val is not None:
        val_set = MomentDataset(data.val, data.video_dirs, data.text_dir, config, cache_size=data.cache_size)
        if not val_set.has_labels:
            raise InputError(f"--val {str(data.val)!r}: expected relevant_windows on every line")
        check_feature_files(val_set)
        val_gt = load_jsonl(data.val)
    ctx = init_distributed(o.device)
    try:
        with run_dir.claim(out, fresh=ckpt is None) if ctx.is_main else contextlib.nullcontext():
            if src_run is not None and ctx.is_main and src_run.resolve() != out.resolve():
                run_dir.copy_run_files(src_run, out)
            trainer = Trainer(run, TrainSets(train_set, val_set, val_gt), o, ctx)
            return trainer.fit(resume=ckpt)
    finally:
        shutdown(ctx)
