"""The table of export formats (one plain function each) and the cached export of a checkpoint.

=============  ======================  =====================================================
format         artifact                what
=============  ======================  =====================================================
onnx           model.onnx              fp32 ONNX, dynamic B/L/M, verified (<= 1e-4)
onnx-int8      model.int8.onnx         dynamic int8 quantization for CPU (+ model.onnx)
onnx-fp16      model.fp16.onnx         fp16 weights/compute for GPU, fp32 I/O (+ model.onnx)
tensorrt       model.engine            TensorRT 10 engine (+ model.onnx, model.engine.json)
triton-server  tdfast_tddetr/          Triton repository: onnxruntime model + <name>_moments (Python)
=============  ======================  =====================================================
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from tdfast.atomic import staged_name
from tdfast.atomic import atomic_write_bytes
from tdfast.errors import InputError
from tdfast.userdirs import user_cache_dir
from tdfast.export.onnx_export import (GRAPH_RECIPE, ONNX_NAME, add_metadata, export_onnx, file_sha256,
                                       load_model, read_metadata)
from tdfast.export.options import ExportOptions
from tdfast.export.quantize import INT8_KEEP_FP32
from tdfast.export.verify import FP16_ATOL, format_table, verification_record, verify_onnx


@dataclass(frozen=True)
class Format:
    name: str
    artifact: str  # file (or directory) name inside the output directory
    build: Callable[..., Path]  # (model, ckpt, out_dir, src, ExportOptions) -> artifact path
    requires: str  # optional dependency, for the error message and --help
    summary: str
    source: str | None = None  # the format this one is made from; its artifact is passed as ``src``
    # (ExportOptions) -> raises InputError / BackendUnavailableError before any export work
    precheck: Callable[[ExportOptions], object] | None = None


def _onnx(model: nn.Module, ckpt: Path | None, out_dir: Path, src: Path | None, o: ExportOptions) -> Path:
    kw = {} if o.opset is None else {"opset": o.opset}
    return export_onnx(ckpt or model, out_dir, exporter=o.exporter, verify=o.verify, log=o.log, **kw)


def _onnx_int8(model: nn.Module, ckpt: Path | None, out_dir: Path, src: Path, o: ExportOptions) -> Path:
    from tdfast.export.quantize import quantize_int8

    out = quantize_int8(src, out_dir / FORMATS["onnx-int8"].artifact)
    if o.verify:
        # int8 is lossy by design: record the deviations, judge it by top-1 agreement (benchmark).
        rows = verify_onnx(out, model, atol=float("inf"), strict=False)
        add_metadata(out, {"verification": verification_record(rows)})
        if o.log:
            o.log("int8 vs eager fp32 (informational, no tolerance):\n" + format_table(rows))
    return out


def _onnx_fp16(model: nn.Module, ckpt: Path | None, out_dir: Path, src: Path, o: ExportOptions) -> Path:
    from tdfast.export.quantize import convert_fp16

    out = convert_fp16(src, out_dir / FORMATS["onnx-fp16"].artifact)
    if o.verify:
        rows = verify_onnx(out, model, atol=FP16_ATOL)
        add_metadata(out, {"verification": verification_record(rows)})
        if o.log:
            o.log(f"fp16 vs eager fp32 (tolerance {FP16_ATOL:g}):\n" + format_table(rows))
    return out


def _tensorrt(model: nn.Module, ckpt: Path | None, out_dir: Path, src: Path, o: ExportOptions) -> Path:
    from tdfast.export.tensorrt import TrtRunner, build_tensorrt_engine, sidecar_path
    from tdfast.export.verify import FP32_ATOL, Shape, default_shapes, verify_runner

    out = build_tensorrt_engine(src, out_dir / FORMATS["tensorrt"].artifact, precision=o.precision,
                                max_batch=o.max_batch, log=o.log)
    if o.verify:
        atol = FP32_ATOL if o.precision == "fp32" else FP16_ATOL
        # The engine's profile ends at max_batch: a verify batch beyond it can't run.
        shapes = [Shape(min(s.batch, o.max_batch), s.video_len, s.query_len, s.padded)
                  for s in default_shapes(model.config)]
        rows = verify_runner(TrtRunner(out), model, shapes, atol=atol, what=f"TensorRT engine {out}")
        side = sidecar_path(out)
        meta = {**json.loads(side.read_text()), "verification": verification_record(rows)}
        atomic_write_bytes(side, json.dumps(meta, indent=1).encode())
        if o.log:
            o.log(format_table(rows))
    return out


def _triton(model: nn.Module, ckpt: Path | None, out_dir: Path, src: Path | None, o: ExportOptions) -> Path:
    """The onnxruntime-backend model (full Triton image) and, beside it, the Python-backend
    moments model ``<model_name>_moments`` running the same verified graph."""
    from tdfast.export.triton_python import write_python_model
    from tdfast.export.triton_server import write_triton_repository

    model_dir = write_triton_repository(ckpt or model, out_dir, model_name=o.model_name,
                                        max_batch_size=o.max_batch, verify=o.verify, log=o.log, opset=o.opset,
                                        exporter=o.exporter)
    moments = write_python_model(ckpt or model, out_dir, f"{o.model_name}_moments", max_batch_size=o.max_batch,
                                 export_file=model_dir / "1" / ONNX_NAME)
    if o.log:
        o.log(f"triton: wrote {moments}/config.pbtxt (Python backend: moments in seconds)")
    return model_dir


def _tensorrt_precheck(o: ExportOptions) -> None:
    from tdfast.export.tensorrt import _trt, check_build_options

    check_build_options(o.precision, o.max_batch)
    _trt()


def _triton_precheck(o: ExportOptions) -> None:
    from tdfast.export.triton_server import check_model_name
    from tdfast.export.wrapper import check_max_batch

    check_max_batch(o.max_batch)
    check_model_name(o.model_name)


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("onnx", ONNX_NAME, _onnx, "onnx, onnxruntime", "fp32 ONNX, verified against eager"),
    Format("onnx-int8", "model.int8.onnx", _onnx_int8, "onnxruntime", "int8 dynamic quantization (CPU)",
           source="onnx"),
    Format("onnx-fp16", "model.fp16.onnx", _onnx_fp16, "onnxruntime", "fp16 ONNX for GPU", source="onnx"),
    Format("tensorrt", "model.engine", _tensorrt, "tensorrt + CUDA GPU", "TensorRT 10 engine",
           source="onnx", precheck=_tensorrt_precheck),  # fail before minutes of ONNX export
    Format("triton-server", "tdfast_tddetr", _triton, "onnx", "Triton Inference Server repository",
           precheck=_triton_precheck),
)}


def _format(fmt: str) -> Format:
    if fmt not in FORMATS:
        raise InputError(f"format: expected one of {sorted(FORMATS)}, got {fmt!r}")
    return FORMATS[fmt]


def export(model_or_ckpt: nn.Module | str | Path, fmt: str, out_dir: str | Path,
           options: ExportOptions | None = None, **changes: Any) -> Path:
    """Export ``model_or_ckpt`` (TDDETR or checkpoint dir) as ``fmt`` into ``out_dir``.

    A derived format (int8, fp16, TensorRT) writes its fp32 ONNX source there too.
    ``options`` (and keyword changes to them, e.g. ``opset=18``) are an ``ExportOptions``.
    Returns the artifact path.
    """
    f = _format(fmt)
    options = ExportOptions.of(options, **changes)
    if f.precheck:
        f.precheck(options)
    model, ckpt = load_model(model_or_ckpt)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    src = FORMATS[f.source].build(model, ckpt, out_dir, None, options) if f.source else None
    return f.build(model, ckpt, out_dir, src, options)


def _is_fresh(artifact: Path, weights_sha: str, options: ExportOptions) -> bool:
    """The cached artifact exists, was made from these exact weights and, for an engine,
    with the requested precision and max batch; an ONNX file by this graph builder
    (``GRAPH_RECIPE``) and, for int8, with this keep list."""
    if not artifact.is_file():
        return False
    if artifact.suffix == ".engine":
        side = Path(str(artifact) + ".json")
        meta = json.loads(side.read_text()) if side.is_file() else {}
        wanted = {"precision": options.precision, "max_batch": options.max_batch}
        if any(meta.get(k) != v for k, v in wanted.items()):
            return False
    else:
        try:
            meta = read_metadata(artifact)
        except Exception:  # unreadable or truncated by something other than us: rebuild
            return False
    if artifact.suffix != ".engine" and meta.get("graph_recipe") != str(GRAPH_RECIPE):
        return False  # made by an earlier graph builder (engines are built from a fresh ONNX file)
    if meta.get("precision") == "int8-dynamic" and meta.get("int8_keep_fp32") != ",".join(INT8_KEEP_FP32):
        return False
    return meta.get("weights_sha256") == weights_sha


def ensure_export(ckpt_dir: str | Path, fmt: str = "onnx", options: ExportOptions | None = None,
                  **changes: Any) -> Path:
    """The export of checkpoint ``ckpt_dir`` in ``fmt``, cached inside ``ckpt_dir`` (or, when
    that directory is read-only, in ``user_cache_dir()/<weights sha256[:16]>``).

    Made on first use (verified, written atomically, so a crash never leaves a half-written
    file) and re-made when ``model.safetensors`` changed since (the export's metadata holds
    the weights' sha256; an engine also when ``precision`` or ``max_batch`` differ; its
    sidecar is written after the engine, so a crash in between reads as stale).
    ``fmt``: onnx, onnx-int8, onnx-fp16 or tensorrt; the derived ones are made from the
    (cached) ``model.onnx``, which is made first if needed.
    """
    from tdfast.model.checkpoint import WEIGHTS_NAME, load_config

    f = _format(fmt)
    if fmt == "triton-server":
        raise InputError("format: 'triton-server' is a repository, not a cacheable file; "
                         "use tdfast.export.write_triton_repository")
    # Quiet unless the caller asks for progress.
    options = ExportOptions.of(options, **{"log": None, **changes})
    if f.precheck:
        f.precheck(options)
    ckpt = Path(ckpt_dir)
    load_config(ckpt)  # InputError naming the dir if it is not a checkpoint
    weights = ckpt / WEIGHTS_NAME
    if not weights.is_file():
        raise InputError(f"checkpoint {str(ckpt)!r}: {WEIGHTS_NAME} is missing")
    sha = file_sha256(weights)
    if _is_fresh(ckpt / f.artifact, sha, options):
        return ckpt / f.artifact
    out_dir = ckpt if is_writable_dir(ckpt) else user_cache_dir() / sha[:16]
    artifact = out_dir / f.artifact
    if out_dir != ckpt and _is_fresh(artifact, sha, options):
        return artifact
    # A derived format reuses the cached fp32 export when it is fresh (no second trace).
    src = ensure_export(ckpt, f.source, options) if f.source else None
    model, _ = load_model(ckpt)
    out_dir.mkdir(parents=True, exist_ok=True)
    return f.build(model, ckpt, out_dir, src, options)


def is_writable_dir(directory: Path) -> bool:
    """Whether a file can be created in ``directory`` (tried, not guessed from mode bits:
    read-only mounts, ACLs)."""
    probe = staged_name(directory / ".probe")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return False
    os.close(fd)
    probe.unlink(missing_ok=True)
    return True


