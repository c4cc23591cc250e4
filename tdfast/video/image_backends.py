"""Ways to run CLIP's image tower: eager PyTorch, ONNX Runtime fp32, ONNX Runtime int8.

The image tower is where raw-video retrieval spends its compute (about 4.4 GFLOP per
frame for ViT-B/32, against 1.5 GFLOP per (video, query) pair for all of TD-DETR), so it
gets the inference backends; the text tower runs eagerly (a query is a few dozen tokens).

ONNX Runtime sessions are built from an export made in memory when the encoder is
created (a few seconds for ViT-B/32) or read from ``cache_dir`` when a previous run left
one there (written atomically, named after the weights file's size, mtime and path).
``onnxruntime-int8`` quantizes the MatMul/Gemm weights to int8 per channel (dynamic
activation quantization); it changes the features, see docs/video.md for how much.
"""
from __future__ import annotations

import hashlib
import io
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tdfast.errors import BackendUnavailableError, InputError

IMAGE_BACKENDS = ("eager", "onnxruntime", "onnxruntime-int8")
# Frames per image-tower call. Small batches let the tower start while the decoder thread
# is still at work and leave little tower work once decoding ends; int8's tower is faster
# than 720p decoding, so the tail matters most there (docs/video.md, Speed).
DEFAULT_BATCH = {"eager": 8, "onnxruntime": 8, "onnxruntime-int8": 4}
ImageRunner = Callable[[np.ndarray], np.ndarray]  # [N, 3, S, S] float32 -> [N, E] float32


def _eager(vision: nn.Module) -> ImageRunner:
    def run(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return vision(torch.from_numpy(pixels)).numpy()
    return run


def _export(vision: nn.Module, image_size: int) -> bytes:
    buf = io.BytesIO()
    example = torch.zeros(2, 3, image_size, image_size)
    with torch.no_grad():
        torch.onnx.export(vision, (example,), buf, dynamo=False, opset_version=17,
                          input_names=["pixels"], output_names=["features"],
                          dynamic_axes={"pixels": {0: "frames"}, "features": {0: "frames"}})
    return buf.getvalue()


def _quantize(model: bytes) -> bytes:
    from tdfast.export.quantize import quantize_int8

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "fp32.onnx"), Path(tmp, "int8.onnx")
        src.write_bytes(model)
        return quantize_int8(src, dst, keep_fp32=()).read_bytes()


def _cache_name(weights: Path, backend: str) -> str:
    st = weights.stat()
    key = f"{weights.resolve()}|{st.st_size}|{st.st_mtime_ns}|{backend}|{torch.__version__}"
    return f"clip-image-{backend}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.onnx"


def _onnx_model(vision: nn.Module, image_size: int, int8: bool, weights: Path | None,
                cache_dir: Path | None) -> bytes:
    backend = "onnxruntime-int8" if int8 else "onnxruntime"
    cached = cache_dir / _cache_name(weights, backend) if cache_dir and weights else None
    if cached is not None and cached.is_file():
        return cached.read_bytes()
    model = _export(vision, image_size)
    if int8:
        model = _quantize(model)
    if cached is not None:
        from tdfast.atomic import atomic_write_bytes

        cached.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cached, model)
    return model


def _ort(vision: nn.Module, threads: int, image_size: int, int8: bool, weights: Path | None,
         cache_dir: Path | None) -> ImageRunner:
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailableError("the onnxruntime image backends need onnxruntime: "
                                      "pip install onnxruntime") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads sleep instead of spinning: the decoder thread runs beside the
    # session and needs those cores.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    model = _onnx_model(vision, image_size, int8, weights, cache_dir)
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])

    def run(pixels: np.ndarray) -> np.ndarray:
        return session.run(["features"], {"pixels": pixels})[0]
    return run


def make_image_runner(backend: str, vision: nn.Module, image_size: int, threads: int = 0,
                      weights: Path | None = None, cache_dir: Path | None = None) -> ImageRunner:
    """A function [N, 3, S, S] float32 -> [N, embed_dim] float32 running ``vision`` on ``backend``.

    ``threads``: intra-op threads for ONNX Runtime (0: one per core; eager uses torch's setting).
    """
    if backend not in IMAGE_BACKENDS:
        raise InputError(f"clip_backend: expected one of {', '.join(IMAGE_BACKENDS)}, got {backend!r}")
    if backend == "eager":
        return _eager(vision)
    return _ort(vision, threads, image_size, backend.endswith("int8"), weights, cache_dir)
