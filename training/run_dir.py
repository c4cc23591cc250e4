"""The training output directory and what is written into it.

Layout of ``--out RUN``::

    RUN/config.json, RUN/model.safetensors   best weights (tdfast.presets.PROTOCOLS): TDDETR.from_pretrained(RUN)
    RUN/best_metrics.json                     val metrics of those weights (official structure)
    RUN/best_val_preds.jsonl                  their val predictions (submission format)
    RUN/last/                                 newest checkpoint + train_state.pt, for --resume
    RUN/log.jsonl                             one JSON object per step / validation / epoch

``RUN`` is created once the input is checked, with an empty log, and held by one
writer (``claim``: a flock the kernel drops when the process dies); a run that
fails before its first checkpoint leaves nothing it created. A run directory with
a log but no ``last/`` (the run stopped before its first checkpoint, e.g. on a full
disk) is started again by the same command. ``last/`` is swapped in atomically
(``tdfast.atomic.atomic_write_dir``); the best files are replaced one by
one with atomic renames. The log is flushed just before each checkpoint, which
records its length; resuming drops lines written after it (and a last line
half-written by a kill, with a warning).
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import pickle
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tdfast.atomic import atomic_write_bytes, clean_stale, fsync_file, named_os_errors, write_new_file
from tdfast.model.checkpoint import (CONFIG_NAME, TRAIN_STATE_NAME, WEIGHTS_NAME, save_checkpoint_dir,
                                     write_checkpoint_files)
from tdfast.errors import InputError

if TYPE_CHECKING:
    from tdfast.training.config import TrainConfig

LAST = "last"
LOG_NAME = "log.jsonl"
LOCK_NAME = ".tdfast-train.lock"  # flock'ed by the run's one writer (claim)
BEST_METRICS = "best_metrics.json"
BEST_PREDS = "best_val_preds.jsonl"


def unfinished(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds a run that stopped before its first resumable checkpoint (a log,
    no ``last/``): nothing in it can be continued, and a new run may take its place."""
    return (out_dir / LOG_NAME).is_file() and not (out_dir / LAST).exists()


def check_fresh(out_dir: Path) -> None:
    """InputError if ``out_dir`` already holds a run (continuing needs ``--resume``); a run that
    never reached a checkpoint (``unfinished``) is no obstacle."""
    if unfinished(out_dir):
        return
    taken = [n for n in (LAST, LOG_NAME, WEIGHTS_NAME) if (out_dir / n).exists()]
    if taken:
        raise InputError(f"--out {str(out_dir)!r}: expected a new or empty directory, but it already "
                         f"holds a training run ({', '.join(taken)}); pass --resume {out_dir} to continue "
                         f"it or choose another --out")


def resume_dir(path: Path) -> Path:
    """The checkpoint directory with ``train_state.pt`` for ``--resume PATH`` (a run dir or its last/).

    Resuming is the run's writer: a kill between the two renames of a ``last/`` swap leaves only
    ``.last.tdfast-old-<pid>/``, which is put back, and staged copies of killed writers are removed
    (``tdfast.atomic.clean_stale``).
    """
    for candidate in (path, path / LAST):
        if candidate.name == LAST:
            clean_stale(candidate)
        if (candidate / TRAIN_STATE_NAME).is_file():
            return candidate
    if unfinished(path):
        raise InputError(f"--resume {str(path)!r}: the run stopped before its first checkpoint, so there "
                         f"is nothing to continue; run the same command without --resume to start it again "
                         f"(its log is replaced)")
    raise InputError(f"--resume {str(path)!r}: expected a training run directory (with {LAST}/"
                     f"{TRAIN_STATE_NAME}) or a checkpoint directory with {TRAIN_STATE_NAME}; found neither")


def last_checkpoint_note(out_dir: Path) -> str:
    """Where a stopped run can be continued from, in words for a one-line message."""
    if (out_dir / LAST / TRAIN_STATE_NAME).is_file():
        return f"the last checkpoint is {out_dir / LAST} (continue with --resume {out_dir})"
    return f"no checkpoint was written yet in {out_dir}"


@contextlib.contextmanager
def claim(out_dir: Path, fresh: bool) -> Iterator[None]:
    """This process is the one writer of run directory ``out_dir`` while the block runs.

    Creates ``out_dir`` (an unwritable parent fails here, before any training), takes an
    exclusive ``flock`` on ``out_dir/.tdfast-train.lock`` (the kernel drops it when the process
    dies, so a killed run never leaves a stale lock; a second writer is refused at once), and
    proves the directory writable. ``fresh``: a new run; the log of an ``unfinished`` one is
    replaced by an empty log, so a run directory exists with its log from the start. If the
    block fails before the first checkpoint, what this created is removed again.
    """
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = out_dir / LOCK_NAME
    with named_os_errors(lock):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_ino != os.stat(lock).st_ino:  # the run before removed it as we opened it
                raise BlockingIOError
        except (BlockingIOError, FileNotFoundError):
            raise InputError(f"--out {str(out_dir)!r}: another tdfast train is writing to this run directory; "
                             f"wait for it to finish or choose another --out") from None
        if fresh:
            check_fresh(out_dir)  # again, under the lock: a run that finished meanwhile counts
            atomic_write_bytes(out_dir / LOG_NAME, b"")
        try:
            yield
        except BaseException:
            if created and not (out_dir / LAST).exists() and not (out_dir / WEIGHTS_NAME).exists():
                shutil.rmtree(out_dir, ignore_errors=True)  # nothing of value: leave nothing
            raise
        finally:
            lock.unlink(missing_ok=True)  # still held: a newcomer sees the inode change and stops
    finally:
        os.close(fd)


