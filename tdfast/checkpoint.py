"""Checkpoint directories: ``config.json`` + ``model.safetensors`` (+ ``train_state.pt``).

Writes are atomic at the directory level: everything goes into a sibling
temp directory, each file is fsynced, then the temp directory replaces the
target with renames. A crash leaves either the old checkpoint or the new one
(possibly under ``<dir>.old`` for the instant between the two renames, which
``load_checkpoint`` recovers), never a half-written mix. No pickled objects:
the config is JSON and the weights are safetensors.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tdfast.errors import InputError

if TYPE_CHECKING:  # torch is imported only where weights are touched: tdfast eval does without it
    import torch

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TRAIN_STATE_NAME = "train_state.pt"


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write one file atomically: temp name in the same dir, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_dir(directory: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)`` to fill a fresh directory, then swap it in for ``directory``.

    Files already in ``directory`` that ``write`` does not produce are kept (copied
    into the new directory first), so e.g. an ONNX export cached beside the weights
    survives a re-save.
    """
    directory = Path(directory).resolve()
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    old = directory.with_name(directory.name + ".old")
    try:
        write(tmp)
        if directory.is_dir():
            for item in directory.iterdir():
                if not (tmp / item.name).exists() and item.is_file():
                    shutil.copy2(item, tmp / item.name)
        for f in tmp.iterdir():
            if f.is_file():
                fsync_file(f)
        if old.exists():
            shutil.rmtree(old)
        if directory.exists():
            os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def recover_swap(directory: Path) -> None:
    """Finish a swap that a crash interrupted between its two renames."""
    old = directory.with_name(directory.name + ".old")
    if not directory.exists() and old.is_dir():
        os.replace(old, directory)


def save_checkpoint(directory: str | Path, model: "torch.nn.Module",
                    extra: Callable[[Path], None] | None = None) -> Path:
    """Write ``model`` (a TDDETR) as config.json + model.safetensors; ``extra(tmp_dir)`` may add files."""
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        (tmp / CONFIG_NAME).write_text(model.config.to_json())
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        if extra is not None:
            extra(tmp)

    return atomic_write_dir(directory, write)


def load_config(directory: str | Path):
    """Read ``<directory>/config.json`` into a TDDETRConfig."""
    from tdfast.model.config import TDDETRConfig

    directory = Path(directory)
    recover_swap(directory)
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise InputError(f"checkpoint {str(directory)!r}: expected a directory with {CONFIG_NAME} and "
                         f"{WEIGHTS_NAME}, but {path} does not exist")
    return TDDETRConfig.from_json(path.read_text(), source=str(path))


def load_checkpoint(directory: str | Path, device: "str | torch.device" = "cpu"):
    """Build a TDDETR from ``directory`` and load its safetensors weights (strict)."""
    from safetensors.torch import load_file

    from tdfast.model.tddetr import TDDETR

    directory = Path(directory)
    config = load_config(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise InputError(f"checkpoint {str(directory)!r}: {WEIGHTS_NAME} is missing")
    model = TDDETR(config)
    state = load_file(str(weights), device=str(device))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(f"checkpoint {str(weights)!r}: weights do not fit config.json "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.to(device).eval()


def read_json(path: str | Path) -> dict:
    """Read a JSON file, InputError naming the file if it is malformed."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: malformed JSON ({e})") from None
