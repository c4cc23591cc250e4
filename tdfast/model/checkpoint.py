"""Checkpoint directories: ``config.json`` + ``model.safetensors`` (+ ``train_state.pt``).

``save_checkpoint`` writes exactly its two files into the directory, replaced together
at one instant (``tdfast.commit``: both staged and fsynced, a journal, then the renames;
a kill anywhere leaves the old pair or the new one loadable), and leaves every other
file there alone: a run directory's ``last/``, a user's notes,
a cached ONNX export (re-made when the weights change: ``tdfast.export.ensure_export``).
No pickled objects: the config is JSON and the weights are safetensors.

Loading changes the file system only to finish a save that a kill interrupted after its
commit point (``tdfast.commit.finish_commit``), reads under a shared lock (no save lands
between reading the config and the weights), and reads hostile files in bounded work:

1. ``config.json`` must be UTF-8 JSON, an object, with every field of the config
   (a missing ``clip_len`` would otherwise silently take the default and shift every
   span), each of the right type;
2. the safetensors *header* is read (no tensor data) and checked against the config
   before any allocation: layer counts no larger than the number of tensors, then the
   names and shapes of a model built on the ``meta`` device (no memory), and every
   tensor floating-point;
3. the weights are loaded and must be finite.

Any failure is an ``InputError`` naming the file and the field or tensor.
"""
from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tdfast.atomic import OLD_TAG, atomic_write_bytes, atomic_write_dir, atomic_write_file, write_new_file
from tdfast.commit import commit_files, finish_commit, reading  # noqa: F401 -- reading: for loaders
from tdfast.errors import InputError

if TYPE_CHECKING:  # torch is imported only where weights are touched: tdfast eval does without it
    import torch

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TRAIN_STATE_NAME = "train_state.pt"
MAX_JSON_BYTES = 1 << 20  # a config.json is ~1 KB; anything near this is not one
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")  # safetensors dtype names of floating-point weights
# Fields that count repeated layers: each layer holds at least one tensor of the file.
LAYER_COUNT_FIELDS = ("num_td_layers", "num_encoder_layers", "num_decoder_layers", "num_input_proj")


def write_checkpoint_files(directory: Path, model: "torch.nn.Module",
                           extra: dict[str, bytes] | None = None) -> None:
    """``model.safetensors`` + ``config.json`` (+ ``extra`` name -> bytes) into ``directory``,
    all replaced at one instant (``tdfast.commit``): a kill leaves the old pair or the new."""
    from safetensors.torch import save

    # serialised in memory, then written by tdfast: a full disk is an OSError naming the file
    # (safetensors' own writer raises its own error type without one)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    blobs = {WEIGHTS_NAME: save(state, metadata={"format": "pt"}),
             CONFIG_NAME: model.config.to_json().encode("utf-8"), **(extra or {})}
    commit_files(directory, {name: (lambda tmp, data=data: write_new_file(tmp, data))
                             for name, data in blobs.items()})


