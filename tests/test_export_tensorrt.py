"""TensorRT: the static compatibility check (CI), the missing-dependency errors, the profile."""
from __future__ import annotations

import importlib.util

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from tdfast import BackendUnavailableError, TDDETRConfig
from tdfast.export import TrtRunner, build_tensorrt_engine, check_tensorrt_compat
from tdfast.export.tensorrt import profile_shapes
from tdfast.export.trt_check import TRT_SUPPORTED_OPS

from export_support import shared_export

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module", params=["dynamo", "torchscript"])
def tiny_onnx(request, tmp_path_factory):
    return shared_export(tmp_path_factory, "tiny", request.param)


def _graph(nodes, inputs, outputs, initializers=(), opset=18):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _x(name="x", dims=("B", "L")):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(dims))


def test_our_graph_passes(tiny_onnx):
    _, path = tiny_onnx
    assert check_tensorrt_compat(path) == []
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ops <= TRT_SUPPORTED_OPS
    assert {"LayerNormalization", "CumSum", "MatMul", "Softmax"} <= ops


def test_unsupported_op_is_reported():
    m = _graph([helper.make_node("Unique", ["x"], ["y"], name="u0")], [_x()], [_x("y", ["N"])])
    assert check_tensorrt_compat(m) == [
        "Unique node u0: op Unique is not supported by TensorRT's ONNX parser",
        "Unique node u0: output shape depends on input values (data-dependent shape)",
    ]


def test_custom_domain_and_opset_are_reported():
    node = helper.make_node("FusedMatMul", ["x", "x"], ["y"], name="f", domain="com.microsoft")
    m = _graph([node], [_x()], [_x("y")], opset=21)
    assert check_tensorrt_compat(m) == [
        "opset 21 is outside TensorRT 10's parser range 9..20",
        "FusedMatMul node f: custom domain 'com.microsoft' is not in TensorRT's ONNX parser",
    ]


def test_value_dependent_reshape_is_reported_but_shape_derived_is_not():
    # Reshape to a shape computed from x's *values* (Cast of x): data-dependent.
    bad = _graph([helper.make_node("Cast", ["x"], ["s"], to=TensorProto.INT64, name="c"),
                  helper.make_node("ReduceMax", ["s"], ["n"], keepdims=1, name="r"),
                  helper.make_node("Reshape", ["x", "n"], ["y"], name="reshape")],
                 [_x("x", ["B"])], [_x("y", ["N"])])
    assert check_tensorrt_compat(bad) == [
        "Reshape node reshape: shape input 'n' depends on the values of a graph input "
        "(data-dependent shape)"]
    # Reshape to a shape computed from x's *shape*: fine.
    good = _graph([helper.make_node("Shape", ["x"], ["s"], name="shape"),
                   helper.make_node("Reshape", ["x", "s"], ["y"], name="reshape")],
                  [_x()], [_x("y")])
    assert check_tensorrt_compat(good) == []


def test_non_constant_cumsum_axis_is_reported():
    axis = helper.make_tensor_value_info("axis", TensorProto.INT64, [])
    m = _graph([helper.make_node("CumSum", ["x", "axis"], ["y"], name="cs")], [_x(), axis], [_x("y")])
    assert check_tensorrt_compat(m) == [
        "CumSum node cs: input 1 ('axis') must be a build-time constant for TensorRT"]
    const = helper.make_tensor("axis", TensorProto.INT64, [], [1])
    ok = _graph([helper.make_node("CumSum", ["x", "axis"], ["y"], name="cs")], [_x()], [_x("y")], [const])
    assert check_tensorrt_compat(ok) == []


def test_unnamed_dynamic_axis_is_reported():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    m = _graph([helper.make_node("Relu", ["x"], ["y"])], [x], [_x("y")])
    assert check_tensorrt_compat(m) == [
        "input x: axis 0 has no name or size; TensorRT optimization profiles need named dynamic axes"]


def test_unsupported_op_inside_a_subgraph_is_reported():
    then_g = helper.make_graph([helper.make_node("NonZero", ["x"], ["z"], name="nz")], "then", [],
                               [helper.make_tensor_value_info("z", TensorProto.INT64, None)])
    else_g = helper.make_graph([helper.make_node("Shape", ["x"], ["z2"])], "else", [],
                               [helper.make_tensor_value_info("z2", TensorProto.INT64, None)])
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    node = helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g, name="if")
    m = _graph([node], [_x(), cond], [helper.make_tensor_value_info("y", TensorProto.INT64, None)])
    assert check_tensorrt_compat(m) == [
        "NonZero node nz: output shape depends on input values (data-dependent shape)"]


def test_profile_covers_batch_and_max_lengths():
    c = TDDETRConfig.from_name("qvhighlights")
    p = profile_shapes(c, max_batch=32)
    assert p["video"] == ((1, 1, 2816), (8, 75, 2816), (32, 75, 2816))
    assert p["video_mask"] == ((1, 1), (8, 75), (32, 75))
    assert p["query"] == ((1, 1, 512), (8, 16, 512), (32, 32, 512))
    assert p["query_mask"] == ((1, 1), (8, 16), (32, 32))


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")
def test_missing_tensorrt_names_the_install(tiny_onnx, tmp_path):
    _, path = tiny_onnx
    with pytest.raises(BackendUnavailableError, match=r"pip install tensorrt"):
        build_tensorrt_engine(path, tmp_path / "model.engine")
    with pytest.raises(BackendUnavailableError, match=r"pip install tensorrt"):
        TrtRunner(tmp_path / "model.engine")


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_TRT and torch.cuda.is_available()), reason="needs tensorrt and a CUDA GPU")
def test_engine_matches_eager_on_gpu(tiny_onnx, tmp_path):
    from tdfast.export.verify import FP16_ATOL, FP32_ATOL, verify_runner

    model, path = tiny_onnx
    for precision, atol in (("fp32", FP32_ATOL), ("fp16", FP16_ATOL)):
        engine = build_tensorrt_engine(path, tmp_path / f"{precision}.engine", precision=precision,
                                       max_batch=8, log=None)
        verify_runner(TrtRunner(engine), model, atol=atol, what=f"TensorRT {precision}")
