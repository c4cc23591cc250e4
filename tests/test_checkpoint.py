"""Checkpoint directories: exact round trip, atomic replacement, clear errors."""
import json

import pytest
import torch

from tdfast import InputError, TDDETR, TDDETRConfig
from tdfast.checkpoint import CONFIG_NAME, WEIGHTS_NAME, atomic_write_dir, save_checkpoint

from conftest import random_batch


def test_round_trip_gives_identical_outputs(tmp_path):
    c = TDDETRConfig.from_name("tiny", beta=0.3)
    model = TDDETR(c).eval()
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    loaded = TDDETR.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == c
    batch = random_batch(c, 2, 9, 4)
    with torch.no_grad():
        a, b = model(*batch), loaded(*batch)
    for k in a:
        assert torch.equal(a[k], b[k])


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path):
    c = TDDETRConfig.from_name("tiny")
    first = TDDETR(c)
    first.save_pretrained(tmp_path / "ckpt")
    before = (tmp_path / "ckpt" / WEIGHTS_NAME).read_bytes()

    def crash(_tmp):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(tmp_path / "ckpt", TDDETR(c), extra=crash)
    assert (tmp_path / "ckpt" / WEIGHTS_NAME).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temp dirs left behind


def test_resave_keeps_unrelated_files_and_recovers_interrupted_swap(tmp_path):
    target = tmp_path / "ckpt"
    atomic_write_dir(target, lambda d: (d / "a.txt").write_text("1"))
    (target / "model.onnx").write_text("cached export")
    atomic_write_dir(target, lambda d: (d / "a.txt").write_text("2"))
    assert (target / "a.txt").read_text() == "2"
    assert (target / "model.onnx").read_text() == "cached export"
    # a crash between the two renames leaves only <dir>.old: loading recovers it
    c = TDDETRConfig.from_name("tiny")
    TDDETR(c).save_pretrained(target)
    target.rename(tmp_path / "ckpt.old")
    assert TDDETR.from_pretrained(target).config == c


def test_missing_or_mismatched_checkpoint_errors(tmp_path):
    with pytest.raises(InputError, match="config.json does not exist"):
        TDDETR.from_pretrained(tmp_path / "nothing")
    c = TDDETRConfig.from_name("tiny")
    TDDETR(c).save_pretrained(tmp_path / "ckpt")
    cfg = json.loads((tmp_path / "ckpt" / CONFIG_NAME).read_text())
    cfg["use_tdem"] = False
    (tmp_path / "ckpt" / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="weights do not fit config.json"):
        TDDETR.from_pretrained(tmp_path / "ckpt")