def save_last(out_dir: Path, model: torch.nn.Module, train_state: dict[str, Any]) -> Path:
    """Atomically write ``out_dir/last``: config, weights and ``train_state.pt``."""
    buffer = io.BytesIO()  # serialised in memory: a full disk is an OSError naming the file
    torch.save(train_state, buffer)

    def extra(tmp: Path) -> None:
        write_new_file(tmp / TRAIN_STATE_NAME, buffer.getvalue())

    return save_checkpoint_dir(out_dir / LAST, model, extra=extra)


def load_train_state(ckpt: Path) -> dict[str, Any]:
    """``train_state.pt`` of a checkpoint dir, loaded with ``weights_only=True`` (no arbitrary
    pickle); InputError naming the file if it is truncated or holds objects that aren't data."""
    path = ckpt / TRAIN_STATE_NAME
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Unsupported" in str(e):
            raise InputError(f"{path}: refused as unsafe: it holds Python objects other than tensors and "
                             f"plain data, which tdfast never writes; resume only from a run you trust "
                             f"that tdfast wrote") from None
        raise InputError(f"{path}: unreadable train state ({e}); resume from another checkpoint") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise InputError(f"{path}: unreadable train state, probably truncated ({type(e).__name__}: "
                         f"{str(e)[:200]}); resume from another checkpoint") from None


def training_config(state: dict[str, Any], ckpt: Path) -> "TrainConfig":
    """The ``TrainConfig`` a run was trained with, from its ``train_state.pt``."""
    from tdfast.training.config import TrainConfig

    if not isinstance(state.get("training"), dict):
        raise InputError(f"{ckpt / TRAIN_STATE_NAME}: no training settings in it (written by an older "
                         f"tdfast); start a new run")
    return TrainConfig.from_dict(state["training"])


def save_best(out_dir: Path, model: torch.nn.Module, metrics: dict | None,
              predictions: list[dict] | None) -> None:
    """Replace the best weights (and their metrics / predictions) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # weights before config: config.json never changes during a run, so a crash between
    # the renames leaves a loadable pair except on the very first save
    write_checkpoint_files(out_dir, model)
    if metrics is not None:
        atomic_write_bytes(out_dir / BEST_METRICS, json.dumps(metrics, indent=2).encode())
    if predictions is not None:
        atomic_write_bytes(out_dir / BEST_PREDS, "".join(json.dumps(r) + "\n" for r in predictions).encode())


def check_resume_target(src_run: Path, out_dir: Path) -> None:
    """Resuming run ``src_run`` into another ``out_dir`` needs a new one: a finished run there
    would get its last/ replaced and another run's log appended to its own."""
    taken = [n for n in (LAST, LOG_NAME, WEIGHTS_NAME) if (out_dir / n).exists()]
    if taken:
        raise InputError(f"--out {str(out_dir)!r}: resuming --resume {str(src_run)!r} into another "
                         f"directory needs a new or empty --out, but it holds a training run "
                         f"({', '.join(taken)}); pass --out {src_run} to continue in place")


def check_out(out_dir: Path, resume: Path | None) -> Path | None:
    """All checks of ``--out`` (and ``--resume``) before any work -> the checkpoint to resume
    from (None for a new run): --out is not a file; a new run needs a fresh --out; resuming
    into another directory needs a fresh one too (``check_resume_target``)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {str(out_dir)!r}: expected a run directory, but it is a file")
    if resume is None:
        check_fresh(out_dir)
        return None
    ckpt = resume_dir(resume)
    src_run = ckpt.parent if ckpt.name == LAST else ckpt
    if src_run.resolve() != out_dir.resolve():
        check_resume_target(src_run, out_dir)
    return ckpt


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
        with named_os_errors(self.path), self.path.open("a", encoding="utf-8") as f:
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
    """All records of a log.jsonl. A last line cut short by a kill during the append is dropped
    with a warning (the checkpoint's record count says what is kept anyway); a bad line
    elsewhere is an InputError naming the file and line."""
    lines = path.read_bytes().decode("utf-8", errors="replace").split("\n")
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if any(rest.strip() for rest in lines[i + 1:]):
                raise InputError(f"{path}:{i + 1}: malformed log record") from None
            warnings.warn(f"{path}:{i + 1}: dropped a half-written last line (the run was killed while "
                          f"appending to its log)", stacklevel=2)
    return records
