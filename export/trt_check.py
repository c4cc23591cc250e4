"""Static TensorRT compatibility check of an ONNX graph (runs without TensorRT, in CI).

Three rules, each a list of human-readable problems (empty list = compatible):

1. Every op (subgraphs included) is in the default ONNX domain, the model's
   opset is in TensorRT 10's parser range, and the op is marked supported in
   the ONNX-TensorRT operator matrix below.
2. No data-dependent shapes: no op whose output shape depends on input values
   (NonZero, Unique, ...), and every shape-defining input (Reshape's shape,
   Expand's shape, Slice's starts/ends, Range's bounds, ...) is computed from
   tensor *shapes* and constants only, never from the *values* of a graph input.
3. Inputs TensorRT requires as build-time constants (CumSum axis, Reduce* axes,
   Squeeze/Unsqueeze axes, TopK K, OneHot depth) come from initializers or
   Constant nodes.
"""
from __future__ import annotations

from pathlib import Path

# Operators marked "Y" in onnx/onnx-tensorrt docs/operators.md, "TensorRT 10.15 supports operators
# in the inclusive range of opset 9 to opset 24" (https://github.com/onnx/onnx-tensorrt/blob/main/
# docs/operators.md). Ops that appeared after TensorRT 10.0 (Attention, RMSNormalization,
# RotaryEmbedding, TensorScatter) are left out, and the opset is capped at 20 (TensorRT 10.0's
# range), so a passing graph parses with every TensorRT 10.x.
TRT_SUPPORTED_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos
Cosh CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand
EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool
GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU HammingWindow HannWindow
HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN
LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool
MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not
OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike
RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp
ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize
ReverseSequence RNN RoiAlign Round STFT ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape
Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze
Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())
TRT_OPSET_RANGE = (9, 20)

# Output shape depends on input values: TensorRT parses some of them, but the engine then needs
# data-dependent allocation; tdfast's graph must never contain them.
DATA_DEPENDENT_OPS = frozenset({"NonZero", "NonMaxSuppression", "Unique", "Compress"})
# op -> input indices that define an output shape (must not depend on graph-input values).
SHAPE_INPUTS = {
    "Reshape": (1,), "Expand": (1,), "Slice": (1, 2, 3, 4), "Range": (0, 1, 2),
    "ConstantOfShape": (0,), "Tile": (1,), "Pad": (1, 3), "Resize": (2, 3), "Split": (1,),
    "TopK": (1,), "OneHot": (1,), "Squeeze": (1,), "Unsqueeze": (1,), "EyeLike": (),
}
# op -> input indices TensorRT needs as build-time constants.
CONSTANT_INPUTS = {
    "CumSum": (1,), "Squeeze": (1,), "Unsqueeze": (1,), "TopK": (1,), "OneHot": (1,),
    **{f"Reduce{r}": (1,) for r in ("L1", "L2", "LogSum", "LogSumExp", "Max", "Mean", "Min",
                                     "Prod", "Sum", "SumSquare")},
}
# Ops whose output carries only shape information of their input, not its values.
SHAPE_OF_OPS = frozenset({"Shape", "Size"})


def _subgraphs(node):
    import onnx

    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def _walk(graph, consts: set[str], values: set[str], problems: list[str]) -> None:
    """Visit nodes in order, tracking constant tensors and graph-input-value-dependent tensors."""
    consts.update(i.name for i in graph.initializer)
    for node in graph.node:
        where = f"{node.op_type} node {node.name or '(unnamed)'}"
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{where}: custom domain {node.domain!r} is not in TensorRT's ONNX parser")
        elif node.op_type not in TRT_SUPPORTED_OPS:
            problems.append(f"{where}: op {node.op_type} is not supported by TensorRT's ONNX parser")
        if node.op_type in DATA_DEPENDENT_OPS:
            problems.append(f"{where}: output shape depends on input values (data-dependent shape)")
        ins = list(node.input)
        for i in SHAPE_INPUTS.get(node.op_type, ()):
            if i < len(ins) and ins[i] in values:
                problems.append(f"{where}: shape input {ins[i]!r} depends on the values of a graph "
                                f"input (data-dependent shape)")
        for i in CONSTANT_INPUTS.get(node.op_type, ()):
            if i < len(ins) and ins[i] and ins[i] not in consts:
                problems.append(f"{where}: input {i} ({ins[i]!r}) must be a build-time constant "
                                f"for TensorRT")
        for g in _subgraphs(node):
            _walk(g, set(consts), set(values), problems)
        real_ins = [x for x in ins if x]
        if node.op_type == "Constant" or (real_ins and all(x in consts for x in real_ins)):
            consts.update(node.output)
        elif node.op_type in SHAPE_OF_OPS:
            pass  # shape-only: neither constant nor value-dependent
        elif node.op_type in DATA_DEPENDENT_OPS or any(x in values for x in real_ins):
            values.update(node.output)


def check_tensorrt_compat(onnx_path_or_proto) -> list[str]:
    """Problems that would stop TensorRT from building a dynamic-shape engine; [] if none.

    Accepts a path or an ``onnx.ModelProto``. Does not need TensorRT.
    """
    import onnx

    proto = onnx_path_or_proto
    if isinstance(proto, (str, Path)):
        proto = onnx.load(str(proto), load_external_data=False)
    problems: list[str] = []
    lo, hi = TRT_OPSET_RANGE
    for op in proto.opset_import:
        if op.domain in ("", "ai.onnx") and not lo <= op.version <= hi:
            problems.append(f"opset {op.version} is outside TensorRT 10's parser range {lo}..{hi}")
    graph_inputs = {i.name for i in proto.graph.input} - {i.name for i in proto.graph.initializer}
    values = set(graph_inputs)
    _walk(proto.graph, set(), values, problems)
    for vi in proto.graph.input:
        if vi.name not in graph_inputs:
            continue
        for axis, d in enumerate(vi.type.tensor_type.shape.dim):
            if not d.HasField("dim_value") and not d.dim_param:
                problems.append(f"input {vi.name}: axis {axis} has no name or size; TensorRT "
                                f"optimization profiles need named dynamic axes")
    return problems
