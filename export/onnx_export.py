"""TDDETR -> ONNX with dynamic batch, video length and query length, metadata and self-check.

Two exporters are supported and compared in ``docs/export.md``:
``dynamo`` (``torch.export`` + ``torch.export.Dim``, the default) and
``torchscript`` (the tracer with ``dynamic_axes``). Whichever runs, the file is
checked for symbolic B/L/M axes (a silent fallback to a fixed-shape trace is an
error), written atomically, and verified against eager on shapes it was not
traced with (``verify.py``).
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from tdfast.atomic import atomic_write_bytes, clean_stale, named_os_errors, staged_name
from tdfast.errors import InputError
from tdfast.export.options import DEFAULT_OPSET, EXPORTERS
from tdfast.export.wrapper import INPUT_NAMES, OUTPUT_NAMES, TENSOR_DOCS, ExportWrapper, random_inputs
from tdfast.model.checkpoint import WEIGHTS_NAME
from tdfast.model.tddetr import TDDETR

MAX_OPSET = 22  # 23 exports (Attention op) but ONNX Runtime 1.32 rejects its masks: verification fails
ONNX_NAME = "model.onnx"
# Symbolic axis names of every graph input/output: batch, video length, query length.
AXES = {"video": ("B", "L", None), "video_mask": ("B", "L"), "query": ("B", "M", None),
        "query_mask": ("B", "M"), "pred_spans": ("B", None, None), "pred_logits": ("B", None, None),
        "saliency_scores": ("B", "L")}

Log = Callable[[str], None] | None
# Bumped whenever the exported graph changes for the same weights (2: PReLU exported as
# LeakyRelu), so ensure_export rebuilds artifacts a previous version cached.
GRAPH_RECIPE = 2


def load_model(model_or_ckpt: nn.Module | str | Path) -> tuple[nn.Module, Path | None]:
    """A TDDETR instance or a checkpoint dir -> (model on CPU in fp32, checkpoint dir or None).

    A model on a GPU or in half precision is copied to CPU fp32 (the caller's stays as it is):
    the graph is always exported and verified in fp32.
    """
    if isinstance(model_or_ckpt, nn.Module):
        if not hasattr(model_or_ckpt, "config"):
            raise InputError(f"model_or_ckpt: expected a TDDETR (with .config) or a checkpoint "
                             f"directory, got {type(model_or_ckpt).__name__}")
        if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in model_or_ckpt.parameters()):
            return copy.deepcopy(model_or_ckpt).float().cpu(), None
        return model_or_ckpt, None
    ckpt = Path(model_or_ckpt)
    return TDDETR.from_pretrained(ckpt, "cpu"), ckpt


def _weights_sha(ckpt: Path) -> str | None:
    weights = ckpt / WEIGHTS_NAME
    return file_sha256(weights) if weights.is_file() else None


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_metadata(model: nn.Module, exporter: str, opset: int, weights_sha: str | None) -> dict[str, str]:
    """The key/value strings stored in the ONNX file (``metadata_props``); ``weights_sha``:
    the sha256 of the checkpoint's weights the graph was made from (None: not from a file)."""
    from tdfast import __version__

    meta = {
        "tdfast_version": __version__,
        "config": model.config.to_json(),
        "exporter": exporter,
        "opset": str(opset),
        "input_names": json.dumps(list(INPUT_NAMES)),
        "output_names": json.dumps(list(OUTPUT_NAMES)),
        "tensors": json.dumps(TENSOR_DOCS),
        "graph_recipe": str(GRAPH_RECIPE),
    }
    if weights_sha is not None:
        # Lets ensure_export tell a stale cached export from a fresh one.
        meta["weights_sha256"] = weights_sha
    return meta


def read_metadata(path: str | Path) -> dict[str, str]:
    """metadata_props of an ONNX file as a dict (weights are not loaded)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def add_metadata(path: str | Path, entries: dict[str, str]) -> None:
    """Set ``entries`` in an ONNX file's metadata_props (replacing same keys); atomic rewrite."""
    import onnx

    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props} | entries
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    atomic_write_bytes(path, proto.SerializeToString())


