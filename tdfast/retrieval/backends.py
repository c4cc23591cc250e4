"""The one table of inference backends behind ``Retriever``.

Every backend is a plain factory ``make(model, device, dtype, checkpoint_dir) -> Runner``.
A runner is called with a padded batch on its device -- video [B, L, video_dim],
video_mask [B, L] bool, query [B, M, text_dim], query_mask [B, M] bool -- and
returns the model's dict (``pred_spans`` [B, Q, 2], ``pred_logits`` [B, Q, 2],
``saliency_scores`` [B, L]) as torch tensors. ``static_shapes`` tells the
Retriever to round the batch size up to a bucket too (compiled graphs, CUDA
graphs and TensorRT profiles are shape-specialised).

Optional dependencies (onnxruntime, triton, tensorrt) are imported inside the
factory that needs them; a backend that can't run here raises
``BackendUnavailableError`` saying what is missing.
"""
from __future__ import annotations

import copy
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from tdfast.defaults import MAX_BATCH
from tdfast.errors import BackendUnavailableError, InputError
from tdfast.model.tddetr import OUTPUT_NAMES

# Compilation progress goes to the "tdfast" logger: with no logging set up, Python prints
# WARNING records to stderr, so a first call that compiles for minutes says so.
log = logging.getLogger("tdfast.retrieval.backends")


class Runner(Protocol):
    name: str
    static_shapes: bool  # round batch sizes up to buckets too
    input_dtype: torch.dtype  # what the padded video/query are cast to
    max_batch: int | None  # most rows per call the backend accepts (None: any)

    def __call__(self, video: Tensor, video_mask: Tensor, query: Tensor,
                 query_mask: Tensor) -> dict[str, Tensor]: ...




class TorchRunner:
    """An nn.Module (eager, compiled or fused) run under ``torch.inference_mode``.

    ``timings``: for shape-specialised runners, per padded shape (B, L, M) the seconds
    of the first call (``compile_s``: tracing + codegen + one run) and of the next two
    (``warmup_s``: autotuning / CUDA-graph recording and the first replay).
    """

    def __init__(self, name: str, fn: Callable, dtype: torch.dtype, static_shapes: bool) -> None:
        self.name, self.fn, self.input_dtype, self.static_shapes = name, fn, dtype, static_shapes
        self.max_batch: int | None = None
        self.timings: dict[tuple[int, int, int], dict[str, float]] = {}
        self._calls: dict[tuple[int, int, int], int] = {}

    def __call__(self, video: Tensor, video_mask: Tensor, query: Tensor,
                 query_mask: Tensor) -> dict[str, Tensor]:
        shape = (video.shape[0], video.shape[1], query.shape[1])
        n = self._calls.get(shape, 0)
        if not self.static_shapes or n >= 3:
            with torch.inference_mode():
                out = self.fn(video, video_mask, query, query_mask)
            return {k: out[k] for k in OUTPUT_NAMES}
        sync = torch.cuda.synchronize if video.is_cuda else (lambda: None)
        if n == 0:
            # Minutes on a small CPU with nothing on screen otherwise (258 s seen on 2 cores).
            log.warning(f"tdfast {self.name}: compiling a graph for the new padded shape B={shape[0]} "
                        f"L={shape[1]} M={shape[2]} (once per shape; Retriever.warmup() does this "
                        f"before serving)")
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.fn(video, video_mask, query, query_mask)
            out = {k: out[k].clone() for k in OUTPUT_NAMES}  # CUDA-graph outputs are reused buffers
        sync()
        dt = time.perf_counter() - start
        t = self.timings.setdefault(shape, {"compile_s": 0.0, "warmup_s": 0.0})
        t["compile_s" if n == 0 else "warmup_s"] += dt
        if n == 0:
            log.warning(f"tdfast {self.name}: shape B={shape[0]} L={shape[1]} M={shape[2]} compiled "
                        f"and run in {dt:.1f} s")
        self._calls[shape] = n + 1
        return out


def _placed(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """``model`` in eval mode on ``device``/``dtype``: the same object when it already is,
    else a converted copy (the caller's model is never changed behind its back)."""
    p = next(model.parameters())
    if p.device != device or p.dtype != dtype:
        model = copy.deepcopy(model).to(device=device, dtype=dtype)
    return model.eval()


def _eager(model: nn.Module, device: torch.device, dtype: torch.dtype, ckpt: Path | None) -> Runner:
    return TorchRunner("eager", _placed(model, device, dtype), dtype, static_shapes=False)


def _compile(model: nn.Module, device: torch.device, dtype: torch.dtype, ckpt: Path | None) -> Runner:
    """torch.compile, one graph per padded (B, L, M) bucket. Weights are frozen into the
    graph (constant folding, oneDNN weight prepacking on CPU); on CUDA each bucket's
    graph is also captured as a CUDA graph (what ``mode="reduce-overhead"`` does; given
    as an inductor option because ``mode`` and ``options`` can't be combined)."""
    import torch._dynamo.config as dynamo_config

    model = _placed(model, device, dtype)
    # One compiled graph per bucket: allow as many as the bucket ladder can produce.
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 256)
    options = {"freezing": True}
    if device.type == "cuda":
        options["triton.cudagraphs"] = True
    fn = torch.compile(model, dynamic=False, options=options)
    return TorchRunner("compile", fn, dtype, static_shapes=True)


