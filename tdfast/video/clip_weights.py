"""Read CLIP weights from a local file without running any code the file may contain.

Accepted files (the ones users have):

- the OpenAI ``.pt`` that ``clip.load("ViT-B/32")`` caches (``~/.cache/clip/ViT-B-32.pt``):
  a TorchScript archive, i.e. a zip with ``<name>/data.pkl`` (the module tree), the
  tensors' bytes under ``<name>/data/<key>`` and the TorchScript source under ``code/``;
- a plain state dict saved with ``torch.save`` (what ``clip.load(..., jit=False)``'s
  ``model.state_dict()`` gives), read with ``torch.load(weights_only=True)``;
- a ``.safetensors`` file with the same tensor names (open_clip's OpenAI ViT-B-32 export).

Why not ``torch.jit.load``: loading a TorchScript archive compiles the code inside it and
runs the ``__setstate__`` methods it defines; PyTorch's security policy asks to treat such
files as programs. ``torch.load(weights_only=True)`` refuses TorchScript archives. So the
archive's ``data.pkl`` is read here with an unpickler that builds nothing but plain
attribute records for the ``__torch__.*`` module classes, tensors from the archive's own
records, and ``OrderedDict``; any other global (a function or class the file names) is
refused. The ``code/`` folder is never read.
"""
from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path

import torch
from torch import Tensor

from tdfast.errors import InputError

WHERE_FROM = ("OpenAI CLIP checkpoints are the files clip.load() caches in ~/.cache/clip "
              "(ViT-B/32: ViT-B-32.pt); download one once on a machine with internet and pass its path")

_STORAGE_DTYPES = {
    "HalfStorage": torch.float16, "FloatStorage": torch.float32, "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class _Record:
    """Stand-in for a TorchScript module object: keeps its attributes, runs nothing."""

    def __setstate__(self, state: dict) -> None:
        self.attrs = dict(state) if isinstance(state, dict) else {}


def _rebuild_tensor(storage: Tensor, offset: int, size: tuple, stride: tuple, *_: object) -> Tensor:
    return torch.as_strided(storage, size, stride, offset).clone()


class _ArchiveUnpickler(pickle.Unpickler):
    def __init__(self, archive: zipfile.ZipFile, prefix: str, data: bytes, source: str) -> None:
        import io

        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.source = archive, prefix, source

    def find_class(self, module: str, name: str):  # noqa: ANN201 (pickle protocol)
        if module == "__torch__" or module.startswith("__torch__."):
            return _Record
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise InputError(f"{self.source}: refused: the archive names {module}.{name}, which a CLIP "
                         f"weights file has no need of")

    def persistent_load(self, pid: tuple) -> Tensor:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], torch.dtype)):
            raise InputError(f"{self.source}: unexpected storage record {pid!r:.80}")
        dtype, key = pid[1], str(pid[2])
        raw = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
        return torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)


def _flatten(obj: _Record, prefix: str, out: dict[str, Tensor]) -> None:
    for name, value in obj.attrs.items():
        if isinstance(value, Tensor):
            out[prefix + name] = value
        elif isinstance(value, _Record):
            _flatten(value, f"{prefix}{name}.", out)


def _read_torchscript(path: Path, archive: zipfile.ZipFile) -> dict[str, Tensor]:
    pkls = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkls) != 1:
        raise InputError(f"{path}: a zip but not a TorchScript archive (no <name>/data.pkl)")
    prefix = pkls[0][: -len("data.pkl")]
    try:
        root = _ArchiveUnpickler(archive, prefix, archive.read(pkls[0]), str(path)).load()
    except (pickle.UnpicklingError, KeyError, EOFError, RuntimeError, ValueError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"{path}: unreadable TorchScript archive ({e})") from None
    if not isinstance(root, _Record):
        raise InputError(f"{path}: the archive's data.pkl holds a {type(root).__name__}, not a module")
    out: dict[str, Tensor] = {}
    _flatten(root, "", out)
    return out


def read_clip_state_dict(path: str | Path) -> dict[str, Tensor]:
    """All tensors of a CLIP weights file by their OpenAI names (``visual.conv1.weight``, ...).

    Raises ``InputError`` naming the file for a missing, unreadable or unsafe file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"clip weights: no such file {str(path)!r}. {WHERE_FROM}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise InputError(f"{path}: unreadable safetensors file ({e})") from None
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(n.endswith("/constants.pkl") for n in archive.namelist()):
                return _read_torchscript(path, archive)
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        unsafe = [line.strip() for line in str(e).splitlines() if "Unsupported global" in line]
        if unsafe:
            raise InputError(f"{path}: refused as unsafe: it needs more than tensors to load "
                             f"({unsafe[0]})") from None
        raise InputError(f"{path}: not a CLIP weights file (not a PyTorch pickle). {WHERE_FROM}") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise InputError(f"{path}: not a CLIP weights file ({str(e).splitlines()[0]}). {WHERE_FROM}") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise InputError(f"{path}: expected a state dict of tensors, got {type(sd).__name__}")
    return sd