def _trace_inputs(config) -> tuple[torch.Tensor, ...]:
    # Trace at sizes >= 2 (torch.export specializes 0/1) and away from the verify shapes.
    return random_inputs(config, 2, min(17, config.max_video_len), min(7, config.max_query_len),
                         padded=True, seed=1234)


def _export_dynamo(wrapper: nn.Module, args: tuple, opset: int):
    from torch.export import Dim

    c = wrapper.model.config
    b = Dim("B", min=1)
    n_video = Dim("L", min=1, max=c.max_video_len)
    n_query = Dim("M", min=1, max=c.max_query_len)
    shapes = {"video": {0: b, 1: n_video}, "video_mask": {0: b, 1: n_video},
              "query": {0: b, 1: n_query}, "query_mask": {0: b, 1: n_query}}
    program = torch.onnx.export(wrapper, args, dynamo=True, dynamic_shapes=shapes,
                                input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                                opset_version=opset, verbose=False)
    return program.model_proto


def _export_torchscript(wrapper: nn.Module, args: tuple, opset: int):
    import onnx

    axes = {name: {i: a for i, a in enumerate(ax) if a} for name, ax in AXES.items()}
    buf = io.BytesIO()
    torch.onnx.export(wrapper, args, buf, dynamo=False, opset_version=opset,
                      input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                      dynamic_axes=axes, do_constant_folding=True)
    return onnx.load_from_string(buf.getvalue())


