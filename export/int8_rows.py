"""Row-wise int8 MatMuls: the graph rewrite behind the ``onnx-int8`` variant.

Each fp32 ``Y = X @ W`` with a constant 2-D weight ``W [K, N]`` becomes

    s   = max(|X|, over K) / 127                      # [..., 1] one scale per row (token)
    q   = QuantizeLinear(X, s, 128)                   # [..., K] uint8 round(X / s) + 128, in [1, 255]
    P   = MatMulInteger(q, Wq, a_zero_point=128)      # [..., N] int32, exact
    Y   = float(P) * w_scale * s                      # [..., N]; the bias Add stays as it was

with ``Wq = round(W / w_scale)`` int8 in [-63, 63] (7 bits), ``w_scale [N]`` per output channel.
``MatMulIntegerToFloat`` (ONNX Runtime's contrib op) computes ``float(P) * w_scale`` in one
kernel and a ``Mul`` applies ``s``; ``QuantizeLinear`` runs per row on a [rows, K] view, and
layers that read the same ``X`` share its ``q`` and ``s``.

Why this form:

- **A pair's answer does not depend on its batch mates.** Every row (a clip, a query
  token, a moment query of one pair) gets its own scale. ``quantize_dynamic``'s
  ``DynamicQuantizeLinear`` takes one scale for the whole [B, L, K] tensor, so one
  loud pair, or the padding, changed everyone's rounding.
- **Exact int32 sums on every x86 CPU.** ONNX Runtime's u8 x s8 kernels without VNNI
  (AVX2, AVX-512 BW) multiply with ``vpmaddubsw``, which adds two u8 * s8 products into
  an int16 and saturates beyond 32767. With weights in [-63, 63] the pair sum is at most
  2 * 255 * 63 = 32130, so it never saturates; VNNI (``vpdpbusd``) sums in int32 anyway.
  The same integers come out on AVX2, AVX-512 and AVX-512 VNNI / AVX-VNNI. 8-bit weights
  with 8-bit activations (as ``quantize_dynamic`` makes them) saturate there.
- **u8 x s8, not s8 x s8:** ONNX Runtime 1.32 has no vectorised s8 x s8 kernel on x86
  without AVX-VNNI-INT8 (it falls back to a scalar loop), and u8 x u8 widens to 16 bits.

Which bit to give up was measured (docs/benchmarks.md, "int8"; ``benchmarks/bench_int8_choice.py``):
7-bit weights (per channel) cost less accuracy than 7-bit activations (per row).
"""
from __future__ import annotations

import numpy as np

from tdfast.errors import InputError

# The scheme's name, stored in the export's metadata (``int8_scheme``): a cached int8 file
# made by another scheme (e.g. ``quantize_dynamic``'s per-tensor one) is rebuilt.
INT8_SCHEME = "rows-a8-w7"
ACT_LEVELS = 127  # |q - 128| <= 127: 8-bit activations
WEIGHT_LEVELS = 63  # |w| <= 63: 7-bit weights, so u8 x s8 pair sums fit an int16 (module docstring)
# Rows whose largest |x| is below this (all-zero rows) get this scale instead of 0 / 0.
TINY = 1e-30


def _opset(proto) -> int:
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def quantize_weight(w: np.ndarray, levels: int = WEIGHT_LEVELS) -> tuple[np.ndarray, np.ndarray]:
    """``w [K, N]`` float -> (int8 ``[K, N]`` in [-levels, levels], float32 scale ``[N]``),
    symmetric per output column; an all-zero column gets scale 1 (its int8 values are 0)."""
    w = np.asarray(w, dtype=np.float32)
    amax = np.abs(w).max(axis=0)  # [N]
    scale = np.where(amax > 0, amax / levels, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale), -levels, levels).astype(np.int8)
    return q, scale


def quantize_rows_reference(x: np.ndarray, w: np.ndarray, act_levels: int = ACT_LEVELS,
                            weight_levels: int = WEIGHT_LEVELS) -> np.ndarray:
    """What one rewritten MatMul computes, in numpy (the oracle of the tests): ``x [..., K]``
    float, ``w [K, N]`` float -> ``[..., N]`` float32."""
    q_w, w_scale = quantize_weight(w, weight_levels)
    x = np.asarray(x, dtype=np.float32)
    s = np.maximum(np.abs(x).max(-1, keepdims=True), np.float32(TINY)) * np.float32(1 / act_levels)  # [..., 1]
    q = np.rint(x / s)  # [..., K] in [-act_levels, act_levels]
    p = q.astype(np.int64) @ q_w.astype(np.int64)  # [..., N] exact
    return (p.astype(np.float32) * w_scale * s).astype(np.float32)


