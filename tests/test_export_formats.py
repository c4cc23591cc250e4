"""The format table, the cached export inside a checkpoint, and the two command lines.

These use the TorchScript exporter (10x faster to run than dynamo on 2 cores); the dynamo
default is covered by test_export_onnx.py.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from tdfast import InputError, TDDETR, TDDETRConfig
from tdfast.cli import main as tdfast_main
from tdfast.export import FORMATS, OrtRunner, ensure_export, export, export_onnx, read_metadata
from tdfast.export.__main__ import main as module_main
from tdfast.export.onnx_export import file_sha256
from tdfast.export.verify import eager_outputs
from tdfast.export.wrapper import random_inputs


def _ckpt(path, seed):
    torch.manual_seed(seed)
    model = TDDETR(TDDETRConfig.from_name("tiny"))
    torch.nn.init.normal_(model.span_head.layers[-1].weight, std=0.2)
    model.save_pretrained(path)
    return model.eval()


def test_a_misspelt_export_option_is_an_error_naming_it(tmp_path):
    # It used to vanish into **_ and the export ran with the default.
    with pytest.raises(InputError, match=r"unknown \['max_bacth'\]"):
        export(tmp_path / "ckpt", "tensorrt", tmp_path / "out", max_bacth=8)
    with pytest.raises(InputError, match=r"unknown \['opst'\]"):
        ensure_export(tmp_path / "ckpt", "onnx", opst=17)
    assert not (tmp_path / "out").exists()


def test_cli_lists_the_format_table_without_importing_torch(capsys):
    code = ("import sys; from tdfast.cli import build_parser; build_parser(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # `tdfast --help` stays instant
    with pytest.raises(SystemExit):
        tdfast_main(["export", "ckpt", "--out", "x", "--format", "onnx-int4"])
    err = capsys.readouterr().err
    assert "invalid choice: 'onnx-int4'" in err and all(name in err for name in FORMATS)


def test_ensure_export_caches_and_refreshes_on_new_weights(tmp_path):
    ckpt = tmp_path / "ckpt"
    model = _ckpt(ckpt, seed=0)
    path = ensure_export(ckpt, "onnx", exporter="torchscript")
    assert path == ckpt / "model.onnx"
    assert read_metadata(path)["weights_sha256"] == file_sha256(ckpt / "model.safetensors")
    stamp = path.stat().st_mtime_ns
    cached = ensure_export(ckpt, "onnx", exporter="torchscript")
    assert cached == path and path.stat().st_mtime_ns == stamp  # not re-exported

    new = _ckpt(ckpt, seed=1)  # re-save: the cached model.onnx survives but is now stale
    assert path.is_file()
    x = random_inputs(new.config, 2, 9, 4, seed=3)
    stale = OrtRunner(path)(*x)["pred_logits"]
    assert np.abs(stale - eager_outputs(new, x)["pred_logits"]).max() > 1e-3
    path = ensure_export(ckpt, "onnx", exporter="torchscript")
    np.testing.assert_allclose(OrtRunner(path)(*x)["pred_logits"], eager_outputs(new, x)["pred_logits"],
                               atol=1e-4, rtol=0)
    assert not (ckpt / "model.unverified.onnx").exists()
    del model

    # A derived format reuses the fresh cached model.onnx instead of exporting again.
    stamp = path.stat().st_mtime_ns
    int8 = ensure_export(ckpt, "onnx-int8", exporter="torchscript")
    assert int8 == ckpt / "model.int8.onnx" and path.stat().st_mtime_ns == stamp
    meta = read_metadata(int8)
    assert meta["weights_sha256"] == file_sha256(ckpt / "model.safetensors")
    assert meta["precision"] == "int8-dynamic"
    record = json.loads(meta["verification"])  # its own (lossy) parity, not the fp32 graph's
    assert record["atol"] is None and max(record["max_abs"].values()) > 1e-4  # really quantized
    bound = {"pred_spans": 1e-2, "pred_logits": 5e-2, "saliency_scores": 5e-2}  # as test_export_onnx's int8 test
    assert all(record["max_abs"][k] <= bound[k] for k in bound), record["max_abs"]


def test_ensure_export_errors(tmp_path):
    with pytest.raises(InputError, match="config.json"):
        ensure_export(tmp_path / "nope", "onnx")
    with pytest.raises(InputError, match=r"^format: expected one of .*got 'onnx-int4'"):
        ensure_export(tmp_path, "onnx-int4")


def test_cli_export_onnx_prints_summary(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    _ckpt(ckpt, seed=0)
    out = tmp_path / "out"
    assert tdfast_main(["export", str(ckpt), "--format", "onnx", "--out", str(out),
                       "--exporter", "torchscript"]) == 0
    text = capsys.readouterr().out
    assert (out / "model.onnx").is_file()
    assert "pred_spans" in text and " ok" in text and "BAD" not in text  # the parity table
    assert "export: graph traced (" in text and "nodes, dynamic B/L/M, onnx.checker ok)" in text
    summary = text[text.index("summary (onnx):"):].splitlines()
    size = (out / "model.onnx").stat().st_size / 2**20
    assert summary[1] == f"  {size:9.2f} MiB  {out / 'model.onnx'}"
    assert summary[2].strip().startswith("fp32, opset 18, torchscript exporter; vs eager on 3 unseen "
                                         "shapes: worst max|diff| ")
    assert summary[2].endswith("(tolerance 0.0001), top-1 12/12, no NaN: ok")
    assert float(summary[2].split("max|diff| ")[1].split()[0]) <= 1e-4
    assert summary[3] == f"artifact: {out / 'model.onnx'}"


def test_module_cli_writes_triton_repository(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    _ckpt(ckpt, seed=0)
    out = tmp_path / "repo"
    assert module_main([str(ckpt), "--format", "triton-server", "--out", str(out), "--max-batch", "8",
                        "--exporter", "torchscript"]) == 0
    cfg = (out / "tdfast_tddetr" / "config.pbtxt").read_text()
    assert "max_batch_size: 8" in cfg and "preferred_batch_size: 4" in cfg
    assert read_metadata(out / "tdfast_tddetr" / "1" / "model.onnx")["exporter"] == "torchscript"
    text = capsys.readouterr().out
    assert ("Triton onnxruntime model 'tdfast_tddetr': max_batch_size 8, 4 inputs, 3 outputs, "
            "dynamic batching [2, 4, 8]") in text
    # beside it, the Python-backend moments model serving the same verified graph
    moments = out / "tdfast_tddetr_moments"
    assert (moments / "1" / "model.onnx").read_bytes() == (out / "tdfast_tddetr" / "1" / "model.onnx").read_bytes()
    assert (moments / "1" / "model.safetensors").read_bytes() == (ckpt / "model.safetensors").read_bytes()
    assert ("Triton python model 'tdfast_tddetr_moments': max_batch_size 8, 6 inputs, 3 outputs, "
            "dynamic batching on") in text


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed")
def test_cli_tensorrt_without_tensorrt_fails_cleanly(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    _ckpt(ckpt, seed=0)
    assert tdfast_main(["export", str(ckpt), "--format", "tensorrt", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tdfast export: error: TensorRT is not installed: pip install tensorrt")
    assert not (tmp_path / "o" / "model.onnx").exists()  # failed before spending time on export


def test_cli_verification_failure_is_exit_code_1(tmp_path, capsys, monkeypatch):
    from tdfast.export.verify import ExportVerificationError

    ckpt = tmp_path / "ckpt"
    _ckpt(ckpt, seed=0)

    def broken(*args, **kwargs):
        raise ExportVerificationError("ONNX model x does not match eager PyTorch (table)")

    monkeypatch.setattr("tdfast.export.verify.verify_onnx", broken)
    out = tmp_path / "out"
    assert tdfast_main(["export", str(ckpt), "--out", str(out), "--exporter", "torchscript"]) == 1
    err = capsys.readouterr().err
    # what failed (the verifier's own table), that nothing was replaced, and where the graph is
    assert err.startswith("tdfast export: verification FAILED: ONNX model x does not match eager PyTorch (table)")
    assert "*.unverified.onnx" in err and str(out) in err
    assert sorted(p.name for p in out.iterdir()) == ["model.unverified.onnx"]


RACE_CHILD = """
import os, sys, time
from pathlib import Path
import tdfast.export.verify as verify
from tdfast.export import ensure_export