def check_dynamic_axes(proto) -> list[str]:
    """Problems with the graph's I/O axes: B/L/M must be symbolic, feature dims fixed.

    Catches an exporter that silently fell back to a fixed-shape trace.
    """
    problems = []
    for vi in [*proto.graph.input, *proto.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        want = AXES.get(vi.name)
        if want is None:
            problems.append(f"unexpected graph tensor {vi.name!r}")
            continue
        if len(dims) != len(want):
            problems.append(f"{vi.name}: expected rank {len(want)}, got {len(dims)}")
            continue
        for i, (d, axis) in enumerate(zip(dims, want)):
            if axis and d.HasField("dim_value"):
                problems.append(f"{vi.name}: axis {i} ({axis}) should be dynamic, is fixed at {d.dim_value}")
    return problems


def export_onnx(model_or_ckpt: nn.Module | str | Path, out_dir: str | Path,
                opset: int = DEFAULT_OPSET, exporter: str = "dynamo", verify: bool = True,
                filename: str = ONNX_NAME, log: Log = print) -> Path:
    """Export to ``out_dir/filename`` (atomic write) and, with ``verify``, check parity.

    ``model_or_ckpt``: a TDDETR or a checkpoint directory. The graph takes
    video [B, L, video_dim] float32, video_mask [B, L] bool, query [B, M, text_dim]
    float32, query_mask [B, M] bool and returns pred_spans [B, Q, 2], pred_logits
    [B, Q, 2], saliency_scores [B, L]. Raises ``ExportVerificationError`` if parity fails;
    ``out`` is then left untouched and the failing graph stays beside it as
    ``<stem>.unverified.onnx`` for inspection.
    """
    import onnx

    from tdfast.export.verify import ExportVerificationError
    from tdfast.retrieval.inputs import check_inputs

    if not 17 <= opset <= MAX_OPSET:
        raise InputError(f"opset: expected {17} (LayerNormalization) to {MAX_OPSET} (the newest the "
                         f"exporter writes), got {opset}")
    if exporter not in EXPORTERS:
        raise InputError(f"exporter: expected one of {EXPORTERS}, got {exporter!r}")
    # The hash of the weights as they were *before* loading: a file replaced while we export
    # (a trainer saving its best model into the directory) must not lend its hash to a graph
    # of the old weights; it is checked again once the graph is made.
    sha = None if isinstance(model_or_ckpt, nn.Module) else _weights_sha(Path(model_or_ckpt))
    model, ckpt = load_model(model_or_ckpt)
    out = Path(out_dir) / filename
    was_training = model.training
    model.eval()
    clock = _Clock(log)
    try:
        wrapper = ExportWrapper(model).eval()
        args = _trace_inputs(model.config)
        check_inputs(*args, model.config)  # the graph can't raise: nothing invalid goes in
        clock.say(f"export: {exporter} exporter, opset {opset}, trace shape B=2 L={args[0].shape[1]} "
                  f"M={args[2].shape[1]} -> {out}")
        with warnings.catch_warnings(), torch.no_grad(), _quiet_torch_onnx_logs():
            warnings.simplefilter("ignore")
            fn = _export_dynamo if exporter == "dynamo" else _export_torchscript
            proto = fn(wrapper, args, opset)
        problems = check_dynamic_axes(proto)
        if problems:
            raise ExportVerificationError(f"{exporter} export lost dynamic axes: " + "; ".join(problems))
        del proto.metadata_props[:]
        if sha is not None and _weights_sha(ckpt) != sha:
            raise InputError(f"{ckpt}: {WEIGHTS_NAME} changed while it was being exported (is a training "
                             f"run writing to it?); export again once it is done")
        for k, v in build_metadata(model, exporter, opset, sha).items():
            proto.metadata_props.add(key=k, value=v)
        proto.doc_string = "TD-DETR moment retrieval + highlight detection (tdfast)"
        onnx.checker.check_model(proto)
        clock.say(f"export: graph traced ({len(proto.graph.node)} nodes, dynamic B/L/M, onnx.checker ok)")
        _write_verified(proto, out, model if verify else None, clock)
        clock.say(f"export: wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, opset {opset})")
    finally:
        model.train(was_training)
    return out


def _write_verified(proto, out: Path, model: nn.Module | None, clock: "_Clock") -> None:
    """Write ``proto`` to ``out`` after verifying a staged copy against ``model`` (None: no check).

    A cached export is never half-written nor unverified: a file that fails verification is
    kept as ``*.unverified.onnx``. The staged name is this process's own (pid + random,
    tdfast.atomic), so concurrent exports of one checkpoint never touch each other's files,
    and a killed one's leftovers are removed by the next export (clean_stale).
    """
    from tdfast.export.verify import ExportVerificationError, format_table, verification_record, verify_onnx

    clean_stale(out)
    staged = staged_name(out)
    with named_os_errors(out):  # a full disk names model.onnx, not the staged name
        atomic_write_bytes(staged, proto.SerializeToString())
    try:
        if model is not None:
            clock.say("export: verifying in ONNX Runtime against eager PyTorch on unseen shapes")
            rows = verify_onnx(staged, model)
            clock.say(format_table(rows))
            # The artifact carries how it was checked (read back by the CLI summary).
            proto.metadata_props.add(key="verification", value=verification_record(rows))
            atomic_write_bytes(out, proto.SerializeToString())
            staged.unlink()
        else:
            os.replace(staged, out)
    except ExportVerificationError:
        os.replace(staged, out.with_name(out.stem + ".unverified.onnx"))
        raise
    except BaseException:
        staged.unlink(missing_ok=True)
        raise


class _Clock:
    """Progress lines prefixed with seconds since the export started."""

    def __init__(self, log: Log) -> None:
        self.log, self.start = log, time.perf_counter()

    def say(self, msg: str) -> None:
        if self.log is not None:
            self.log(f"[{time.perf_counter() - self.start:5.1f}s] {msg}" if "\n" not in msg else msg)


@contextlib.contextmanager
def _quiet_torch_onnx_logs():
    """The dynamo exporter logs optional-op registration warnings (torchvision) that say
    nothing about our graph; keep them off the user's terminal during export."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
