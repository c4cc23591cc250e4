"""TensorRT: the static compatibility check (CI), the missing-dependency errors, the profile."""
from __future__ import annotations

import importlib.util
import json
import sys

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from tdfast import TDDETR, BackendUnavailableError, InputError, TDDETRConfig
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


def test_bad_build_options_fail_before_any_work(tmp_path):
    from tdfast.export import export
    from tdfast.export.tensorrt import check_build_options

    with pytest.raises(InputError, match=r"^max_batch: .*got 0"):
        check_build_options("fp16", 0)
    with pytest.raises(InputError, match=r"^precision: .*'bf16'.*'int8'"):
        check_build_options("int8", 8)
    # Through export(): rejected before the (seconds-long) ONNX export, nothing written.
    with pytest.raises(InputError, match=r"^max_batch: .*got 0"):
        export(TDDETR(TDDETRConfig.from_name("tiny")), "tensorrt", tmp_path / "out", max_batch=0, log=None)
    assert not (tmp_path / "out").exists()


def test_inputs_outside_the_engine_profile_are_input_errors():
    """TrtRunner checks every input against the profile recorded in the sidecar before
    binding it (TensorRT itself would only log an error and fail the launch)."""
    from tdfast.export.tensorrt import check_in_profile

    c = TDDETRConfig.from_name("qvhighlights")
    profile = {k: [list(s) for s in v] for k, v in profile_shapes(c, max_batch=8).items()}  # as in the sidecar
    for name, shape in [("video", (8, 75, 2816)), ("video", (1, 1, 2816)), ("query_mask", (3, 32))]:
        check_in_profile(name, shape, profile)
    with pytest.raises(InputError, match=r"^video: expected a shape between \(1, 1, 2816\) and "
                                         r"\(8, 75, 2816\) \(the engine's optimization profile\), "
                                         r"got \(9, 75, 2816\)"):
        check_in_profile("video", (9, 75, 2816), profile)
    with pytest.raises(InputError, match=r"^query_mask: expected a shape between \(1, 1\) and \(8, 32\)"):
        check_in_profile("query_mask", (2, 33), profile)
    check_in_profile("video", (99, 75, 2816), None)  # an old sidecar without a profile: TensorRT decides


class _FakeTrt:
    """A recording stand-in for the ``tensorrt`` module: only the calls build_tensorrt_engine
    makes (names checked against the TensorRT 10 Python API docs), recording their arguments.
    It checks tdfast's side of the build (profile numbers, flags, timing-cache round trip,
    sidecar, error paths), not TensorRT itself."""

    __version__ = "10.0.fake"

    def __init__(self, parse_ok=True, build_ok=True):
        self.calls, self.parse_ok, self.build_ok = [], parse_ok, build_ok
        fake = self

        class Logger:
            WARNING = "WARNING"

            def __init__(self, level):
                fake.calls.append(("Logger", level))

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                fake.calls.append(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))

        class Cache:
            def __init__(self, blob):
                self.blob = blob

            def serialize(self):
                return self.blob + b"+timings"

        class Config:
            def set_memory_pool_limit(self, pool, size):
                fake.calls.append(("set_memory_pool_limit", pool, size))

            def set_flag(self, flag):
                fake.calls.append(("set_flag", flag))

            def add_optimization_profile(self, profile):
                fake.calls.append(("add_optimization_profile",))

            def create_timing_cache(self, blob):
                fake.calls.append(("create_timing_cache", bytes(blob)))
                return Cache(bytes(blob))

            def set_timing_cache(self, cache, ignore_mismatch):
                self.cache = cache
                fake.calls.append(("set_timing_cache", ignore_mismatch))

            def get_timing_cache(self):
                return self.cache

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                fake.calls.append(("create_network", flags))
                return "network"

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                fake.calls.append(("build_serialized_network", network))
                return b"ENGINE" if fake.build_ok else None

        class OnnxParser:
            num_errors = 1

            def __init__(self, network, logger):
                pass

            def parse_from_file(self, path):
                fake.calls.append(("parse_from_file", path))
                return fake.parse_ok

            def get_error(self, i):
                return "In node 3 (Foo): UNSUPPORTED_NODE"

        self.Logger, self.Builder, self.OnnxParser = Logger, Builder, OnnxParser
        self.MemoryPoolType = type("MemoryPoolType", (), {"WORKSPACE": "WORKSPACE"})
        self.BuilderFlag = type("BuilderFlag", (), {"FP16": "FP16", "BF16": "BF16"})

    def named(self, name):
        return [c for c in self.calls if c[0] == name]


