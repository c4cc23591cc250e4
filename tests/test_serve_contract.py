"""The served moments model without a server: request parsing, the written repository, and
``tdfast serve``'s message when no server is installed (tests/test_serve_triton.py runs the
real server)."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tdfast import InputError, TDDETRConfig
from tdfast.export.triton_config import parse_model_config
from tdfast.export.triton_contract import pad_request, parse_request, response_arrays
from tdfast.export.triton_python import write_python_model

from conftest import assert_names
from export_support import make_model

CFG = TDDETRConfig.from_name("tiny")


def _parse(arrays):
    return parse_request(arrays, CFG.video_dim, CFG.text_dim, CFG.max_video_len, CFG.max_query_len, 5)


def _request(lengths=((3, 2), (7, 5)), **kw):
    rng = np.random.default_rng(0)
    v = [rng.standard_normal((a, CFG.video_dim)).astype(np.float32) for a, _ in lengths]
    q = [rng.standard_normal((b, CFG.text_dim)).astype(np.float32) for _, b in lengths]
    return v, q, pad_request(v, q, CFG.max_video_len, CFG.max_query_len, **kw)


def test_parse_cuts_each_pair_to_its_true_lengths():
    v, q, arrays = _request(top_k=3, durations=[10.0, 20.5])
    assert arrays["video"].shape == (2, CFG.max_video_len, CFG.video_dim)
    p = _parse(arrays)
    for got, want in zip(p.videos + p.queries, v + q):
        np.testing.assert_array_equal(got, want)
    assert (p.top_k, p.durations, p.padded_video_len) == (3, [10.0, 20.5], CFG.max_video_len)
    assert _parse({k: a for k, a in arrays.items() if k not in ("top_k", "durations")}).top_k == 5


@pytest.mark.parametrize("change, name, parts", [
    (lambda r: r.update(video_lengths=np.array([[0], [7]], np.int32)), "video_lengths[0]", ["1..", "got 0"]),
    (lambda r: r.update(query_lengths=np.array([[2], [CFG.max_query_len + 1]], np.int32)), "query_lengths[1]",
     [f"1..{CFG.max_query_len}", f"got {CFG.max_query_len + 1}"]),
    (lambda r: r.pop("video_lengths"), "video_lengths", ["missing", "INT32 [2, 1]"]),
    (lambda r: r.update(video_lengths=np.array([3, 7], np.int32)), "video_lengths", ["[2, 1]", "[2]"]),
    (lambda r: r.update(query=r["query"][:1]), "query", ["2 rows", "got 1"]),
    (lambda r: r.update(video=r["video"].astype(np.float64)), "video", ["FP32", "float64"]),
    (lambda r: r.update(video=r["video"][..., :-1]), "video", [f"{CFG.video_dim}]", f"{CFG.video_dim - 1}]"]),
    (lambda r: r.update(top_k=np.array([[3], [4]], np.int32)), "top_k", ["one positive value", "[3, 4]"]),
    (lambda r: r.update(durations=np.ones((2,), np.float32)), "durations", ["[2, 1]", "[2]"]),
])
def test_parse_names_the_bad_tensor(change, name, parts):
    _, _, arrays = _request()
    change(arrays)
    with pytest.raises(InputError) as e:
        _parse(arrays)
    assert_names(e.value, name, *parts)


def test_parse_refuses_more_clips_than_the_model_takes():
    _, _, arrays = _request()
    arrays["video"] = np.zeros((2, CFG.max_video_len + 3, CFG.video_dim), np.float32)
    arrays["video_lengths"][1] = CFG.max_video_len + 3
    with pytest.raises(InputError) as e:
        _parse(arrays)
    assert_names(e.value, "video_lengths[1]", f"at most {CFG.max_video_len} clips", f"got {CFG.max_video_len + 3}")


def test_response_pads_saliency_with_zeros():
    out = response_arrays([np.ones((2, 2))] * 2, [np.ones(2)] * 2, [np.arange(1, 4.0), np.arange(1, 6.0)], 8)
    assert out["saliency"].dtype == np.float32
    np.testing.assert_array_equal(out["saliency"], [[1, 2, 3, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 0, 0, 0]])


def test_repository_model_is_self_contained(tmp_path):
    model = make_model("tiny")
    ckpt = model.save_pretrained(tmp_path / "ckpt")
    model_dir = write_python_model(ckpt, tmp_path / "repo", backend="eager", max_batch_size=16,
                                   dynamic_batching=False, instance_count=2, threads=3, top_k=4)
    cfg = parse_model_config((model_dir / "config.pbtxt").read_text())
    assert (cfg.name, cfg.backend, cfg.max_batch_size) == ("tdfast_moments", "python", 16)
    assert not cfg.HasField("dynamic_batching")
    assert [(i.name, list(i.dims), i.optional) for i in cfg.input] == [
        ("video", [-1, CFG.video_dim], False), ("video_lengths", [1], False), ("query", [-1, CFG.text_dim], False),
        ("query_lengths", [1], False), ("top_k", [1], True), ("durations", [1], True)]
    assert [(o.name, list(o.dims)) for o in cfg.output] == [("spans", [-1, 2]), ("scores", [-1]), ("saliency", [-1])]
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert params == {"backend": "eager", "threads": "3", "top_k": "4", "max_video_len": str(CFG.max_video_len),
                      "max_query_len": str(CFG.max_query_len), "clip_len": str(CFG.clip_len)}
    assert (cfg.instance_group[0].count, cfg.instance_group[0].kind) == (2, 2)  # KIND_CPU
    version = model_dir / "1"
    assert (version / "model.safetensors").read_bytes() == (ckpt / "model.safetensors").read_bytes()
    assert "from tdfast.export.triton_backend import TritonPythonModel" in (version / "model.py").read_text()
    text = (write_python_model(ckpt, tmp_path / "repo2", backend="eager") / "config.pbtxt").read_text()
    assert "dynamic_batching {\n}" in text  # on by default, queue delay 0 (the proto default)


@pytest.mark.parametrize("kw, name", [({"backend": "tensorrt"}, "backend"), ({"threads": 0}, "threads"),
                                      ({"max_batch_size": 0}, "max_batch_size"),
                                      ({"model_name": "../x"}, "model_name"),
                                      ({"max_queue_delay_us": -1}, "max_queue_delay_us"),
                                      ({"export_file": "x/model.int8.onnx"}, "export_file")])
def test_repository_options_are_checked_before_writing(tmp_path, kw, name):
    ckpt = make_model("tiny").save_pretrained(tmp_path / "ckpt")
    with pytest.raises(InputError) as e:
        write_python_model(ckpt, tmp_path / "repo", **kw)
    assert_names(e.value, name)
    assert not (tmp_path / "repo").exists()


def test_serve_without_the_server_says_what_to_install(monkeypatch, tmp_path, capsys):
    from tdfast.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pytriton" else real(name, *a))
    ckpt = make_model("tiny").save_pretrained(tmp_path / "ckpt")
    assert main(["serve", str(ckpt)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tdfast serve: error: no Triton Inference Server found") and "tdfast[serve]" in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("kw, name", [({"http_port": 70000}, "http_port"), ({"grpc_port": True}, "grpc_port")])
def test_serve_checks_ports_before_any_export(monkeypatch, tmp_path, kw, name):
    import tdfast.export.serve as serve_module

    monkeypatch.setattr(serve_module, "bundled_server", lambda: None)  # as if installed
    with pytest.raises(InputError) as e:
        serve_module.serve(tmp_path / "no-such-ckpt", tmp_path / "repo", **kw)
    assert_names(e.value, name, "1..65535")
    assert not (tmp_path / "repo").exists()
