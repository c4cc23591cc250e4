"""Load clip and query-token features from npz files, the Moment-DETR way.

- video: ``<dir>/<vid>.npz``, key ``features``, shape (L, D_k) per dir. Each
  dir is truncated to ``max_video_len`` and, if ``normalize_video``, L2
  normalised per row *on its own* (so a row of the concatenation has norm
  sqrt(#dirs), as in Moment-DETR's loader); the dirs are then cut to the
  shortest length (extractors disagree by a clip) and concatenated along D
  in the order the dirs are given.
- query: ``<dir>/qid<qid>.npz``, key ``last_hidden_state``, shape (M, D),
  truncated to ``max_query_len`` tokens, then L2 normalised per token if
  ``normalize_text``.

Temporal-endpoint features are not added here; the model adds them from
the mask. Every problem raises ``InputError`` naming the file.
"""
from __future__ import annotations

import io
import os
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

from tdfast.atomic import atomic_write_bytes
from tdfast.errors import InputError
from tdfast.model.config import TDDETRConfig

VIDEO_KEY = "features"
QUERY_KEY = "last_hidden_state"
NORM_EPS = 1e-12  # rows with a smaller norm (all-zero padding rows) stay as they are


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """[N, D] -> [N, D] with unit L2 norm per row; rows with norm < NORM_EPS are left unchanged."""
    with np.errstate(over="ignore"):
        norm = np.linalg.norm(x, axis=-1, keepdims=True)
    out = x / np.maximum(norm, NORM_EPS)
    overflow = ~np.isfinite(norm[..., 0])
    if overflow.any():
        # Finite float32 entries above ~1e19 square to inf, which would zero the row: redo
        # those rows in float64 (rows holding NaN/inf are rejected before they get here).
        rows = np.asarray(x[overflow], dtype=np.float64)
        out[overflow] = rows / np.linalg.norm(rows, axis=-1, keepdims=True)
    return out


def read_npz_array(path: Path, key: str, context: str = "") -> np.ndarray:
    """The 2-D float32 array ``key`` of ``path``; InputError for a missing/unreadable file,
    a missing key (listing the keys present), a wrong rank, an empty array, a non-real
    dtype, NaN/inf, or values beyond float32 range.
    ``context`` (e.g. "needed by ann.jsonl:12") is appended to messages."""
    suffix = f" ({context})" if context else ""
    if not path.is_file():
        raise InputError(f"{path}: feature file not found{suffix}")
    try:
        with np.load(path, allow_pickle=False) as z:
            if key not in z.files:
                raise InputError(f"{path}: expected key {key!r}, found keys {sorted(z.files)}{suffix}")
            arr = z[key]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"{path}: not a readable npz file ({type(e).__name__}: {e}){suffix}") from None
    if arr.ndim != 2:
        raise InputError(f"{path}: {key}: expected a 2-D array (length, dim), got shape "
                         f"{arr.shape}{suffix}")
    if arr.shape[0] == 0:
        what = "an empty query (0 tokens)" if key == QUERY_KEY else "a zero-length video (0 clips)"
        raise InputError(f"{path}: {key}: expected at least one row, got {what}{suffix}")
    if arr.dtype.kind not in "iuf":
        raise InputError(f"{path}: {key}: expected real numbers, got dtype {arr.dtype}{suffix}")
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(f"{path}: {key}: expected finite values, found {int(bad.sum())} NaN/inf "
                         f"(first at index {first}){suffix}")
    with np.errstate(over="ignore"):
        out = arr.astype(np.float32, copy=False)
    big = ~np.isfinite(out)  # float64 values beyond float32's range become inf in the cast
    if big.any():
        first = tuple(int(i) for i in np.argwhere(big)[0])
        raise InputError(f"{path}: {key}: expected values within float32 range (|x| <= 3.4e38), "
                         f"found {int(big.sum())} beyond it (first at index {first}: "
                         f"{arr[first]:g}){suffix}")
    return out


