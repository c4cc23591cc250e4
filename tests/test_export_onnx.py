"""ONNX export: parity with eager on unseen shapes, padding invariance, metadata, variants."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from tdfast import InputError, TDDETRConfig, __version__
from tdfast.export import (ExportVerificationError, OrtRunner, check_tensorrt_compat, export_onnx,
                           read_metadata, verify_onnx)
from tdfast.export.onnx_export import check_dynamic_axes
from tdfast.export.ort import make_session
from tdfast.export.quantize import convert_fp16, quantize_int8
from tdfast.export.verify import FP16_ATOL, Shape, default_shapes, eager_outputs, verify_runner
from tdfast.export.wrapper import random_inputs

from export_support import make_model, shared_export


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return shared_export(tmp_path_factory, "tiny", "dynamo")


@pytest.fixture(scope="module")
def qvh(tmp_path_factory):
    return shared_export(tmp_path_factory, "qvhighlights", "dynamo")


def _check_rows(rows, shapes, atol=1e-4):
    assert [r.shape for r in rows] == shapes
    for r in rows:
        assert all(v <= atol for v in r.max_abs.values()), r.max_abs
        assert r.top1_same == r.shape.batch and not r.has_nan


def test_tiny_export_matches_eager_on_unseen_shapes(tiny):
    model, path = tiny
    shapes = default_shapes(model.config)
    # tiny caps L at 32 and M at 16; the trace used B=2 L=17 M=7.
    assert shapes == [Shape(1, 5, 1, False), Shape(3, 29, 11, True), Shape(8, 32, 16, True)]
    rows = verify_onnx(path, model)
    _check_rows(rows, shapes)
    # The export verified itself on the same shapes (same seeds) and stored the result.
    record = json.loads(read_metadata(path)["verification"])
    assert record["shapes"] == [[1, 5, 1, False], [3, 29, 11, True], [8, 32, 16, True]]
    assert record["max_abs"] == {k: max(r.max_abs[k] for r in rows) for k in record["max_abs"]}
    assert record["top1_same"] == [12, 12] and record["ok"] and record["atol"] == 1e-4


def test_qvhighlights_sized_export_passed_verify(qvh):
    """The export verified itself (it raises otherwise) on unseen shapes; the record says so."""
    model, path = qvh
    assert default_shapes(model.config) == [Shape(1, 5, 1, False), Shape(3, 37, 11, True),
                                            Shape(8, 75, 32, True)]
    record = json.loads(read_metadata(path)["verification"])
    assert record["shapes"] == [[1, 5, 1, False], [3, 37, 11, True], [8, 75, 32, True]]
    assert all(v <= 1e-4 for v in record["max_abs"].values()), record["max_abs"]
    assert record["top1_same"] == [12, 12] and record["ok"] and not record["nan"]
    assert check_tensorrt_compat(path) == []  # the deployable size passes the TensorRT check too


def test_graph_has_dynamic_batch_and_lengths(qvh):
    _, path = qvh
    proto = onnx.load(str(path))
    assert check_dynamic_axes(proto) == []
    dims = {vi.name: [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
            for vi in proto.graph.input}
    assert dims["video"][2] == 2816 and dims["query"][2] == 512
    assert all(isinstance(d, str) for d in dims["video"][:2] + dims["query"][:2])
    assert dims["video"][:2] == dims["video_mask"] and dims["query"][:2] == dims["query_mask"]
    assert max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) >= 17
    # A fixed axis (what a silent fallback to a static trace produces) is reported.
    proto.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 17
    assert check_dynamic_axes(proto) == ["video: axis 1 (L) should be dynamic, is fixed at 17"]


def test_extreme_shapes_and_numeric_masks(tiny):
    """L=1 (one clip), M=1, B=5, and 0/1 float masks give the eager answer."""
    model, path = tiny
    runner = OrtRunner(path)
    for b, l, m in [(5, 1, 1), (2, 32, 16), (4, 2, 3)]:
        x = random_inputs(model.config, b, l, m, padded=True, seed=b * 100 + l)
        ref = eager_outputs(model, x)
        got = runner(x[0].numpy(), x[1].float().numpy(), x[2], x[3].to(torch.int64))
        for k in ref:
            np.testing.assert_allclose(got[k], ref[k], atol=1e-4, rtol=0)


def test_onnxruntime_backend_passes_tensors_without_copies(tiny, monkeypatch):
    """The Retriever's ONNX Runtime path hands ORT numpy views of its padded torch tensors and
    returns ORT's arrays as torch views: torch -> numpy -> torch copies nothing."""
    from tdfast.retrieval.backends import ArrayRunner

    model, path = tiny
    runner = OrtRunner(path, check=False)
    seen, made = {}, {}
    run = runner.session.run

    def spy(names, feed):
        seen.update(feed)
        out = run(names, feed)
        made.update(zip(names, out))
        return out

    monkeypatch.setattr(runner.session, "run", spy)
    x = random_inputs(model.config, 2, 8, 4, padded=True, seed=1)
    out = ArrayRunner("onnxruntime", runner, static_shapes=False)(*x)
    assert np.shares_memory(seen["video"], x[0].numpy()) and np.shares_memory(seen["query"], x[2].numpy())
    for k, v in out.items():
        assert np.shares_memory(v.numpy(), made[k]), k
    np.testing.assert_allclose(out["pred_logits"].numpy(), eager_outputs(model, x)["pred_logits"], atol=1e-4)


