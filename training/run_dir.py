"""The training output directory and what is written into it.

Layout of ``--out RUN``::

    RUN/config.json, RUN/model.safetensors   best weights (validate.PROTOCOLS): TDDETR.from_pretrained(RUN)
    RUN/best_metrics.json                     val metrics of those weights (official structure)
    RUN/best_val_preds.jsonl                  their val predictions (submission format)
    RUN/last/                                 newest checkpoint + train_state.pt, for --resume
    RUN/log.jsonl                             one JSON object per step / validation / epoch

``RUN`` is created at the first checkpoint, so a run that fails before (bad
input) leaves nothing. ``last/`` is swapped in atomically
(``tdfast.checkpoint.atomic_write_dir``); the best files are replaced one by
one with atomic renames. The log is flushed just before each checkpoint, which
records its length; resuming drops lines written after it.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from tdfast.checkpoint import (CONFIG_NAME, TRAIN_STATE_NAME, WEIGHTS_NAME, atomic_write_bytes,
                               fsync_file, recover_swap, save_checkpoint)
from tdfast.errors import InputError

LAST = "last"
LOG_NAME = "log.jsonl"
BEST_METRICS = "best_metrics.json"
BEST_PREDS = "best_val_preds.jsonl"


def check_fresh(out_dir: Path) -> None:
    """InputError if ``out_dir`` already holds a run (continuing needs ``--resume``)."""
    taken = [n for n in (LAST, LOG_NAME, WEIGHTS_NAME) if (out_dir / n).exists()]
    if taken:
        raise InputError(f"--out {str(out_dir)!r}: expected a new or empty directory, but it already "
                         f"holds a training run ({', '.join(taken)}); pass --resume {out_dir} to continue "
                         f"it or choose another --out")


def resume_dir(path: Path) -> Path:
    """The checkpoint directory with ``train_state.pt`` for ``--resume PATH`` (a run dir or its last/).

    A crash between the two renames of a ``last/`` swap leaves only ``last.old/``; it is put back.
    """
    for candidate in (path, path / LAST):
        if candidate.name == LAST:
            recover_swap(candidate)
        if (candidate / TRAIN_STATE_NAME).is_file():
            return candidate
    raise InputError(f"--resume {str(path)!r}: expected a training run directory (with {LAST}/"
                     f"{TRAIN_STATE_NAME}) or a checkpoint directory with {TRAIN_STATE_NAME}; found neither")


def save_last(out_dir: Path, model: torch.nn.Module, train_state: dict[str, Any]) -> Path:
    """Atomically write ``out_dir/last``: config, weights and ``train_state.pt``."""
    def extra(tmp: Path) -> None:
        torch.save(train_state, tmp / TRAIN_STATE_NAME)

    return save_checkpoint(out_dir / LAST, model, extra=extra)


def load_train_state(ckpt: Path) -> dict[str, Any]:
    """``train_state.pt`` of a checkpoint dir, loaded with ``weights_only=True`` (no pickle)."""
    return torch.load(ckpt / TRAIN_STATE_NAME, map_location="cpu", weights_only=True)


def save_best(out_dir: Path, model: torch.nn.Module, metrics: dict | None,
              predictions: list[dict] | None) -> None:
    """Replace the best weights (and their metrics / predictions) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".best-", dir=out_dir))
    try:
        save_checkpoint(tmp / "ckpt", model)
        # weights before config: config.json never changes during a run, so a crash between
        # the renames leaves a loadable pair except on the very first save
        for name in (WEIGHTS_NAME, CONFIG_NAME):
            os.replace(tmp / "ckpt" / name, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if metrics is not None:
        atomic_write_bytes(out_dir / BEST_METRICS, json.dumps(metrics, indent=2).encode())
    if predictions is not None:
        atomic_write_bytes(out_dir / BEST_PREDS, "".join(json.dumps(r) + "\n" for r in predictions).encode())


def copy_run_files(src_run: Path, out_dir: Path) -> None:
    """Resuming into a new --out: bring the source run's best weights and log along."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_NAME, WEIGHTS_NAME, BEST_METRICS, BEST_PREDS, LOG_NAME):
        if (src_run / name).is_file() and not (out_dir / name).exists():
            shutil.copy2(src_run / name, out_dir / name)


class JsonlLog:
    """Buffered JSON-lines log: ``write`` keeps records, ``flush`` appends them to the file.

    ``count`` is the number of records in the file; a checkpoint stores it, and resuming
    cuts the file back to that many records (``truncate``), so no record is lost or doubled.
    """

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path, self.enabled = path, enabled
        self.pending: list[dict] = []
        self.count = 0

    def write(self, record: dict) -> None:
        if self.enabled:
            self.pending.append(record)

    def flush(self) -> None:
        if not (self.enabled and self.pending):
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r) + "\n" for r in self.pending))
        fsync_file(self.path)
        self.count += len(self.pending)
        self.pending.clear()

    def truncate(self, count: int) -> list[dict]:
        """Keep the first ``count`` records of the file; returns them."""
        kept = read_log(self.path)[:count] if self.path.is_file() else []
        if self.enabled:
            atomic_write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode())
        self.count = len(kept)
        return kept


def read_log(path: Path) -> list[dict]:
    """All records of a log.jsonl."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
