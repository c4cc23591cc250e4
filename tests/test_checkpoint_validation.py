"""Hostile or damaged checkpoints: every problem is an InputError naming the file and the field or
tensor, found from config.json and the safetensors header before anything large is allocated."""
from __future__ import annotations

import json
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from tdfast import InputError, TDDETR, TDDETRConfig
from tdfast.model.checkpoint import CONFIG_NAME, WEIGHTS_NAME


@pytest.fixture()
def ckpt(tmp_path):
    TDDETR(TDDETRConfig.from_name("tiny")).save_pretrained(tmp_path / "ckpt")
    return tmp_path / "ckpt"


def edit_config(ckpt, **changes):
    cfg = json.loads((ckpt / CONFIG_NAME).read_text())
    cfg.update(changes)
    (ckpt / CONFIG_NAME).write_text(json.dumps(cfg))


def timed_load(ckpt):
    start = time.perf_counter()
    try:
        TDDETR.from_pretrained(ckpt)
    finally:
        assert time.perf_counter() - start < 10  # bounded work; was 60 s and 10.5 GB for hidden_dim


@pytest.mark.parametrize("field, value", [("hidden_dim", 1024), ("num_encoder_layers", 50),
                                          ("ffn_dim", 4096), ("num_queries", 7), ("video_dim", 128)])
def test_config_sizes_that_disagree_with_the_weights_are_refused_before_allocation(ckpt, field, value):
    edit_config(ckpt, **{field: value})
    with pytest.raises(InputError) as e:
        timed_load(ckpt)
    assert str(e.value).startswith(f"{ckpt / CONFIG_NAME}: ") and field in str(e.value)
    assert "model.safetensors" in str(e.value)


@pytest.mark.parametrize("field, value, limit", [("hidden_dim", 16384, "[1, 8192]"),
                                                 ("num_encoder_layers", 100000, "[0, 64]")])
def test_config_sizes_beyond_the_limits_are_refused_before_reading_the_weights(ckpt, field, value, limit):
    edit_config(ckpt, **{field: value})
    with pytest.raises(InputError) as e:
        timed_load(ckpt)
    assert str(e.value) == f"{ckpt / CONFIG_NAME}: config.{field}: expected a value in {limit}, got {value}"


def test_a_config_missing_a_field_is_refused_not_defaulted(ckpt):
    """Without clip_len the default (2 s) was taken silently and every span shifted."""
    cfg = json.loads((ckpt / CONFIG_NAME).read_text())
    del cfg["clip_len"]
    (ckpt / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(InputError, match=r"config\.json: missing field\(s\) \['clip_len'\]"):
        TDDETR.from_pretrained(ckpt)


def test_saved_config_has_every_field(ckpt):
    import dataclasses

    assert set(json.loads((ckpt / CONFIG_NAME).read_text())) == {f.name for f in dataclasses.fields(TDDETRConfig)}


def test_integer_weights_are_refused(ckpt):
    """int32 weights loaded (cast) and returned spans [[0, 0], ...]."""
    state = load_file(str(ckpt / WEIGHTS_NAME))
    state = {k: v.to(torch.int32) if k == "anchors" else v for k, v in state.items()}
    save_file(state, str(ckpt / WEIGHTS_NAME))
    with pytest.raises(InputError, match=r"model\.safetensors: tensor 'anchors' has dtype I32"):
        TDDETR.from_pretrained(ckpt)


def test_nan_weights_are_refused(ckpt):
    state = load_file(str(ckpt / WEIGHTS_NAME))
    state["anchors"][0, 0] = float("nan")
    save_file(state, str(ckpt / WEIGHTS_NAME))
    with pytest.raises(InputError, match=r"model\.safetensors: tensor 'anchors' holds NaN or inf"):
        TDDETR.from_pretrained(ckpt)


def test_wrong_tensor_shape_names_tensor_and_field(ckpt):
    state = load_file(str(ckpt / WEIGHTS_NAME))
    state["anchors"] = torch.zeros(6, 2)
    save_file(state, str(ckpt / WEIGHTS_NAME))
    with pytest.raises(InputError, match=r"num_queries.*'anchors' has shape \[6, 2\], the config gives \[5, 2\]"):
        TDDETR.from_pretrained(ckpt)


@pytest.mark.parametrize("size", [0, 7, "half"])
def test_truncated_or_empty_weights_name_the_file(ckpt, size):
    data = (ckpt / WEIGHTS_NAME).read_bytes()
    (ckpt / WEIGHTS_NAME).write_bytes(data[: len(data) // 2 if size == "half" else size])
    with pytest.raises(InputError, match=r"model\.safetensors: not a readable safetensors file"):
        TDDETR.from_pretrained(ckpt)


@pytest.mark.parametrize("content, expected", [
    (b"\xff\xfe{", r"config\.json: not UTF-8"),
    (b"[" * 100000 + b"]" * 100000, r"config\.json: JSON nested too deeply"),
    (b"[1, 2]", r"config\.json: expected a JSON object"),
])
def test_unreadable_config_names_the_file(ckpt, content, expected):
    (ckpt / CONFIG_NAME).write_bytes(content)
    with pytest.raises(InputError, match=expected):
        TDDETR.from_pretrained(ckpt)


def test_cuda_without_cuda_is_a_clear_error(ckpt):
    from tdfast.errors import BackendUnavailableError

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(BackendUnavailableError, match=r"device='cuda': no CUDA GPU"):
        TDDETR.from_pretrained(ckpt, device="cuda")


def test_cli_reports_a_damaged_checkpoint_in_one_line(ckpt, tmp_path, capsys):
    from tdfast.cli import main

    (ckpt / WEIGHTS_NAME).write_bytes(b"")
    code = main(["export", str(ckpt), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("tdfast export: error: ") and "\n" not in err
    assert str(ckpt / WEIGHTS_NAME) in err