def test_padding_gives_the_unpadded_answer(qvh):
    """Each row of a ragged batch equals the same pair run alone without padding."""
    model, path = qvh
    runner = OrtRunner(path)
    video, vmask, query, qmask = random_inputs(model.config, 4, 40, 20, padded=True, seed=7)
    batched = runner(video, vmask, query, qmask)
    for i in range(4):
        n, m = int(vmask[i].sum()), int(qmask[i].sum())
        assert n < 40 or i == 0
        alone = runner(video[i:i + 1, :n], vmask[i:i + 1, :n], query[i:i + 1, :m], qmask[i:i + 1, :m])
        np.testing.assert_allclose(batched["pred_spans"][i], alone["pred_spans"][0], atol=1e-5, rtol=0)
        np.testing.assert_allclose(batched["pred_logits"][i], alone["pred_logits"][0], atol=1e-5, rtol=0)
        np.testing.assert_allclose(batched["saliency_scores"][i, :n], alone["saliency_scores"][0],
                                   atol=1e-5, rtol=0)


def test_all_padding_query_row_is_rejected(tiny):
    model, path = tiny
    video, vmask, query, qmask = random_inputs(model.config, 3, 8, 4, padded=False)
    qmask[1] = False
    with pytest.raises(InputError, match=r"^query_mask: row 1 has no real token: empty query"):
        OrtRunner(path)(video, vmask, query, qmask)
    vmask[2] = False
    qmask[1] = True
    with pytest.raises(InputError, match=r"^video_mask: row 2 has no real token: zero-length video"):
        OrtRunner(path)(video, vmask, query, qmask)
    with pytest.raises(InputError, match=r"^video: expected feature dim 64, got 65"):
        OrtRunner(path)(torch.zeros(1, 4, 65), torch.ones(1, 4, dtype=torch.bool), query[:1], qmask[:1])


def test_sessions_do_not_spin_unless_asked(tiny):
    # spinning intra-op threads kept both cores of a 2-core machine busy after each call and
    # made the next PyTorch call 3-4x slower (eager B=1 42 ms instead of 11.5 ms)
    _, path = tiny
    key = "session.intra_op.allow_spinning"
    assert make_session(path, threads=2).get_session_options().get_session_config_entry(key) == "0"
    assert OrtRunner(path).session.get_session_options().get_session_config_entry(key) == "0"
    assert make_session(path, spin=True).get_session_options().get_session_config_entry(key) == "1"


def test_session_helper_threads_opt_level_and_providers(tiny):
    import onnxruntime as ort

    _, path = tiny
    sess = make_session(path, threads=1, opt_level="basic")
    so = sess.get_session_options()
    assert so.intra_op_num_threads == 1 and so.inter_op_num_threads == 1
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert sess.get_providers() == ["CPUExecutionProvider"]  # the default device
    assert make_session(path).get_session_options().graph_optimization_level == \
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with pytest.raises(InputError, match=r"^opt_level: .*'all'.*'max'"):
        make_session(path, opt_level="max")
    with pytest.raises(InputError, match=r"^threads: .*got 0"):
        make_session(path, threads=0)
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        from tdfast import BackendUnavailableError

        with pytest.raises(BackendUnavailableError, match="pip install onnxruntime-gpu"):
            make_session(path, device="cuda")