class FeatureStore:
    """Reads video and query features for a config, with an optional in-memory LRU cache.

    ``cache_size``: number of video arrays kept (query arrays are small and
    cached in the same LRU); 0 disables caching. Returned arrays are
    read-only views of the cache; copy before writing into them. ``truncate``: cut
    videos to ``config.max_video_len`` clips (as training does); False keeps whole
    videos for the Retriever's sliding windows. The store owns the file names
    (``video_file``, ``query_file``): everything that writes or checks feature files asks it.
    """

    def __init__(self, video_dirs: Sequence[str | os.PathLike] | str | os.PathLike,
                 text_dir: str | os.PathLike, config: TDDETRConfig, cache_size: int = 0,
                 truncate: bool = True):
        if isinstance(video_dirs, (str, os.PathLike)):
            video_dirs = [video_dirs]
        self.video_dirs = [Path(d) for d in video_dirs]
        if not self.video_dirs:
            raise InputError("video_dirs: expected at least one feature directory, got none")
        for d in [*self.video_dirs, Path(text_dir)]:
            if not d.is_dir():
                raise InputError(f"feature directory {str(d)!r} not found")
        self.text_dir = Path(text_dir)
        self.config = config
        self.truncate = truncate
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()

    def _cached(self, key: tuple[str, str], load) -> np.ndarray:
        if self.cache_size <= 0:
            return load()
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        arr = load()
        arr.setflags(write=False)
        self._cache[key] = arr
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return arr

    def video(self, vid: str, context: str = "") -> np.ndarray:
        """[L, video_dim] float32 clip features of ``vid`` (truncated, normalised, concatenated)."""
        return self._cached(("v", vid), lambda: self._load_video(vid, context))

    def query(self, qid: int | str, context: str = "") -> np.ndarray:
        """[M, text_dim] float32 token features of query ``qid`` (truncated, normalised)."""
        return self._cached(("q", str(qid)), lambda: self._load_query(qid, context))

    @staticmethod
    def video_file(directory: str | os.PathLike, vid: str) -> Path:
        """Where video ``vid``'s features of one source live: ``<directory>/<vid>.npz``."""
        return Path(directory) / f"{vid}.npz"

    @staticmethod
    def query_file(directory: str | os.PathLike, qid: int | str) -> Path:
        """Where query ``qid``'s token features live: ``<directory>/qid<qid>.npz``."""
        return Path(directory) / f"qid{qid}.npz"

    def video_paths(self, vid: str) -> list[Path]:
        """``vid``'s feature files, one per video directory, in concatenation order."""
        return [self.video_file(d, vid) for d in self.video_dirs]

    def query_path(self, qid: int | str) -> Path:
        return self.query_file(self.text_dir, qid)

    def _load_video(self, vid: str, context: str) -> np.ndarray:
        paths = self.video_paths(vid)
        parts = [read_npz_array(p, VIDEO_KEY, context) for p in paths]
        where = ", ".join(str(p) for p in paths) + (f" ({context})" if context else "")
        return prepare_video(parts, self.config, where, self.truncate)

    def _load_query(self, qid: int | str, context: str) -> np.ndarray:
        path = self.query_path(qid)
        where = f"{path}" + (f" ({context})" if context else "")
        return prepare_query(read_npz_array(path, QUERY_KEY, context), self.config, where)


def prepare_video(parts: Sequence[np.ndarray], config: TDDETRConfig, where: str = "video",
                  truncate: bool = True) -> np.ndarray:
    """Per-dir [L_k, D_k] arrays -> [L, video_dim] float32: each truncated to max_video_len
    (if ``truncate``), L2-normalised per row on its own if ``normalize_video``, cut to the
    shortest L_k and concatenated along D in the given order. ``where`` names the source in errors."""
    limit = config.max_video_len if truncate else None
    parts = [np.asarray(p, dtype=np.float32)[:limit] for p in parts]
    for k, p in enumerate(parts):
        if p.ndim != 2:
            raise InputError(f"{where}[{k}]: expected a 2-D (clips, features) array, got shape {p.shape}")
    dim = sum(p.shape[1] for p in parts)
    if dim != config.video_dim:
        dims = " + ".join(str(p.shape[1]) for p in parts)
        raise InputError(f"{where}: expected video_dim={config.video_dim} in total, got {dims} = {dim}")
    if config.normalize_video:
        parts = [l2_normalize(p) for p in parts]
    length = min(p.shape[0] for p in parts)
    return np.concatenate([p[:length] for p in parts], axis=1)  # [L, video_dim]


def prepare_query(arr: np.ndarray, config: TDDETRConfig, where: str = "query") -> np.ndarray:
    """[M, D] -> [min(M, max_query_len), text_dim] float32, L2-normalised per token if
    ``normalize_text``. ``where`` names the source in errors."""
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim != 2:
        raise InputError(f"{where}: expected a 2-D (tokens, text_dim={config.text_dim}) array, got shape "
                         f"{arr.shape}")
    if arr.shape[1] != config.text_dim:
        raise InputError(f"{where}: expected text_dim={config.text_dim}, got {arr.shape[1]}")
    arr = arr[: config.max_query_len]
    return l2_normalize(arr) if config.normalize_text else arr


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Write arrays to an npz that ``np.load`` reads, byte-for-byte reproducible
    (fixed zip timestamps, unlike ``np.savez``), atomically."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(arr), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
