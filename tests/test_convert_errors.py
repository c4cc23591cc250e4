"""``tdfast convert`` on hostile input and hostile output paths: one line, exit 2, nothing half-made.

Each case here tracebacked, misdescribed the file, or left a partial ``--out`` before.
"""
from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

import pytest
import torch

from tdfast import InputError, TDDETR, convert_official
from tdfast.model.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from tdfast.cli import main as cli_main
from tdfast.commit import KILL_ENV

from limits_support import one_line_error, run_cli_forked, run_tdfast
from test_checkpoint_commit import run_child

FIXTURES = Path(__file__).parent / "fixtures" / "official"
CKPT = FIXTURES / "qd_detr.ckpt"


def cli_error(capsys, args: list[str], *parts: str) -> str:
    """Run the CLI in-process; assert exit 2 and one stderr line naming ``parts``."""
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"tdfast {args[0]}: error: "), err
    for part in parts:
        assert part in err[0], (part, err[0])
    return err[0]


def modified(tmp_path: Path, change) -> Path:
    with torch.serialization.safe_globals([argparse.Namespace]):
        ckpt = torch.load(CKPT, weights_only=True)
    change(ckpt)
    path = tmp_path / "modified.ckpt"
    torch.save(ckpt, path)
    return path


def test_empty_file_says_empty(tmp_path, capsys):
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    cli_error(capsys, ["convert", str(empty), "--out", str(tmp_path / "o")], str(empty), "empty file")


def test_text_file_is_called_not_a_checkpoint_and_nothing_unsafe_is_advised(tmp_path, capsys):
    text = tmp_path / "notes.ckpt"
    text.write_text("epoch 3: loss 0.1\n")
    line = cli_error(capsys, ["convert", str(text), "--out", str(tmp_path / "o")], str(text),
                     "not a PyTorch checkpoint")
    assert "unsafe" not in line and "weights_only" not in line


def test_pickled_objects_name_the_globals_without_escape_codes_or_unsafe_advice(tmp_path, capsys):
    path = modified(tmp_path, lambda c: c.__setitem__("extra", os.system))
    line = cli_error(capsys, ["convert", str(path), "--out", str(tmp_path / "o")], str(path), "system")
    assert "weights_only" not in line and "\x1b" not in line


def test_truncated_checkpoint_says_truncated(tmp_path, capsys):
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(CKPT.read_bytes()[:5000])
    cli_error(capsys, ["convert", str(cut), "--out", str(tmp_path / "o")], str(cut), "truncated")


@pytest.mark.parametrize("name,value", [("max_v_l", "abc"), ("lr", "fast"), ("dropout", None),
                                        ("hidden_dim", 32.5)])
def test_bad_opt_values_name_the_field_and_value(tmp_path, capsys, name, value):
    path = modified(tmp_path, lambda c: setattr(c["opt"], name, value))
    cli_error(capsys, ["convert", str(path), "--out", str(tmp_path / "o")], f"opt.{name} = {value!r}")
    assert not (tmp_path / "o").exists()


def test_layer_counts_are_refused_against_limits_and_tensors_before_building(tmp_path):
    """enc_layers = 10**7 built ten million layers on the meta device first (75 s)."""
    path = modified(tmp_path, lambda c: setattr(c["opt"], "enc_layers", 10 ** 7))
    with pytest.raises(InputError, match=r"config.num_td_layers: expected a value in \[0, 64\], got 10000000"):
        convert_official(path, tmp_path / "o")
    path = modified(tmp_path, lambda c: setattr(c["opt"], "enc_layers", 60))
    with pytest.raises(InputError, match=r"opt.enc_layers = 60, but the checkpoint holds 2"):
        convert_official(path, tmp_path / "o")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_weights_are_refused_naming_the_tensor(tmp_path, capsys, bad):
    def poison(c):
        c["model"]["class_embed.weight"][0, 0] = bad

    path = modified(tmp_path, poison)
    cli_error(capsys, ["convert", str(path), "--out", str(tmp_path / "o")], "class_head.weight", "NaN or inf")
    assert not (tmp_path / "o").exists()


def test_empty_out_is_refused_and_nothing_lands_in_the_current_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli_error(capsys, ["convert", str(CKPT), "--out", ""], "--out", "empty")
    assert list(tmp_path.iterdir()) == []


def test_out_paths_that_cannot_be_written(tmp_path, capsys):
    dangling = tmp_path / "link"
    dangling.symlink_to(tmp_path / "missing")
    cli_error(capsys, ["convert", str(CKPT), "--out", str(dangling)], str(dangling), "symbolic link")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cli_error(capsys, ["convert", str(CKPT), "--out", str(a_file / "sub")], str(a_file / "sub"),
              "Not a directory")
    assert a_file.read_text() == "x" and not (tmp_path / "missing").exists()


def test_unwritable_places_and_a_file_size_limit_give_one_line_and_no_partial_files(tmp_path):
    locked_parent = tmp_path / "ro"
    locked_parent.mkdir(mode=0o555)
    proc = run_tdfast(["convert", str(CKPT), "--out", str(locked_parent / "new")], unprivileged=True)
    one_line_error(proc, "convert", str(locked_parent / "new"), "Permission denied")
    empty_ro = tmp_path / "empty_ro"
    empty_ro.mkdir(mode=0o555)
    proc = run_tdfast(["convert", str(CKPT), "--out", str(empty_ro)], unprivileged=True)
    one_line_error(proc, "convert", str(empty_ro), "Permission denied")
    assert list(empty_ro.iterdir()) == []
    small = tmp_path / "small"
    proc = run_cli_forked(["convert", str(CKPT), "--out", str(small)], fsize_bytes=50 * 1024)
    one_line_error(proc, "convert", str(small / WEIGHTS_NAME), "File too large")
    assert list(small.iterdir()) == []  # staged files removed; a rerun proceeds
    assert cli_main(["convert", str(CKPT), "--out", str(small)]) == 0


@pytest.mark.parametrize("point,whole", [("staged", False), ("journal", True),
                                         (f"renamed:{WEIGHTS_NAME}", True)])
def test_a_killed_convert_leaves_a_whole_checkpoint_or_a_rerunnable_out(tmp_path, capsys, point, whole):
    out = tmp_path / "out"
    status = run_child(lambda: cli_main(["convert", str(CKPT), "--out", str(out)]), env={KILL_ENV: point})
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    if whole:
        assert TDDETR.from_pretrained(out).config.num_queries > 0
        assert sorted(p.name for p in out.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
        cli_error(capsys, ["convert", str(CKPT), "--out", str(out)], "not an empty directory")
    else:
        assert cli_main(["convert", str(CKPT), "--out", str(out)]) == 0
        assert sorted(p.name for p in out.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
