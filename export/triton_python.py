"""The Python-backend model of a Triton repository: moments in seconds from padded features.

Layout written (Triton's ``python`` backend; self-contained, so the repository can be
copied to another machine that has tdfast installed):

    OUT_DIR/<model_name>/config.pbtxt
    OUT_DIR/<model_name>/<version>/model.py             tdfast.export.triton_entry, verbatim
    OUT_DIR/<model_name>/<version>/config.json          the checkpoint
    OUT_DIR/<model_name>/<version>/model.safetensors
    OUT_DIR/<model_name>/<version>/model.onnx           the verified export the backend runs
                                                        (model.int8.onnx for onnxruntime-int8)

The request contract (tensor names, types, dims) is ``tdfast.export.triton_contract``.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from tdfast.atomic import atomic_write_bytes
from tdfast.errors import InputError
from tdfast.export.triton_config import format_model_config, model_config_class
from tdfast.export.triton_contract import (INPUTS, NUMPY_DTYPES, OPTIONAL_INPUTS, OUTPUTS, TRITON_DTYPES,
                                           tensor_dims)
from tdfast.export.triton_server import check_model_name
from tdfast.export.wrapper import check_max_batch

MOMENTS_MODEL_NAME = "tdfast_moments"
# Retriever backend -> the export file it runs (None: PyTorch weights only) and its format.
SERVED_BACKENDS = {"onnxruntime": "model.onnx", "onnxruntime-int8": "model.int8.onnx", "eager": None}
EXPORT_FORMATS = {"onnxruntime": "onnx", "onnxruntime-int8": "onnx-int8"}  # tdfast.export.FORMATS names


def make_python_model_config(config, model_name: str, backend: str, max_batch_size: int,
                             dynamic_batching: bool, max_queue_delay_us: int, instance_count: int,
                             threads: int, top_k: int):
    """The ``ModelConfig`` message of the moments model for a network ``config`` (TDDETRConfig)."""
    cfg = model_config_class()(name=model_name, backend="python", max_batch_size=max_batch_size)
    for name in INPUTS:
        cfg.input.add(name=name, data_type=TRITON_DTYPES[NUMPY_DTYPES[name]],
                      dims=tensor_dims(name, config.video_dim, config.text_dim), optional=name in OPTIONAL_INPUTS)
    for name in OUTPUTS:
        cfg.output.add(name=name, data_type=TRITON_DTYPES[NUMPY_DTYPES[name]],
                       dims=tensor_dims(name, config.video_dim, config.text_dim))
    if dynamic_batching:
        cfg.dynamic_batching.SetInParent()  # present even with every field at its default
        cfg.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    cfg.instance_group.add(count=instance_count, kind=2)  # KIND_CPU: the stub process runs on CPU
    # The maxima let clients pad to them (then every request can be batched) without the checkpoint.
    for key, value in (("backend", backend), ("threads", threads), ("top_k", top_k),
                       ("max_video_len", config.max_video_len), ("max_query_len", config.max_query_len),
                       ("clip_len", config.clip_len)):
        cfg.parameters[key].string_value = str(value)
    return cfg


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name}: expected a positive integer, got {value!r}")
    return value


def write_python_model(ckpt: str | Path | nn.Module, out_dir: str | Path, model_name: str = MOMENTS_MODEL_NAME,
                       version: int = 1, backend: str = "onnxruntime", max_batch_size: int = 32,
                       dynamic_batching: bool = True, max_queue_delay_us: int = 0,
                       instance_count: int = 1, threads: int = 1, top_k: int = 5,
                       export_file: str | Path | None = None) -> Path:
    """Write the moments model of ``ckpt`` (a checkpoint dir or a TDDETR) under ``out_dir``;
    returns ``out_dir/model_name``.

    ``backend``: the Retriever backend it runs (``SERVED_BACKENDS``). ``export_file``: the
    verified export of these weights that backend runs (e.g. ``ensure_export(ckpt, "onnx")``),
    copied into the repository; None: the server makes it there on first load (verified,
    slower to start). ``max_batch_size``: most pairs per batch Triton forms;
    ``dynamic_batching``: let Triton merge concurrent requests, waiting at most
    ``max_queue_delay_us`` microseconds for more (0: a batch is what queued while the
    instance was busy); ``instance_count``: model instances (stub processes) of ``threads``
    CPU threads each; ``top_k``: moments per pair when a request sends no ``top_k``.
    """
    from tdfast.model.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_config

    check_model_name(model_name)
    check_max_batch(max_batch_size, "max_batch_size")
    for name, value in (("version", version), ("instance_count", instance_count), ("threads", threads),
                        ("top_k", top_k)):
        _positive(name, value)
    if isinstance(max_queue_delay_us, bool) or not isinstance(max_queue_delay_us, int) or max_queue_delay_us < 0:
        raise InputError(f"max_queue_delay_us: expected an integer >= 0, got {max_queue_delay_us!r}")
    if backend not in SERVED_BACKENDS:
        raise InputError(f"backend: expected one of {sorted(SERVED_BACKENDS)}, got {backend!r}")
    model_dir = Path(out_dir) / model_name
    version_dir = model_dir / str(version)
    artifact = SERVED_BACKENDS[backend]
    if export_file is not None and (artifact is None or Path(export_file).name != artifact):
        raise InputError(f"export_file: backend {backend!r} runs {artifact or 'no export'}, got {str(export_file)!r}")
    if isinstance(ckpt, nn.Module):
        config = ckpt.config
        ckpt.save_pretrained(version_dir)
        files = []
    else:
        config = load_config(ckpt)  # InputError naming the dir if it is not a checkpoint
        version_dir.mkdir(parents=True, exist_ok=True)
        files = [Path(ckpt) / CONFIG_NAME, Path(ckpt) / WEIGHTS_NAME]
    if export_file is not None:
        files.append(Path(export_file))
    for src in files:  # byte copies: the export's recorded weights hash stays valid here
        atomic_write_bytes(version_dir / src.name, src.read_bytes())
    entry = Path(__file__).with_name("triton_entry.py")
    atomic_write_bytes(version_dir / "model.py", entry.read_bytes())
    cfg = make_python_model_config(config, model_name, backend, max_batch_size, dynamic_batching,
                                   max_queue_delay_us, instance_count, threads, top_k)
    atomic_write_bytes(model_dir / "config.pbtxt", format_model_config(cfg).encode())
    return model_dir
