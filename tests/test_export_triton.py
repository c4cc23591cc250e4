"""Triton Inference Server repository: config.pbtxt parses as protobuf text format and matches
the ONNX graph it serves.

config.pbtxt is parsed with ``google.protobuf.text_format`` against the minimal
``inference.ModelConfig`` schema in ``tdfast.export.triton_config`` (same field
names/numbers as Triton's model_config.proto), so unknown fields or wrong types fail.
"""
from __future__ import annotations

import onnx
import pytest
from google.protobuf import text_format

from tdfast import InputError
from tdfast.export import write_triton_repository
from tdfast.export.triton_config import DATA_TYPES, INSTANCE_KINDS, parse_model_config

from export_support import shared_export


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    return shared_export(tmp_path_factory, "tiny", "torchscript")[1]


def _onnx_io(path):
    """name -> (Triton type name, dims without batch, -1 for symbolic), read straight from ONNX."""
    names = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.BOOL: "TYPE_BOOL"}
    g = onnx.load(str(path)).graph
    return [(vi.name, names[vi.type.tensor_type.elem_type],
             [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim][1:])
            for vi in [*g.input, *g.output]]


def test_repository_config_matches_onnx(onnx_path, tmp_path):
    model_dir = write_triton_repository(onnx_path, tmp_path, model_name="tdd", max_batch_size=16,
                                        preferred_batch_sizes=(4, 16), max_queue_delay_us=500,
                                        log=None)
    assert model_dir == tmp_path / "tdd"
    assert (model_dir / "1" / "model.onnx").read_bytes() == onnx_path.read_bytes()
    cfg = parse_model_config((model_dir / "config.pbtxt").read_text())
    assert cfg.name == "tdd" and cfg.backend == "onnxruntime" and cfg.max_batch_size == 16
    io = [(t.name, cfg.DESCRIPTOR.file.pool.FindEnumTypeByName("inference.DataType")
           .values_by_number[t.data_type].name, list(t.dims)) for t in [*cfg.input, *cfg.output]]
    assert io == _onnx_io(onnx_path)
    # tiny: video_dim 64, text_dim 32, 5 moment queries; -1 = dynamic video / query length.
    assert io[:4] == [("video", "TYPE_FP32", [-1, 64]), ("video_mask", "TYPE_BOOL", [-1]),
                      ("query", "TYPE_FP32", [-1, 32]), ("query_mask", "TYPE_BOOL", [-1])]
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 16]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    assert len(cfg.instance_group) == 1 and cfg.instance_group[0].count == 1


def test_schema_reads_triton_style_config_and_rejects_unknown_fields():
    text = """
    name: "m"  platform: "onnxruntime_onnx"  max_batch_size: 8
    input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]
    output [ { name: "OUTPUT0" data_type: TYPE_INT64 dims: [ -1, 4 ] } ]
    instance_group [ { count: 2 kind: KIND_CPU } ]
    dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 100 }
    """
    cfg = parse_model_config(text)
    assert cfg.input[0].data_type == DATA_TYPES["TYPE_FP32"] == 11
    assert list(cfg.output[0].dims) == [-1, 4] and cfg.output[0].data_type == 9
    assert cfg.instance_group[0].kind == INSTANCE_KINDS["KIND_CPU"] == 2
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]
    with pytest.raises(text_format.ParseError, match="max_batch"):
        parse_model_config('name: "m" max_batch: 4')
    with pytest.raises(text_format.ParseError):
        parse_model_config('input [ { name: "x" data_type: TYPE_FLOAT32 } ]')


def test_bad_repository_arguments(onnx_path, tmp_path):
    with pytest.raises(InputError, match=r"^preferred_batch_sizes: expected values in 1\.\.8, got \[16\]"):
        write_triton_repository(onnx_path, tmp_path, max_batch_size=8, preferred_batch_sizes=(4, 16),
                                log=None)
    with pytest.raises(InputError, match=r"^kind: expected one of"):
        write_triton_repository(onnx_path, tmp_path, kind="tpu", log=None)


def test_bad_arguments_fail_before_the_export(tmp_path, capsys):
    """From a model (or checkpoint) the export takes seconds: a bad argument is refused first,
    leaving no half-written repository (model.onnx without config.pbtxt)."""
    from tdfast import TDDETR, TDDETRConfig
    from tdfast.cli import main

    model = TDDETR(TDDETRConfig.from_name("tiny"))
    with pytest.raises(InputError, match=r"^max_batch_size: .*got 0"):
        write_triton_repository(model, tmp_path / "a", max_batch_size=0, log=None)
    with pytest.raises(InputError, match=r"^kind: expected one of"):
        write_triton_repository(model, tmp_path / "a", kind="tpu", log=None)
    assert not (tmp_path / "a").exists()
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    assert main(["export", str(ckpt), "--format", "triton-server", "--max-batch", "0",
                 "--out", str(tmp_path / "b")]) == 2
    assert "max_batch: expected an integer >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".hidden", ""])
def test_model_name_cannot_escape_the_repository(onnx_path, tmp_path, capsys, name):
    """``--model-name ../../x`` wrote the model two directories above ``--out``."""
    from tdfast import TDDETR, TDDETRConfig
    from tdfast.cli import main

    out = tmp_path / "a" / "b" / "repo"
    with pytest.raises(InputError, match=r"^model_name: expected a directory name"):
        write_triton_repository(onnx_path, out, model_name=name, log=None)
    ckpt = tmp_path / "ckpt"
    TDDETR(TDDETRConfig.from_name("tiny")).save_pretrained(ckpt)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["export", str(ckpt), "--format", "triton-server", "--model-name", name, "--out", str(out)]) == 2
    assert f"model_name: expected a directory name of letters, digits" in capsys.readouterr().err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written anywhere