def _triton(model: nn.Module, device: torch.device, dtype: torch.dtype, ckpt: Path | None) -> Runner:
    """Eager model with every TD cross-attention swapped for the fused Triton kernel."""
    from tdfast.kernels import fuse_model  # raises BackendUnavailableError without triton/GPU

    model = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    return TorchRunner("triton", fuse_model(model), dtype, static_shapes=False)


class ArrayRunner:
    """Wraps a numpy-in/numpy-out runner (ONNX Runtime, TensorRT) into the Runner contract."""

    input_dtype = torch.float32
    max_batch: int | None = None

    def __init__(self, name: str, run: Callable[..., dict[str, np.ndarray]], static_shapes: bool) -> None:
        self.name, self.run, self.static_shapes = name, run, static_shapes

    def __call__(self, video: Tensor, video_mask: Tensor, query: Tensor,
                 query_mask: Tensor) -> dict[str, Tensor]:
        out = self.run(video, video_mask, query, query_mask)
        return {k: torch.as_tensor(np.asarray(out[k])) for k in OUTPUT_NAMES}


def _artifact(model: nn.Module, ckpt: Path | None, fmt: str, **options) -> Path:
    """The checkpoint's cached export in ``fmt`` (``tdfast.export.FORMATS``; made on first use,
    verified, atomic), or a fresh one in a temp dir for a model without a checkpoint dir."""
    from tdfast.export import ensure_export, export

    if ckpt is not None:
        return Path(ensure_export(ckpt, fmt, **options))
    out = Path(tempfile.mkdtemp(prefix="tdfast-export-"))
    return Path(export(copy.deepcopy(model).float().cpu(), fmt, out, log=None, **options))


def _ort_factory(int8: bool) -> Callable[..., Runner]:
    """onnxruntime on the fp32 graph (fp16 graph for dtype float16), or the int8 graph
    (activations quantized per row; CPU; lossy by design, judged by top-1 agreement)."""
    name = "onnxruntime-int8" if int8 else "onnxruntime"

    def make(model: nn.Module, device: torch.device, dtype: torch.dtype, ckpt: Path | None) -> Runner:
        from tdfast.export.ort import OrtRunner

        formats = {torch.float32: "onnx-int8" if int8 else "onnx"}
        if not int8:
            formats[torch.float16] = "onnx-fp16"
        if dtype not in formats:
            raise InputError(f"dtype: the {name} backend runs {sorted(map(str, formats))} graphs, "
                             f"got {dtype}")
        path = _artifact(model, ckpt, formats[dtype])
        # One CPU thread budget for every backend: torch.set_num_threads also sizes the session.
        threads = torch.get_num_threads() if device.type == "cpu" else None
        # Inputs are already validated by the Retriever; skip OrtRunner's second check.
        runner = OrtRunner(path, device=device.type, threads=threads, check=False)
        return ArrayRunner(name, runner, static_shapes=False)

    return make


def _tensorrt(model: nn.Module, device: torch.device, dtype: torch.dtype, ckpt: Path | None) -> Runner:
    """A TensorRT engine (fp32, fp16 or bf16, as ``dtype`` asks), cached in the checkpoint dir; its
    optimisation profile covers batches up to 32 (the Retriever's default chunk)."""
    import importlib.util

    from tdfast.export.tensorrt import INSTALL_HINT

    if device.type != "cuda":
        missing = "" if importlib.util.find_spec("tensorrt") else f"; also: {INSTALL_HINT}"
        raise BackendUnavailableError(f"tensorrt backend: needs a CUDA GPU, got device={device}{missing}")
    from tdfast.export import TrtRunner

    precision = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
    engine = _artifact(model, ckpt, "tensorrt", precision=precision, max_batch=MAX_BATCH)
    runner = ArrayRunner("tensorrt", TrtRunner(engine, check=False), static_shapes=True)
    runner.max_batch = MAX_BATCH  # the engine's profile ends there
    return runner


# The dispatch table: backend name -> factory.
BACKENDS: dict[str, Callable[[nn.Module, torch.device, torch.dtype, Path | None], Runner]] = {
    "eager": _eager,
    "compile": _compile,
    "triton": _triton,
    "onnxruntime": _ort_factory(int8=False),
    "onnxruntime-int8": _ort_factory(int8=True),
    "tensorrt": _tensorrt,
}


def make_runner(backend: str, model: nn.Module, device: torch.device, dtype: torch.dtype,
                checkpoint_dir: str | Path | None) -> Runner:
    """Build ``backend``'s runner; InputError for an unknown name."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise InputError(f"backend: expected one of {sorted(BACKENDS)}, got {backend!r}")
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    return BACKENDS[backend](model, device, dtype, ckpt)
