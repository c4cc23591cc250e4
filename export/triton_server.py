"""A Triton Inference Server model repository for the ONNX export.

Layout written (Triton's ``onnxruntime`` backend):

    OUT_DIR/<model_name>/config.pbtxt
    OUT_DIR/<model_name>/<version>/model.onnx

``config.pbtxt`` declares every input/output with its data type and its dims
without the batch axis (-1 for the dynamic video/query lengths), enables
dynamic batching, and sets ``max_batch_size``. Triton's dynamic batcher only
merges requests whose non-batch shapes agree, so clients that pad video to
``max_video_len`` and queries to ``max_query_len`` (the masks make padding
free of effect) get every request batched.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from tdfast.atomic import atomic_write_bytes
from tdfast.errors import InputError
from tdfast.export.onnx_export import ONNX_NAME, export_onnx
from tdfast.export.triton_config import format_model_config, model_config_class
from tdfast.defaults import MAX_BATCH
from tdfast.export.options import DEFAULT_MODEL_NAME
from tdfast.export.wrapper import INPUT_NAMES, OUTPUT_NAMES, check_max_batch

_ONNX_TO_TRITON = {1: "TYPE_FP32", 9: "TYPE_BOOL", 10: "TYPE_FP16", 6: "TYPE_INT32", 7: "TYPE_INT64",
                   16: "TYPE_BF16"}  # onnx.TensorProto elem_type -> Triton DataType
KINDS = {"auto": "KIND_AUTO", "gpu": "KIND_GPU", "cpu": "KIND_CPU"}


def triton_tensors(onnx_path: str | Path) -> dict[str, tuple[str, list[int]]]:
    """name -> (Triton data type, dims without the batch axis; -1 = dynamic) from the graph."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    out = {}
    for vi in [*proto.graph.input, *proto.graph.output]:
        t = vi.type.tensor_type
        if t.elem_type not in _ONNX_TO_TRITON:
            raise InputError(f"{onnx_path}: tensor {vi.name} has ONNX type {t.elem_type}, which the "
                             f"Triton repository writer does not map")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        out[vi.name] = (_ONNX_TO_TRITON[t.elem_type], dims[1:])
    return out


MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def check_model_name(model_name: str) -> None:
    """A Triton model name is one directory under the repository: no separators, not ``..``,
    so ``--model-name ../../x`` can't write outside ``--out``."""
    if not isinstance(model_name, str) or not MODEL_NAME.fullmatch(model_name) or set(model_name) <= {"."}:
        raise InputError(f"model_name: expected a directory name of letters, digits, '_', '.' and '-' "
                         f"(not starting with '.' or '-'), got {model_name!r}")


def _check_options(max_batch_size: int, preferred_batch_sizes: Sequence[int], kind: str) -> None:
    """The batching options, ``max_batch_size`` already checked (``check_max_batch``)."""
    bad = [b for b in preferred_batch_sizes if not 1 <= b <= max_batch_size]
    if bad:
        raise InputError(f"preferred_batch_sizes: expected values in 1..{max_batch_size}, got {bad}")
    if kind not in KINDS:
        raise InputError(f"kind: expected one of {sorted(KINDS)}, got {kind!r}")


def make_model_config(onnx_path: str | Path, model_name: str, max_batch_size: int,
                      preferred_batch_sizes: Sequence[int], max_queue_delay_us: int,
                      instance_count: int, kind: str):
    """The ``ModelConfig`` message for ``onnx_path`` (see ``triton_config``)."""
    check_max_batch(max_batch_size, "max_batch_size")
    _check_options(max_batch_size, preferred_batch_sizes, kind)
    tensors = triton_tensors(onnx_path)
    cfg = model_config_class()(name=model_name, backend="onnxruntime", max_batch_size=max_batch_size,
                               default_model_filename=ONNX_NAME)
    for name in INPUT_NAMES:
        dtype, dims = tensors[name]
        cfg.input.add(name=name, data_type=dtype, dims=dims)
    for name in OUTPUT_NAMES:
        dtype, dims = tensors[name]
        cfg.output.add(name=name, data_type=dtype, dims=dims)
    cfg.dynamic_batching.preferred_batch_size.extend(sorted(set(preferred_batch_sizes)))
    cfg.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    cfg.instance_group.add(count=instance_count, kind=KINDS[kind])
    return cfg


def write_triton_repository(ckpt_or_onnx: nn.Module | str | Path, out_dir: str | Path,
                            model_name: str = DEFAULT_MODEL_NAME, version: int = 1,
                            max_batch_size: int = MAX_BATCH, preferred_batch_sizes: Sequence[int] | None = None,
                            max_queue_delay_us: int = 2000, instance_count: int = 1,
                            kind: str = "auto", verify: bool = True, log=print,
                            opset: int | None = None, exporter: str = "dynamo") -> Path:
    """Write a model repository under ``out_dir``; returns ``out_dir/model_name``.

    ``ckpt_or_onnx``: an existing ``.onnx`` export (copied), or a TDDETR / checkpoint dir
    (exported with ``exporter`` at ``opset``, default 18, and verified with ``verify``).
    ``preferred_batch_sizes`` defaults to max_batch_size / 4, / 2 and itself.
    """
    check_max_batch(max_batch_size, "max_batch_size")
    check_model_name(model_name)
    if preferred_batch_sizes is None:
        preferred_batch_sizes = sorted({max(1, max_batch_size // 4), max(1, max_batch_size // 2),
                                        max(1, max_batch_size)})
    _check_options(max_batch_size, preferred_batch_sizes, kind)  # before the export: no half repository
    model_dir = Path(out_dir) / model_name
    version_dir = model_dir / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    onnx_out = version_dir / ONNX_NAME
    if isinstance(ckpt_or_onnx, (str, Path)) and Path(ckpt_or_onnx).suffix == ".onnx":
        src = Path(ckpt_or_onnx)
        if not src.is_file():
            raise InputError(f"ckpt_or_onnx: {src} does not exist")
        if src.resolve() != onnx_out.resolve():
            atomic_write_bytes(onnx_out, src.read_bytes())
    else:
        kw = {} if opset is None else {"opset": opset}
        export_onnx(ckpt_or_onnx, version_dir, exporter=exporter, verify=verify, log=log, **kw)
    cfg = make_model_config(onnx_out, model_name, max_batch_size, preferred_batch_sizes,
                            max_queue_delay_us, instance_count, kind)
    atomic_write_bytes(model_dir / "config.pbtxt", format_model_config(cfg).encode())
    if log:
        log(f"triton: wrote {model_dir}/config.pbtxt and {onnx_out}")
    return model_dir