def rowwise_matmuls(proto, exclude: set[str], act_levels: int = ACT_LEVELS,
                    weight_levels: int = WEIGHT_LEVELS) -> int:
    """Rewrite, in place, every ``MatMul`` of ``proto`` whose second input is a 2-D float
    initializer and whose name is not in ``exclude`` into the row-wise int8 form above.
    Returns how many were rewritten. The weight initializers become int8 (the fp32 ones are
    dropped when nothing else reads them).

    ``act_levels`` / ``weight_levels``: the largest |q| of activations (zero point
    ``act_levels + 1``) and weights; other values than the defaults only for the measurement
    of ``benchmarks/bench_int8_choice.py`` (127 / 127 sums exactly only with VNNI)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    readers: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    opset = _opset(proto)

    def reduce(op: str, x: str, out: str):  # over the last axis, kept: [..., 1]
        if opset >= 18:  # axes became an input in opset 18
            return helper.make_node(op, [x, "int8/axes"], [out], keepdims=1)
        return helper.make_node(op, [x], [out], axes=[-1], keepdims=1)

    if not (0 < act_levels <= 127 and 0 < weight_levels <= 127):
        raise InputError(f"act_levels, weight_levels: expected 1..127, got {act_levels}, {weight_levels}")
    zero_point = act_levels + 1  # q + zero_point in [1, 2 * act_levels + 1], a uint8
    shared = {"int8/inv_levels": np.array(1 / act_levels, np.float32), "int8/tiny": np.array(TINY, np.float32),
              "int8/one": np.array(1.0, np.float32), "int8/zero_point": np.array(zero_point, np.uint8),
              "int8/axes": np.array([-1], np.int64), "int8/flat": np.array([-1], np.int64)}
    new_inits = [numpy_helper.from_array(v, k) for k, v in shared.items()]
    nodes, done, dropped = [], 0, set()
    quantized: dict[str, tuple[str, str]] = {}  # input -> its (uint8 rows, row scales)
    for n in graph.node:
        w = inits.get(n.input[1]) if n.op_type == "MatMul" else None
        if w is None or len(w.dims) != 2 or w.data_type != TensorProto.FLOAT or n.name in exclude:
            nodes.append(n)
            continue
        q_w, w_scale = quantize_weight(numpy_helper.to_array(w), weight_levels)
        p = f"{n.name}/int8"
        new_inits += [numpy_helper.from_array(q_w, f"{p}/w"), numpy_helper.from_array(w_scale, f"{p}/w_scale")]
        x, y = n.input[0], n.output[0]
        if x not in quantized:
            new_inits.append(numpy_helper.from_array(np.array([-1, q_w.shape[0]], np.int64), f"{p}/rows_k"))
        made = [] if x in quantized else [
            # s = max|x| per row, from two reads of x (no |x| tensor written)
            reduce("ReduceMax", x, f"{p}/hi"),  # [..., 1]
            reduce("ReduceMin", x, f"{p}/lo"),
            helper.make_node("Neg", [f"{p}/lo"], [f"{p}/neg_lo"]),
            helper.make_node("Max", [f"{p}/hi", f"{p}/neg_lo", "int8/tiny"], [f"{p}/amax"]),
            helper.make_node("Mul", [f"{p}/amax", "int8/inv_levels"], [f"{p}/scale"]),  # [..., 1]
            # QuantizeLinear's per-axis form quantizes each row of a 2-D view with its own scale
            # in one pass: round half to even, + zero point, saturated to uint8.
            helper.make_node("Reshape", [f"{p}/scale", "int8/flat"], [f"{p}/scale_rows"]),  # [R]
            helper.make_node("Shape", [f"{p}/scale_rows"], [f"{p}/r"]),
            helper.make_node("Expand", ["int8/zero_point", f"{p}/r"], [f"{p}/zp_rows"]),  # [R] uint8
            helper.make_node("Reshape", [x, f"{p}/rows_k"], [f"{p}/x2"]),  # [R, K]
            helper.make_node("QuantizeLinear", [f"{p}/x2", f"{p}/scale_rows", f"{p}/zp_rows"], [f"{p}/q2"], axis=0),
            helper.make_node("Shape", [x], [f"{p}/x_shape"]),
            helper.make_node("Reshape", [f"{p}/q2", f"{p}/x_shape"], [f"{p}/q"]),  # [..., K] uint8
        ]
        # Layers reading the same input (Q/K/V projections, every decoder layer's keys of the
        # video memory) share its quantization: it depends on the input alone.
        q, scale = quantized.setdefault(x, (f"{p}/q", f"{p}/scale"))
        made += [
            # int32 sums, then * w_scale per column in the GEMM's epilogue (a_scale 1)
            helper.make_node("MatMulIntegerToFloat", [q, f"{p}/w", "int8/one", f"{p}/w_scale", "int8/zero_point"],
                             [f"{p}/acc"], domain="com.microsoft"),
            helper.make_node("Mul", [f"{p}/acc", scale], [y]),  # [..., N]; bias Add follows
        ]
        nodes += made
        for node in made:
            node.name = f"{p}/{node.op_type}_{node.output[0].rsplit('/', 1)[-1]}"
            node.metadata_props.extend(n.metadata_props)  # keep the module path (nodes_of_modules)
        readers[w.name] -= 1
        if readers[w.name] == 0:
            dropped.add(w.name)
        done += 1
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [t for t in graph.initializer if t.name not in dropped]
    del graph.initializer[:]
    graph.initializer.extend(kept + (new_inits if done else []))
    if done and not any(o.domain == "com.microsoft" for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return done