def save_checkpoint(directory: str | Path, model: "torch.nn.Module") -> Path:
    """Write ``model`` (a TDDETR) as config.json + model.safetensors into ``directory``,
    keeping every other file there."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InputError(f"directory {str(directory)!r}: expected a checkpoint directory, but it is a file")
    write_checkpoint_files(directory, model)
    return directory


def save_checkpoint_dir(directory: str | Path, model: "torch.nn.Module",
                        extra: Callable[[Path], None] | None = None) -> Path:
    """Swap in a whole checkpoint directory at once (config, weights, ``extra(tmp_dir)``'s
    files): for directories tdfast owns, like a run's ``last/``."""
    def write(tmp: Path) -> None:
        write_checkpoint_files(tmp, model)
        if extra is not None:
            extra(tmp)

    return atomic_write_dir(directory, write)


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; InputError naming the file if it is not UTF-8 JSON of one
    object, too large, or nested too deeply to parse."""
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise InputError(f"{path}: expected a small JSON file, got {size} bytes")
        text = path.read_bytes().decode("utf-8")
        data = json.loads(text)
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: malformed JSON ({e})") from None
    except RecursionError:
        raise InputError(f"{path}: JSON nested too deeply to be a config") from None
    except IsADirectoryError:
        raise InputError(f"{path}: expected a file, got a directory") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def load_config(directory: str | Path):
    """Read ``<directory>/config.json`` into a TDDETRConfig; every field must be present, except
    the opt-in switches (``VARIANT_FIELDS``, ``TRAINING_ONLY_FIELDS``): a config.json written
    before they existed describes the official network, i.e. all of them off."""
    from tdfast.model.config import TRAINING_ONLY_FIELDS, VARIANT_FIELDS, TDDETRConfig

    directory = Path(directory)
    finish_commit(directory)
    path = directory / CONFIG_NAME
    if not path.is_file():
        hint = ""
        if directory.parent.is_dir() and not directory.exists():
            left = sorted(directory.parent.glob(f".{directory.name}.{OLD_TAG}-*"))
            if left:
                hint = (f"; an interrupted save left {left[0].name} there (the next save, or tdfast train "
                        f"--resume for a run's last/, puts it back)")
        raise InputError(f"checkpoint {str(directory)!r}: expected a directory with {CONFIG_NAME} and "
                         f"{WEIGHTS_NAME}, but {path} does not exist{hint}")
    data = read_json_object(path)
    missing = [f.name for f in dataclasses.fields(TDDETRConfig)
               if f.name not in data and f.name not in VARIANT_FIELDS + TRAINING_ONLY_FIELDS]
    if missing:
        raise InputError(f"{path}: missing field(s) {missing} (a config.json written by save_pretrained "
                         f"has every field; defaults are not guessed for a trained model)")
    try:
        return TDDETRConfig.from_dict(data)
    except InputError as e:
        raise InputError(f"{path}: {e}") from None


def read_header(weights: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Tensor name -> (safetensors dtype name, shape) from the file's header; no data is read."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            header = {}
            for k in f.keys():
                s = f.get_slice(k)
                header[k] = (str(s.get_dtype()), tuple(int(d) for d in s.get_shape()))
    except Exception as e:  # safetensors raises its own error type for truncated / garbage files
        raise InputError(f"{weights}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    return header


def check_header(config, header: dict[str, tuple[str, tuple[int, ...]]],
                 expected_shapes: Callable[[Any], dict[str, tuple[int, ...]]], weights: Path,
                 config_path: Path) -> None:
    """InputError unless the header lists exactly the tensors ``expected_shapes(config)`` names
    (name -> shape, what the config builds), all floating. The cheap checks come first: a
    hostile config with a huge layer count is refused before any layer is built, even on meta."""
    for name in LAYER_COUNT_FIELDS:
        n = getattr(config, name, None)
        if isinstance(n, int) and n > len(header):
            raise InputError(f"{config_path}: field {name}={n} disagrees with {weights} ({len(header)} "
                             f"tensors in all; every layer holds at least one)")
    for name, (dtype, _) in header.items():
        if dtype not in FLOAT_DTYPES:
            raise InputError(f"{weights}: tensor {name!r} has dtype {dtype}; expected floating-point "
                             f"weights ({', '.join(FLOAT_DTYPES)})")
    expected = expected_shapes(config)
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    if missing or unexpected:
        raise InputError(f"{config_path}: the config does not fit the tensors of {weights} (missing "
                         f"{missing[:5]}, unexpected {unexpected[:5]}); fields {_layer_fields(missing + unexpected)}")
    for k, shape in expected.items():
        seen = header[k][1]
        if seen != shape:
            fields = _size_fields(config, [e for e, s in zip(shape, seen) if e != s] if len(shape) == len(seen)
                                  else list(shape))
            raise InputError(f"{config_path}: field(s) {fields} disagree with {weights}: tensor {k!r} has "
                             f"shape {list(seen)}, the config gives {list(shape)}")


def _size_fields(config, dims: list[int]) -> list[str]:
    """The integer config fields whose value is one of ``dims`` (the likely culprits)."""
    out = [f.name for f in dataclasses.fields(config)
           if isinstance(getattr(config, f.name), int) and not isinstance(getattr(config, f.name), bool)
           and getattr(config, f.name) in dims]
    if getattr(config, "model_video_dim", None) in dims and "video_dim" not in out:
        out.append("video_dim")
    return out or ["(a width field)"]


def _layer_fields(names: list[str]) -> list[str]:
    """Config fields counting the layers whose tensor names differ (``<prefix>.<i>.``)."""
    prefixes = sorted({m.group(1) for n in names if (m := re.match(r"((?:[a-z_]+\.)*[a-z_]+)\.\d+\.", n))})
    guesses = [f for f in LAYER_COUNT_FIELDS for p in prefixes if f.split("_")[1] in p]
    return sorted(set(guesses)) or prefixes or ["(structure switches such as use_tdem)"]


def load_weights(directory: str | Path, config,
                 expected: Callable[[Any], dict[str, tuple[int, ...]]]) -> dict[str, "torch.Tensor"]:
    """The checked tensors of ``<directory>/model.safetensors`` on CPU: ``expected(config)``
    gives the tensor names and shapes the network builds (the model passes its own, so the
    format does not import the network); InputError naming the file and tensor otherwise."""
    import torch
    from safetensors.torch import load_file

    directory = Path(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise InputError(f"checkpoint {str(directory)!r}: {WEIGHTS_NAME} is missing")
    check_header(config, read_header(weights), expected, weights, directory / CONFIG_NAME)
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as e:
        raise InputError(f"{weights}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    for k, v in state.items():
        if not bool(torch.isfinite(v).all()):
            raise InputError(f"{weights}: tensor {k!r} holds NaN or inf values")
    return state


def read_json(path: str | Path) -> dict:
    """Read a JSON file, InputError naming the file if it is malformed."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: malformed JSON ({e})") from None