barrier = Path(sys.argv[2])
real = verify.verify_onnx

def verify_when_all_staged(*args, **kwargs):
    # every process has written its staged graph before any verifies: the overlap of a real race
    (barrier / str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(list(barrier.iterdir())) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    return real(*args, **kwargs)

verify.verify_onnx = verify_when_all_staged
print(ensure_export(sys.argv[1], "onnx", exporter="torchscript"))
"""


@pytest.mark.slow  # three processes importing torch and exporting: ~20-40 s on 2 cores
def test_concurrent_first_exports_of_one_checkpoint_all_succeed(tmp_path):
    """Three processes opening one fresh checkpoint staged on one fixed name
    (model.unverified.onnx): each removed the others' file and two died."""
    import os
    import subprocess
    import sys

    ckpt = tmp_path / "ckpt"
    _ckpt(ckpt, seed=0)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", RACE_CHILD, str(ckpt), str(barrier)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(3)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in results]
    assert {out.strip() for out, _ in results} == {str(ckpt / "model.onnx")}
    assert read_metadata(ckpt / "model.onnx")["weights_sha256"] == file_sha256(ckpt / "model.safetensors")
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.json", "model.onnx", "model.safetensors"]


def test_read_only_checkpoint_exports_to_the_user_cache(tmp_path, monkeypatch):
    """A read-only checkpoint directory failed after the whole export (10 s); now the export goes
    to $XDG_CACHE_HOME/tdfast/<weights sha256[:16]>/ and the checkpoint is not touched."""
    import stat

    import tdfast.export.formats as formats

    ckpt = tmp_path / "ckpt"
    model = _ckpt(ckpt, seed=0)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    ckpt.chmod(0o555)
    try:
        if os.geteuid() == 0:  # root writes anyway: let the writability probe see what a user would
            monkeypatch.setattr(formats, "is_writable_dir", lambda d: d != ckpt)
        path = ensure_export(ckpt, "onnx", exporter="torchscript")
    finally:
        ckpt.chmod(stat.S_IRWXU)
    sha = file_sha256(ckpt / "model.safetensors")
    assert path == tmp_path / "cache" / "tdfast" / sha[:16] / "model.onnx"
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.json", "model.safetensors"]
    x = random_inputs(model.config, 2, 9, 4, seed=3)
    np.testing.assert_allclose(OrtRunner(path)(*x)["pred_spans"], eager_outputs(model, x)["pred_spans"],
                               atol=1e-4, rtol=0)
    stamp = path.stat().st_mtime_ns
    if os.geteuid() == 0:
        monkeypatch.setattr(formats, "is_writable_dir", lambda d: d != ckpt)
    assert ensure_export(ckpt, "onnx", exporter="torchscript") == path and path.stat().st_mtime_ns == stamp


def test_a_killed_exports_staged_file_is_removed_a_live_ones_kept(tmp_path):
    import subprocess
    import sys

    ckpt = tmp_path / "ckpt"
    _ckpt(ckpt, seed=0)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead_file = ckpt / f".model.onnx.tdfast-tmp-{proc.pid}-0a1b2c3d"
        live_file = ckpt / f".model.onnx.tdfast-tmp-{live.pid}-0a1b2c3d"
        dead_file.write_bytes(b"half an export")
        live_file.write_bytes(b"being written")
        ensure_export(ckpt, "onnx", exporter="torchscript")
        assert not dead_file.exists() and live_file.read_bytes() == b"being written"
    finally:
        live.kill()
        live.wait()


def test_ensure_export_rebuilds_artifacts_of_an_earlier_graph_recipe(tmp_path):
    """Same weights, older graph builder (or another int8 keep list): rebuilt, not reused."""
    from tdfast.export.onnx_export import GRAPH_RECIPE, add_metadata

    ckpt = tmp_path / "ckpt"
    _ckpt(ckpt, seed=0)
    path = ensure_export(ckpt, "onnx", exporter="torchscript")
    assert read_metadata(path)["graph_recipe"] == str(GRAPH_RECIPE)
    add_metadata(path, {"graph_recipe": str(GRAPH_RECIPE - 1)})
    stamp = path.stat().st_mtime_ns
    assert ensure_export(ckpt, "onnx", exporter="torchscript") == path
    assert path.stat().st_mtime_ns != stamp and read_metadata(path)["graph_recipe"] == str(GRAPH_RECIPE)
    int8 = ensure_export(ckpt, "onnx-int8", exporter="torchscript")
    add_metadata(int8, {"int8_keep_fp32": "decoder"})
    stamp = int8.stat().st_mtime_ns
    ensure_export(ckpt, "onnx-int8", exporter="torchscript")
    assert int8.stat().st_mtime_ns != stamp


def test_weights_replaced_during_export_are_an_input_error(tmp_path, monkeypatch):
    """A trainer saving into the checkpoint while it is exported: the graph (old weights)
    must not be stored under the new weights' hash, where ensure_export would trust it."""
    import tdfast.export.onnx_export as onnx_export

    ckpt = tmp_path / "ckpt"
    _ckpt(ckpt, seed=0)
    load = onnx_export.load_model

    def load_then_overwrite(src):
        out = load(src)
        _ckpt(ckpt, seed=1)  # the new best model lands after the old one was read
        return out

    monkeypatch.setattr(onnx_export, "load_model", load_then_overwrite)
    with pytest.raises(InputError, match="model.safetensors changed"):
        export_onnx(ckpt, tmp_path / "out", exporter="torchscript", verify=False, log=None)
    assert not (tmp_path / "out" / "model.onnx").exists()
