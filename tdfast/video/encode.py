"""``ClipEncoder``: video files and sentences -> the CLIP features QD-DETR's run_on_video feeds its model.

    enc = ClipEncoder("ViT-B-32.pt", clip_backend="onnxruntime")
    video = enc.encode_video("x.mp4")        # [T, 512] float32, one row per 2 s clip
    tokens = enc.encode_text(["a dog runs"])   # [[M, 512] float32], M = valid tokens

Like the official ``ClipFeatureExtractor``: frames as ``tdfast.video.decode`` samples them,
scaled to [0, 1] and normalised with CLIP's mean and std (``(x - mean) / (std + 1e-8)``),
through the image tower (projected, not L2-normalised); sentences tokenized with
run_on_video's truncation to 32 tokens, through the text tower, keeping the
``last_hidden_state`` rows up to the valid length. The official valid length counts the
non-zero token ids, and CLIP's id 0 is "!", so a query with "!" tokens loses that many
final rows there; that is kept here so the features stay equal.

Decoding runs in a background thread while the image tower encodes the previous batch,
so on a machine with two cores or more the two overlap.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from tdfast.errors import InputError
from tdfast.video.clip_model import build_towers
from tdfast.video.clip_weights import read_clip_state_dict
from tdfast.video.decode import iter_frames
from tdfast.video.image_backends import DEFAULT_BATCH, make_image_runner
from tdfast.video.tokenize import tokenize

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
CLIP_LEN = 2.0  # seconds per clip in run_on_video (one frame each)


def normalize_pixels(frames: np.ndarray) -> np.ndarray:
    """[N, S, S, 3] uint8 -> [N, 3, S, S] float32, in the official order of operations."""
    x = frames.astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255.0)  # [N, 3, S, S]
    return np.ascontiguousarray((x - CLIP_MEAN[:, None, None]) / (CLIP_STD[:, None, None] + np.float32(1e-8)))


def _batches(frames: Generator[np.ndarray, None, None], size: int) -> Iterator[np.ndarray]:
    """Group frames into [<=size, S, S, 3] arrays, decoding in a background thread.

    If the consumer stops early (an error while encoding), the decoding thread stops too
    and closes the file."""
    q: queue.Queue = queue.Queue(maxsize=2 * size)
    done, stop = object(), threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for f in frames:
                if not put(f):
                    return
            put(done)
        except BaseException as e:  # noqa: BLE001 -- re-raised in the consumer
            put(e)
        finally:
            frames.close()

    threading.Thread(target=produce, daemon=True).start()
    batch: list[np.ndarray] = []
    try:
        while True:
            item = q.get()
            if isinstance(item, BaseException):
                raise item
            if item is done:
                break
            batch.append(item)
            if len(batch) == size:
                yield np.stack(batch)
                batch = []
        if batch:
            yield np.stack(batch)
    finally:
        stop.set()


class ClipEncoder:
    """CLIP image and text towers from a local weights file (see ``clip_weights``).

    ``clip_backend``: ``eager``, ``onnxruntime`` or ``onnxruntime-int8`` for the image tower.
    ``batch_size``: frames per image-tower call (None: the backend's ``DEFAULT_BATCH``).
    ``threads``: decoder and ONNX Runtime threads (0: one per core). ``cache_dir``: where
    ONNX exports are kept between runs.
    """

    def __init__(self, weights: str | Path, clip_backend: str = "eager", batch_size: int | None = None,
                 threads: int = 0, cache_dir: str | Path | None = None) -> None:
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise InputError(f"batch_size: expected a positive number of frames, got {batch_size!r}")
        weights = Path(weights)
        sd = read_clip_state_dict(weights)
        self.vision, self.text, self.shape = build_towers(sd, str(weights))
        self.clip_backend = clip_backend
        self.threads = threads
        self.run_image = make_image_runner(clip_backend, self.vision, self.shape.image_size, threads,
                                           weights, None if cache_dir is None else Path(cache_dir).expanduser())
        self.batch_size = DEFAULT_BATCH[clip_backend] if batch_size is None else batch_size

    @property
    def video_dim(self) -> int:
        return self.shape.embed_dim

    @property
    def text_dim(self) -> int:
        return self.shape.text_width

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        """[N, S, S, 3] uint8 RGB -> [N, embed_dim] float32 image features."""
        return self.run_image(normalize_pixels(frames))

    def encode_video(self, path: str | Path, clip_len: float = CLIP_LEN) -> np.ndarray:
        """One row of image features per ``clip_len`` s clip of the video: [T, embed_dim] float32."""
        frames = iter_frames(path, clip_len, self.shape.image_size, self.threads)
        return np.concatenate([self.encode_frames(b) for b in _batches(frames, self.batch_size)])

    def encode_text(self, queries: Sequence[str]) -> list[np.ndarray]:
        """Each sentence's token states up to its (official) valid length: [M_j, text_width] float32."""
        ids, _ = tokenize(list(queries))
        valid = (ids != 0).sum(1).tolist()  # the official count, see the module docstring
        with torch.inference_mode():
            states = self.text(ids).numpy()  # [N, T, W]
        return [states[j, :n] for j, n in enumerate(valid)]