def test_metadata_carries_config_version_and_names(tiny):
    model, path = tiny
    meta = read_metadata(path)
    assert TDDETRConfig.from_json(meta["config"]) == model.config
    assert meta["tdfast_version"] == __version__
    assert json.loads(meta["input_names"]) == ["video", "video_mask", "query", "query_mask"]
    assert json.loads(meta["output_names"]) == ["pred_spans", "pred_logits", "saliency_scores"]
    assert meta["opset"] == "18" and meta["exporter"] == "dynamo"
    assert "True = real clip" in json.loads(meta["tensors"])["video_mask"]
    assert json.loads(meta["verification"])["ok"]


def test_verify_fails_loudly_on_a_different_model(tiny, tmp_path):
    model, path = tiny
    other = make_model("tiny", seed=1)
    with pytest.raises(ExportVerificationError, match="BAD") as e:
        verify_onnx(path, other)
    assert "does not match eager PyTorch" in str(e.value)


def _amplifying_model():
    """Tiny model whose class head is scaled 3000x: logits ~3e3, so eager fp32 itself is
    ~1e-3 from the float64 answer, past the 1e-4 tolerance (as a trained model can be)."""
    model = make_model("tiny", seed=0)
    with torch.no_grad():
        model.class_head.weight.mul_(3000.0)
    return model


def test_a_model_past_fp32_tolerance_is_judged_against_float64(tmp_path):
    """Its ONNX graph is ~1e-3 from eager, so verification against eager alone would refuse
    it; against float64 it is as accurate as eager (within 2x eager's own error) and passes,
    with the reference and the bound in the metadata."""
    from tdfast.export.verify import float64_model, float64_outputs

    model = _amplifying_model()
    inputs = random_inputs(model.config, 8, 32, 16, True, seed=2)
    exact = float64_outputs(float64_model(model), inputs)
    own = np.abs(eager_outputs(model, inputs)["pred_logits"] - exact["pred_logits"])
    assert own.max() > 1e-4  # the premise: eager fp32 is itself outside the tolerance
    path = export_onnx(model, tmp_path, log=None)
    v = json.loads(read_metadata(path)["verification"])
    assert v["ok"] and "float64" in v["reference"]
    assert 1e-4 < v["bounds"]["pred_logits"] < 1e-2
    assert v["bounds"]["pred_spans"] == v["bounds"]["saliency_scores"] == 1e-4  # not amplified


def test_the_float64_judgement_still_rejects_an_export_bug():
    """A backend that returns the float64 answer passes; the same answer with logits moved by
    0.05 (a bug, 25x the bound) fails, and the table names the float64 reference."""
    from tdfast.export.verify import float64_model, float64_outputs

    model = _amplifying_model()
    model64 = float64_model(model)

    def exact(*inputs):
        return {k: v.astype(np.float32) for k, v in float64_outputs(model64, inputs).items()}

    rows = verify_runner(exact, model)
    assert all(r.ok for r in rows) and "float64" in {r.reference for r in rows}

    def buggy(*inputs):
        out = exact(*inputs)
        out["pred_logits"] = out["pred_logits"] + 0.05
        return out

    with pytest.raises(ExportVerificationError, match="float64") as e:
        verify_runner(buggy, model)
    assert "BAD" in str(e.value)


def test_failed_verification_never_replaces_the_export(tmp_path_factory, tmp_path, monkeypatch):
    _, shared = shared_export(tmp_path_factory, "tiny", "torchscript")
    out = tmp_path / "model.onnx"
    out.write_bytes(shared.read_bytes())

    def broken(*args, **kwargs):  # a model whose ONNX graph disagrees with eager
        raise ExportVerificationError("mismatch")

    monkeypatch.setattr("tdfast.export.verify.verify_onnx", broken)
    with pytest.raises(ExportVerificationError):
        export_onnx(make_model("tiny", seed=3), tmp_path, exporter="torchscript", log=None)
    assert out.read_bytes() == shared.read_bytes()
    assert (tmp_path / "model.unverified.onnx").is_file()


