"""Command-line failures are one line ``tdfast X: error: ...`` (exit 2) naming the argument or
file, never a traceback; Ctrl-C in training says where the last checkpoint is (exit 130)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tdfast import TDDETR, TDDETRConfig
from tdfast.cli import main
from tdfast.data.synthetic import make_synthetic_dataset
from train_support import start

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn"), seed=5, num_train=16, num_val=0, num_test=0,
                                  max_clips=16)


def one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"tdfast {command}: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def train_argv(data, out, *extra):
    return ["train", "--preset", "tiny", "--train", str(data.train), "--video-feats", *map(str, data.video_dirs),
            "--text-feats", str(data.text_dir), "--out", str(out), "--no-progress", "--set", "batch_size=8",
            *extra]


@pytest.mark.parametrize("value", ["-1", "-1e-9"])
def test_negative_lr_is_refused(data, tmp_path, capsys, value):
    assert main(train_argv(data, tmp_path / "r", "--set", f"lr={value}")) == 2
    assert f"config.lr: expected a value in [0, inf], got {float(value)!r}" in one_line_error(capsys, "train")
    assert not (tmp_path / "r").exists()


def test_a_diverging_run_stops_with_a_clear_message(data, tmp_path, capsys):
    """lr=1e30 trained on with NaN losses (and a traceback-free but useless run); now the first
    non-finite loss stops the run."""
    torch.set_num_threads(1)
    assert main(train_argv(data, tmp_path / "r", "--set", "lr=1e30", "--epochs", "3")) == 2
    err = one_line_error(capsys, "train")
    assert re.search(r"step \d+: (the training loss is nan|the model.s outputs are NaN).*: the run diverged; lower lr \(now 1e\+30\)", err)
    assert "checkpoint" in err


def test_export_opset_out_of_range(tmp_path, capsys):
    TDDETR(TDDETRConfig.from_name("tiny")).save_pretrained(tmp_path / "ckpt")
    assert main(["export", str(tmp_path / "ckpt"), "--out", str(tmp_path / "o"), "--opset", "99"]) == 2
    assert "opset: expected 17 (LayerNormalization) to 22" in one_line_error(capsys, "export")
    assert not (tmp_path / "o" / "model.onnx").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda(tmp_path, capsys):
    assert main(["bench", "--device", "cuda", "--backends", "eager", "--batch", "1", "--out",
                 str(tmp_path / "b.json")]) == 2
    assert "device='cuda': no CUDA GPU" in one_line_error(capsys, "bench")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_kernels.py"), "--device", "cuda"],
                          capture_output=True, text=True, timeout=120)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and "\n" not in err and err.startswith("bench_kernels.py: error: --device cuda")


def test_ctrl_c_during_training_says_where_the_last_checkpoint_is(data, tmp_path):
    out = tmp_path / "r"
    proc = start([sys.executable, "-m", "tdfast", *train_argv(data, out, "--save-every-steps", "1",
                                                               "--epochs", "50")])
    deadline = time.monotonic() + 120
    while not (out / "last" / "train_state.pt").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert lines == [f"tdfast train: interrupted; the last checkpoint is {out / 'last'} (continue with "
                     f"--resume {out})"]


def test_out_of_the_wrong_kind_fails_before_any_work(tmp_path, capsys):
    """``--out`` that is a directory where a file is written (or a file where a directory is)
    failed only after the model was loaded / exported / the data read."""
    a_dir, a_file = tmp_path / "d", tmp_path / "f"
    a_dir.mkdir()
    a_file.write_text("mine")
    missing = str(tmp_path / "no-such-ckpt")  # would fail later: the --out check must come first
    cases = [
        (["predict", missing, "--ann", "a.jsonl", "--video-feats", "v", "--text-feats", "t", "--out", str(a_dir)],
         "predict", "--out", a_dir, "is a directory"),
        (["eval", "--submission", missing, "--gt", missing, "--out", str(a_dir)], "eval", "--out", a_dir,
         "is a directory"),
        (["export", missing, "--out", str(a_file)], "export", "--out", a_file, "is a file"),
        (["demo", "--out", str(a_file)], "demo", "--out", a_file, "is a file"),
        (["bench", "--out", str(a_dir), "--backends", "eager"], "bench", "--out", a_dir, "is a directory"),
    ]
    for argv, command, flag, path, what in cases:
        assert main(argv) == 2, argv
        err = one_line_error(capsys, command)
        assert f"{flag} {str(path)!r}" in err and what in err, err
    assert a_file.read_text() == "mine" and list(a_dir.iterdir()) == []