@pytest.mark.parametrize("precision, flags", [("fp16", [("set_flag", "FP16")]),
                                              ("bf16", [("set_flag", "BF16")]), ("fp32", [])])
def test_builder_against_a_recording_tensorrt(tiny_onnx, tmp_path, monkeypatch, precision, flags):
    model, path = tiny_onnx
    fake = _FakeTrt()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    out = build_tensorrt_engine(path, tmp_path / "m.engine", precision=precision, max_batch=8,
                                workspace_gib=0.5, log=None)
    assert out.read_bytes() == b"ENGINE"
    assert fake.named("create_network") == [("create_network", 0)]
    assert fake.named("parse_from_file") == [("parse_from_file", str(path))]
    assert fake.named("set_flag") == flags
    assert fake.named("set_memory_pool_limit") == [("set_memory_pool_limit", "WORKSPACE", 2**29)]
    # tiny: video_dim 64, text_dim 32, max lengths 32 / 16; B 1 / 8 // 4 / 8.
    assert fake.named("set_shape") == [
        ("set_shape", "video", (1, 1, 64), (2, 32, 64), (8, 32, 64)),
        ("set_shape", "video_mask", (1, 1), (2, 32), (8, 32)),
        ("set_shape", "query", (1, 1, 32), (2, 16, 32), (8, 16, 32)),
        ("set_shape", "query_mask", (1, 1), (2, 16), (8, 16))]
    assert fake.named("set_timing_cache") == [("set_timing_cache", False)]
    side = json.loads((tmp_path / "m.engine.json").read_text())
    assert side["precision"] == precision and side["max_batch"] == 8
    assert side["tensorrt_version"] == "10.0.fake" and "verification" not in side
    assert TDDETRConfig.from_json(side["config"]) == model.config
    assert side["profile"]["video"] == [[1, 1, 64], [2, 32, 64], [8, 32, 64]]
    # The timing cache is written next to the engine and read back by the next build.
    cache = tmp_path / "m.engine.timing-cache"
    assert cache.read_bytes() == b"+timings"
    fake.calls.clear()
    build_tensorrt_engine(path, tmp_path / "m.engine", precision=precision, max_batch=8, log=None)
    assert fake.named("create_timing_cache") == [("create_timing_cache", b"+timings")]
    assert cache.read_bytes() == b"+timings+timings"


def test_builder_errors_against_a_recording_tensorrt(tiny_onnx, tmp_path, monkeypatch):
    _, path = tiny_onnx
    monkeypatch.setitem(sys.modules, "tensorrt", _FakeTrt(parse_ok=False))
    with pytest.raises(RuntimeError, match=r"TensorRT could not parse .*\n  In node 3 \(Foo\): UNSUPPORTED_NODE"):
        build_tensorrt_engine(path, tmp_path / "m.engine", log=None)
    monkeypatch.setitem(sys.modules, "tensorrt", _FakeTrt(build_ok=False))
    with pytest.raises(RuntimeError, match="TensorRT failed to build an engine"):
        build_tensorrt_engine(path, tmp_path / "m.engine", log=None)
    assert not (tmp_path / "m.engine").exists() and not (tmp_path / "m.engine.json").exists()
