"""TensorRT 10: build a serialized engine from the ONNX export, and run it.

``tensorrt`` is imported lazily (it cannot be installed on CPU-only machines);
without it both entry points raise ``BackendUnavailableError`` naming the
install. Before building, the graph goes through ``check_tensorrt_compat`` so
an unsupported op fails with a readable message rather than a parser trace.

Engine: one optimization profile with min/opt/max for batch B, video length L
and query length M (defaults: 1 / typical / the config's max lengths and
``max_batch``), optional fp16 / bf16 kernels (I/O stays fp32/bool), and a
timing cache that makes rebuilds fast. A JSON sidecar (``<engine>.json``) keeps
the config and build settings, since an engine file carries no metadata.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tdfast.atomic import atomic_write_bytes
from tdfast.errors import BackendUnavailableError, InputError
from tdfast.defaults import MAX_BATCH
from tdfast.export.options import DEFAULT_PRECISION, PRECISIONS
from tdfast.export.wrapper import INPUT_NAMES, OUTPUT_NAMES, check_max_batch

INSTALL_HINT = ("TensorRT is not installed: pip install tensorrt (NVIDIA's wheel, needs a CUDA GPU "
                "and driver; see https://docs.nvidia.com/deeplearning/tensorrt/latest/installing-tensorrt/"
                "installing.html), or pip install 'tdfast[tensorrt]'")


def _trt():
    try:
        import tensorrt
    except ImportError:
        raise BackendUnavailableError(INSTALL_HINT) from None
    return tensorrt


def sidecar_path(engine_path: str | Path) -> Path:
    return Path(str(engine_path) + ".json")


def profile_shapes(config, max_batch: int = MAX_BATCH, opt_batch: int | None = None
                   ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) shape of every input for the optimization profile."""
    check_max_batch(max_batch)
    ob = opt_batch or max(1, max_batch // 4)
    lmax, mmax = config.max_video_len, config.max_query_len
    b, l, m = (1, ob, max_batch), (1, lmax, lmax), (1, min(mmax, 16), mmax)  # (min, opt, max)
    return {
        "video": tuple((b[i], l[i], config.video_dim) for i in range(3)),
        "video_mask": tuple((b[i], l[i]) for i in range(3)),
        "query": tuple((b[i], m[i], config.text_dim) for i in range(3)),
        "query_mask": tuple((b[i], m[i]) for i in range(3)),
    }


def check_build_options(precision: str = DEFAULT_PRECISION, max_batch: int = MAX_BATCH) -> None:
    """InputError for a precision or max batch the builder can't use (checked before any
    export work, so a bad flag never costs an ONNX export first)."""
    if precision not in PRECISIONS:
        raise InputError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    check_max_batch(max_batch)


def check_in_profile(name: str, shape: tuple[int, ...], profile: dict | None) -> None:
    """InputError unless ``shape`` of input ``name`` lies inside the engine's optimization
    profile (``profile``: the sidecar's name -> [min, opt, max] shapes; None: not recorded)."""
    if not profile or name not in profile:
        return
    lo, _, hi = (tuple(s) for s in profile[name])
    if len(shape) != len(hi) or any(not a <= n <= b for a, n, b in zip(lo, shape, hi)):
        raise InputError(f"{name}: expected a shape between {lo} and {hi} (the engine's optimization "
                         f"profile), got {tuple(shape)}; rebuild the engine with a larger max_batch "
                         f"or split the batch")


def build_tensorrt_engine(onnx_path: str | Path, out_path: str | Path, precision: str = DEFAULT_PRECISION,
                          max_batch: int = MAX_BATCH, opt_batch: int | None = None,
                          workspace_gib: float = 4.0, timing_cache: str | Path | None = None,
                          log=print) -> Path:
    """Build ``out_path`` (serialized engine, atomic write) from an ONNX export.

    ``precision``: "fp32", "fp16" or "bf16" (allowed kernel precisions; I/O stays fp32/bool).
    ``timing_cache``: file to read tactic timings from and write them back to (default:
    ``<out_path>.timing-cache``).
    """
    from tdfast.export.onnx_export import read_metadata
    from tdfast.export.trt_check import check_tensorrt_compat
    from tdfast.model.config import TDDETRConfig

    check_build_options(precision, max_batch)
    problems = check_tensorrt_compat(onnx_path)
    if problems:
        raise InputError(f"{onnx_path}: not TensorRT-compatible:\n  " + "\n  ".join(problems))
    meta = read_metadata(onnx_path)
    config = TDDETRConfig.from_json(meta["config"], source=f"{onnx_path} metadata")
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT could not parse {onnx_path}:\n  " + "\n  ".join(errors))
    cfg = builder.create_builder_config()
    cfg.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    if precision == "fp16":
        cfg.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        cfg.set_flag(trt.BuilderFlag.BF16)
    profile = builder.create_optimization_profile()
    shapes = profile_shapes(config, max_batch, opt_batch)
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    cfg.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else Path(str(out_path) + ".timing-cache")
    cache = cfg.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    cfg.set_timing_cache(cache, ignore_mismatch=False)
    if log:
        log(f"tensorrt: building {precision} engine, max batch {max_batch} (takes minutes)")
    serialized = builder.build_serialized_network(network, cfg)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    out_path = Path(out_path)
    atomic_write_bytes(out_path, bytes(serialized))
    atomic_write_bytes(cache_path, bytes(cfg.get_timing_cache().serialize()))
    meta.pop("verification", None)  # the ONNX graph's parity; the engine is verified on its own
    side = {**meta, "precision": precision, "max_batch": max_batch, "tensorrt_version": trt.__version__,
            "profile": {k: list(map(list, v)) for k, v in shapes.items()},
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "unknown"}
    atomic_write_bytes(sidecar_path(out_path), json.dumps(side, indent=1).encode())
    return out_path


class TrtRunner:
    """Callable TensorRT engine with the model's signature: ``(video, video_mask, query,
    query_mask) -> dict`` of numpy arrays (pred_spans [B, Q, 2], pred_logits [B, Q, 2],
    saliency_scores [B, L]). Inputs: numpy arrays or torch tensors (CPU or CUDA)."""

    def __init__(self, engine_path: str | Path, check: bool = True) -> None:
        from tdfast.model.config import TDDETRConfig

        trt = _trt()
        if not torch.cuda.is_available():
            raise BackendUnavailableError("TensorRT needs a CUDA GPU; torch.cuda.is_available() is False")
        self.path = Path(engine_path)
        side = sidecar_path(self.path)
        if not self.path.is_file() or not side.is_file():
            raise InputError(f"engine_path: expected {self.path} and {side} (build_tensorrt_engine "
                             f"writes both)")
        meta = json.loads(side.read_text())
        self.config = TDDETRConfig.from_json(meta["config"], source=str(side))
        self.check = check
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not deserialize {self.path} (built with another "
                               f"TensorRT version or GPU? sidecar says {meta.get('tensorrt_version')}, "
                               f"{meta.get('device')})")
        io_names = {self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)}
        if io_names != {*INPUT_NAMES, *OUTPUT_NAMES}:
            raise InputError(f"engine_path: {self.path} has I/O tensors {sorted(io_names)}, expected "
                             f"{sorted({*INPUT_NAMES, *OUTPUT_NAMES})} (not a tdfast export?)")
        self.profile = meta.get("profile")
        self.context = self.engine.create_execution_context()
        types = _torch_types(trt)
        self._dtypes = {n: types[self.engine.get_tensor_dtype(n)]
                        for n in (*INPUT_NAMES, *OUTPUT_NAMES)}
        self.stream = torch.cuda.Stream()

    def __call__(self, video: Any, video_mask: Any, query: Any, query_mask: Any) -> dict[str, np.ndarray]:
        raw = [x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
               for x in (video, video_mask, query, query_mask)]
        if self.check:
            from tdfast.retrieval.inputs import check_inputs

            check_inputs(*raw, self.config)
        for name, x in zip(INPUT_NAMES, raw):  # outside the profile TensorRT would fail opaquely
            check_in_profile(name, tuple(x.shape), self.profile)
        with torch.cuda.stream(self.stream):
            tensors = {}
            for name, x in zip(INPUT_NAMES, raw):
                x = (x != 0) if self._dtypes[name] == torch.bool else x
                tensors[name] = x.to("cuda", self._dtypes[name], non_blocking=True).contiguous()
                if not self.context.set_input_shape(name, tuple(tensors[name].shape)):
                    raise InputError(f"{name}: TensorRT rejected shape {tuple(tensors[name].shape)} "
                                     f"for {self.path}")
            for name in OUTPUT_NAMES:
                shape = tuple(self.context.get_tensor_shape(name))
                tensors[name] = torch.empty(shape, dtype=self._dtypes[name], device="cuda")
            for name, t in tensors.items():
                self.context.set_tensor_address(name, t.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError(f"TensorRT execution failed for {self.path}")
        self.stream.synchronize()
        return {n: tensors[n].float().cpu().numpy() for n in OUTPUT_NAMES}


def _torch_types(trt) -> dict:
    """TensorRT DataType -> torch dtype for the engine's I/O tensors."""
    return {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
            trt.DataType.BF16: torch.bfloat16, trt.DataType.BOOL: torch.bool,
            trt.DataType.INT32: torch.int32, trt.DataType.INT64: torch.int64}
