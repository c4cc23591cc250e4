"""Reduced-precision ONNX variants of an fp32 export.

- ``quantize_int8``: int8 MatMuls with 7-bit per-channel weights and 8-bit activations
  quantized per row (token) at run time, so the integer sums are exact on every x86 CPU
  (``tdfast.export.int8_rows``); the CPU variant. Not held to the fp32 tolerance: it is
  judged by top-1 moment agreement with fp32, measured by ``tdfast bench --int8``
  (``tdfast.benchmarks.int8``).
- ``convert_fp16``: fp16 weights and activations with float32 graph I/O, for
  GPUs (CUDA execution provider); held to the fp16 tolerance (1e-2).

Both keep the source's metadata and add ``precision``.
"""
from __future__ import annotations

from pathlib import Path

from tdfast.atomic import atomic_write_bytes
from tdfast.errors import BackendUnavailableError, InputError


def _copy_metadata(src, dst, precision: str) -> None:
    meta = {p.key: p.value for p in src.metadata_props}
    meta.pop("verification", None)  # the source's parity says nothing about this variant's
    meta["precision"] = precision
    del dst.metadata_props[:]
    for k, v in meta.items():
        dst.metadata_props.add(key=k, value=v)


# Modules whose linear layers stay fp32 in the int8 variant (module paths, ``*`` matches any
# part). Measured on a qvhighlights-size model (docs/benchmarks.md, "int8";
# benchmarks/bench_int8_choice.py): int8 in the decoder's query path (its 10 moment queries)
# and in the output heads moves the moment scores and spans most per FLOP saved; the input
# projections, T2V / TD layers, encoder and the decoder's projections of the video memory
# (cross-attention keys and values, on every clip) carry the FLOPs and tolerate int8.
INT8_DECODER_QUERY_PATH = ("decoder.layers.*.sa_*", "decoder.layers.*.ca_q_*", "decoder.layers.*.ca_out",
                           "decoder.layers.*.ffn", "decoder.bbox_embed", "decoder.query_scale",
                           "decoder.ref_anchor_head", "decoder.ref_point_head")
INT8_HEADS = ("span_head", "class_head", "saliency_proj_clip", "saliency_proj_token")
# The decoder's projections of the clips' positions (cross-attention position keys): on the
# bench's trained checkpoint they held most of int8's MR-full-mAP loss (0.25 on average over
# last-bit input perturbations, at worst 0.42; 0.05 and 0.12 with them fp32), 4 of the 88
# MatMuls int8 had, for 2% of its time (benchmarks/bench_int8_keep.py; docs/benchmarks.md,
# "int8: which layers stay fp32").
INT8_POSITION_KEYS = ("decoder.layers.*.ca_k_pos",)
INT8_KEEP_FP32 = INT8_DECODER_QUERY_PATH + INT8_HEADS + INT8_POSITION_KEYS
_SCOPES = "pkg.torch.onnx.name_scopes"  # module path of each node, written by torch.onnx (dynamo)


def _module_path(node) -> list[str] | None:
    """The module scopes a node was traced in ("model", "model.decoder", ...), from the dynamo
    exporter's metadata or the TorchScript exporter's node name ("/model/decoder/layers.0/...")."""
    import ast

    meta = {p.key: p.value for p in node.metadata_props}
    if _SCOPES in meta:
        return ast.literal_eval(meta[_SCOPES])  # ['', 'model', 'model.decoder', ...]
    if node.name.startswith("/"):
        parts = node.name.strip("/").split("/")[:-1]
        return [".".join(parts[:i + 1]) for i in range(len(parts))]
    return None


def nodes_of_modules(proto, modules: tuple[str, ...]) -> list[str]:
    """Names of the nodes that were traced inside any of ``modules`` (attribute paths under
    the model, ``*`` for any part: "decoder", "td_layers.0", "decoder.layers.*.sa_*");
    InputError when the graph records no module paths but some were asked for."""
    import fnmatch

    found, scoped = [], False
    for n in proto.graph.node:
        path = _module_path(n)
        if path is None:
            continue
        scoped = True
        # A ModuleList is no scope of its own: "model.td_layers.0" has no "model.td_layers" above it.
        if any(fnmatch.fnmatchcase(p, f"model.{m}") or fnmatch.fnmatchcase(p, f"model.{m}.*")
               for p in path for m in modules):
            found.append(n.name)
    if modules and not scoped:
        raise InputError(f"keep_fp32: the graph records no module paths (node metadata {_SCOPES} or "
                         f"'/model/...' node names); export it with tdfast export or pass keep_fp32=()")
    return found


def quantize_int8(onnx_path: str | Path, out_path: str | Path,
                  keep_fp32: tuple[str, ...] = INT8_KEEP_FP32) -> Path:
    """fp32 ONNX -> int8 ONNX at ``out_path`` (atomic write), scheme ``INT8_SCHEME``.

    MatMuls with a constant weight become integer GEMMs (``MatMulIntegerToFloat``) with
    7-bit per-output-channel weights and 8-bit activations quantized per row at run time
    (``tdfast.export.int8_rows``: a pair's answer does not depend on its batch mates, and
    the integer sums are the same on AVX2, AVX-512 and VNNI). Attention score/value MatMuls (no constant weight) and every
    layer of the ``keep_fp32`` modules stay fp32.
    """
    import onnx

    from tdfast.export.int8_rows import INT8_SCHEME, rowwise_matmuls

    out_path = Path(out_path)
    proto = onnx.load(str(onnx_path))
    rowwise_matmuls(proto, set(nodes_of_modules(proto, tuple(keep_fp32))))
    _copy_metadata(proto, proto, "int8")
    proto.metadata_props.add(key="int8_scheme", value=INT8_SCHEME)
    proto.metadata_props.add(key="int8_keep_fp32", value=",".join(keep_fp32))
    atomic_write_bytes(out_path, proto.SerializeToString())
    return out_path


def convert_fp16(onnx_path: str | Path, out_path: str | Path) -> Path:
    """fp32 ONNX -> fp16 ONNX (float32 inputs/outputs kept) at ``out_path`` (atomic write).

    LayerNormalization statistics and the softmax stay numerically safe: the masks are
    finite (-1e4 fits fp16) and ONNX Runtime's LayerNormalization accumulates in fp32.
    """
    import onnx

    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError:
        raise BackendUnavailableError("fp16 conversion needs onnxruntime: pip install onnxruntime") from None
    src = onnx.load(str(onnx_path))
    proto = convert_float_to_float16(src, keep_io_types=True, disable_shape_infer=False)
    _copy_metadata(src, proto, "fp16")
    atomic_write_bytes(Path(out_path), proto.SerializeToString())
    return Path(out_path)