def test_invalid_trace_input_is_rejected_before_export(tmp_path, monkeypatch):
    """An all-padding query row never reaches the exporter (nor, above, ONNX Runtime)."""
    def all_padding_row(config):
        video, vmask, query, qmask = random_inputs(config, 2, 9, 4, padded=False)
        qmask[1] = False
        return video, vmask, query, qmask

    monkeypatch.setattr("tdfast.export.onnx_export._trace_inputs", all_padding_row)
    with pytest.raises(InputError, match=r"^query_mask: row 1 has no real token: empty query"):
        export_onnx(make_model("tiny"), tmp_path, exporter="torchscript", log=None)
    assert list(tmp_path.iterdir()) == []


def test_torchscript_exporter_also_passes(tmp_path_factory):
    model, path = shared_export(tmp_path_factory, "tiny", "torchscript")
    meta = read_metadata(path)
    assert meta["exporter"] == "torchscript"
    assert check_dynamic_axes(onnx.load(str(path))) == []
    _check_rows(verify_onnx(path, model), default_shapes(model.config))
    assert json.loads(meta["verification"])["ok"]


def test_fp16_variant_within_fp16_tolerance(tiny, tmp_path):
    model, path = tiny
    fp16 = convert_fp16(path, tmp_path / "model.fp16.onnx")
    proto = onnx.load(str(fp16))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer)
    assert read_metadata(fp16)["precision"] == "fp16"
    rows = verify_onnx(fp16, model, atol=FP16_ATOL)
    worst = max(max(r.max_abs.values()) for r in rows)
    assert 1e-5 < worst <= FP16_ATOL  # really fp16 (not fp32-exact), within the design's tolerance


def test_int8_variant_is_quantized_and_close(tiny, tmp_path):
    from tdfast.export.int8_rows import INT8_SCHEME

    model, path = tiny
    int8 = quantize_int8(path, tmp_path / "model.int8.onnx")
    ops = [n.op_type for n in onnx.load(str(int8)).graph.node]
    # Row-wise scales (ReduceMax per row; one per distinct input), no per-tensor DynamicQuantizeLinear.
    assert "DynamicQuantizeLinear" not in ops and ops.count("MatMulIntegerToFloat") > ops.count("ReduceMax") > 0
    meta = read_metadata(int8)
    assert (meta["precision"], meta["int8_scheme"]) == ("int8", INT8_SCHEME)
    rows = verify_runner(OrtRunner(int8), model, atol=float("inf"), strict=False)
    # Lossy by design, but bounded: measured <= 9.7e-3 on normalized spans and <= 2.7e-2 on
    # logits / saliency on these shapes, on AVX-512 VNNI and under AVX2 emulation alike; a
    # broken quantization (wrong scale, a dropped zero point, int16 saturation) is off by
    # the output's own magnitude (~1).
    bound = {"pred_spans": 2e-2, "pred_logits": 5e-2, "saliency_scores": 5e-2}
    for r in rows:
        assert all(r.max_abs[k] <= bound[k] for k in bound) and not r.has_nan, (r.shape, r.max_abs)
    assert max(max(r.max_abs.values()) for r in rows) > 1e-4  # really int8, not the fp32 graph
    # int8 ops are outside TensorRT's ONNX parser: the static check must say so.
    problems = check_tensorrt_compat(int8)
    assert any("MatMulInteger" in p for p in problems)


def test_int8_keeps_the_named_modules_fp32(tiny, tmp_path):
    from tdfast.export.quantize import INT8_KEEP_FP32, nodes_of_modules

    model, path = tiny
    src = onnx.load(str(path))
    count = lambda p: sum(n.op_type == "MatMulIntegerToFloat" for n in onnx.load(str(p)).graph.node)  # noqa: E731
    everything = quantize_int8(path, tmp_path / "all.onnx", keep_fp32=())
    default = quantize_int8(path, tmp_path / "default.onnx")
    # Each weight MatMul of the kept modules is one MatMulIntegerToFloat fewer than quantizing all.
    kept = [n for n in src.graph.node if n.name in set(nodes_of_modules(src, INT8_KEEP_FP32))
            and n.op_type == "MatMul" and n.input[1] in {i.name for i in src.graph.initializer}]
    assert len(kept) >= 10  # the decoder's query path and the heads
    # The decoder's projections of the clips' contents (cross-attention content keys and values)
    # are quantized: no pattern of the keep list matches them, while every other linear layer of
    # the decoder is kept, its projections of the clips' positions (ca_k_pos) included.
    memory = set(nodes_of_modules(src, ("decoder.layers.*.ca_v", "decoder.layers.*.ca_k_content")))
    positions = set(nodes_of_modules(src, ("decoder.layers.*.ca_k_pos",)))
    decoder = set(nodes_of_modules(src, ("decoder",)))
    keep = set(nodes_of_modules(src, INT8_KEEP_FP32))
    assert memory and not memory & keep and positions and positions <= keep
    weights = {i.name for i in src.graph.initializer}
    assert {n.name for n in src.graph.node if n.name in decoder - memory and n.op_type == "MatMul"
            and n.input[1] in weights} <= keep
    assert count(default) == count(everything) - len(kept)
    assert read_metadata(default)["int8_keep_fp32"] == ",".join(INT8_KEEP_FP32)
    # Keeping every module fp32 leaves nothing quantized: the fp32 graph's answers exactly.
    top = sorted({name.split(".")[0] for name, _ in model.named_children()})
    none = quantize_int8(path, tmp_path / "none.onnx", keep_fp32=tuple(top))
    assert count(none) == 0
    rows = verify_runner(OrtRunner(none), model, atol=1e-4)
    assert all(max(r.max_abs.values()) <= 1e-4 for r in rows)


def test_int8_keep_fp32_needs_module_paths(tiny, tmp_path):
    _, path = tiny
    proto = onnx.load(str(path))
    for n in proto.graph.node:
        del n.metadata_props[:]
        n.name = n.name.lstrip("/")  # nor TorchScript-style scope names
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(InputError, match="keep_fp32"):
        quantize_int8(bare, tmp_path / "out.onnx")
    assert quantize_int8(bare, tmp_path / "out.onnx", keep_fp32=()).is_file()


def test_same_top1_allows_only_ties_within_tolerance():
    from tdfast.export.verify import foreground_prob, same_top1

    # fg probabilities: row 0 moments 0 and 1 tie within 1e-6; row 1 moment 1 is 0.2 below moment 0.
    ref = np.log(np.array([[[0.500001, 0.499999], [0.5, 0.5], [0.1, 0.9]],
                           [[0.7, 0.3], [0.5, 0.5], [0.1, 0.9]]]))
    np.testing.assert_allclose(foreground_prob(ref)[1], [0.7, 0.5, 0.1])
    got = ref.copy()
    got[:, 1, 0] += 1.0  # the candidate ranks moment 1 first in both rows
    assert same_top1(ref, got, tie=1e-4).tolist() == [True, False]
    assert same_top1(ref, ref, tie=0.0).tolist() == [True, True]


@pytest.mark.slow
def test_exporter_comparison_of_the_docs(tmp_path):
    """`python -m tdfast.export.compare` on the tiny preset: both exporters within 1e-4 with the
    same top-1 on all 12 shapes, and the dynamo graph smaller (the docs' reasons)."""
    from tdfast.export.compare import compare_exporters, shapes_for

    model = make_model("tiny")
    assert [(s.video_len, s.query_len) for s in shapes_for(model.config)][-3:] == [(32, 9), (20, 16), (32, 16)]
    result = compare_exporters(model, tmp_path)
    for r in result.values():
        assert r["ok"] and not r["nan"] and max(r["max_abs"].values()) <= 1e-4
        assert r["top1_same"] == [68, 68]
    assert result["dynamo"]["graph_nodes"] < result["torchscript"]["graph_nodes"]


def test_prelu_is_exported_as_leaky_relu_with_the_same_values(tiny):
    from tdfast.export.wrapper import FixedSlopeReLU, freeze_activations

    model, path = tiny
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "LeakyRelu" in ops and "PRelu" not in ops
    frozen = freeze_activations(model)
    assert frozen is not model and any(isinstance(m, torch.nn.PReLU) for m in model.modules())
    slopes = [m.weight.item() for m in model.modules() if isinstance(m, torch.nn.PReLU)]
    assert [m.slope for m in frozen.modules() if isinstance(m, FixedSlopeReLU)] == slopes
    x = random_inputs(model.config, 3, 11, 5, seed=4)
    with torch.no_grad():
        a, b = model(*x), frozen(*x)
    for k in ("pred_spans", "pred_logits", "saliency_scores"):
        assert torch.equal(a[k], b[k]), k
