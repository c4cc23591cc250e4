"""Checkpoints saved by lighthouse (line/lighthouse) convert without importing easydict.

``tests/fixtures/lighthouse_qd`` was made by ``tests/fixtures/gen_lighthouse.py``, run by hand with
a lighthouse checkout outside this repository: lighthouse's config code (qd_detr /
qvhighlight / clip_slowfast, shrunk), its QD-DETR ``build_model``, every parameter perturbed,
saved by its ``save_checkpoint`` (``opt`` an ``easydict.EasyDict``), and its outputs on
ragged inputs run one sample at a time.
"""
from __future__ import annotations

import sys
import types
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tdfast import InputError, TDDETR
from tdfast.cli import main as cli_main
from tdfast.convert import read_official
from tdfast.toolkits import LIGHTHOUSE_FAMILIES

FIXTURE = Path(__file__).parent / "fixtures" / "lighthouse_qd"


def test_fixture_is_a_real_easydict_pickle():
    # The point of the fixture: its opt is pickled as easydict.EasyDict, not as a Namespace.
    with zipfile.ZipFile(FIXTURE / "qd_detr.ckpt") as z:
        pkl = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    assert b"easydict\nEasyDict" in pkl and b"argparse" not in pkl


def test_cli_convert_equals_lighthouse_outputs_without_importing_easydict(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "easydict", None)  # any import of easydict would now fail
    out = tmp_path / "ckpt"
    assert cli_main(["convert", str(FIXTURE / "qd_detr.ckpt"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "QD-DETR" in printed and "lighthouse" in printed and "191 tdfast tensors" in printed
    model = TDDETR.from_pretrained(out).eval()
    assert not model.config.use_tdem and model.config.video_dim == 14 and model.config.use_tef
    io = load_file(FIXTURE / "qd_detr_io.safetensors")
    vmask, qmask = io["video_mask"].bool(), io["query_mask"].bool()
    assert len(set(vmask.sum(1).tolist())) == 3  # ragged
    with torch.no_grad():
        got = model(io["video"], vmask, io["query"], qmask)
    for k in ("pred_spans", "pred_logits"):
        assert (got[k] - io[k]).abs().max() <= 1e-5, k
    assert (got["saliency_scores"] - io["saliency_scores"])[vmask].abs().max() <= 1e-5


def test_lighthouse_fixed_options_are_filled_in():
    conv = read_official(FIXTURE / "qd_detr.ckpt")
    assert conv.toolkit == "lighthouse" and conv.family == "qd_detr"
    c = conv.config
    assert (c.hidden_dim, c.num_heads, c.ffn_dim, c.num_queries, c.max_video_len, c.clip_len) == (
        16, 2, 24, 5, 20, 2.0)
    assert conv.training.lr == 1e-4 and conv.training.batch_size == 32  # lighthouse's base.yml


class EasyDict(dict):
    """Pickles like easydict.EasyDict: items, then the same values as attributes."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.__dict__.update(kw)


def save_like_lighthouse(path: Path, opt: dict, monkeypatch) -> Path:
    """torch.save a lighthouse-shaped checkpoint whose opt pickles as easydict.EasyDict."""
    module = types.ModuleType("easydict")
    EasyDict.__module__, EasyDict.__qualname__ = "easydict", "EasyDict"
    module.EasyDict = EasyDict
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "easydict", module)
        torch.save({"model": {"class_embed.weight": torch.zeros(2, 16)}, "epoch": 1,
                    "opt": EasyDict(**opt)}, path)
    return path


@pytest.mark.parametrize("model_name", sorted(set(LIGHTHOUSE_FAMILIES) - {"qd_detr"}))
def test_other_lighthouse_families_are_refused_in_one_line_naming_the_family(model_name, tmp_path, monkeypatch):
    path = save_like_lighthouse(tmp_path / "best.ckpt", {"model_name": model_name, "hidden_dim": 256}, monkeypatch)
    with pytest.raises(InputError) as e:
        read_official(path)
    msg = str(e.value)
    assert "\n" not in msg and LIGHTHOUSE_FAMILIES[model_name] in msg and str(path) in msg
    assert f"opt.model_name = {model_name!r}" in msg


def test_audio_lighthouse_qd_detr_and_unknown_dict_opt_are_refused(tmp_path, monkeypatch):
    audio = save_like_lighthouse(tmp_path / "a.ckpt", {"model_name": "qd_detr", "a_feat_dirs": ["pann"]},
                                 monkeypatch)
    with pytest.raises(InputError, match=r"audio features \(opt.a_feat_dirs = \['pann'\]\)"):
        read_official(audio)
    plain = save_like_lighthouse(tmp_path / "p.ckpt", {"hidden_dim": 256}, monkeypatch)
    with pytest.raises(InputError, match="without 'model_name'"):
        read_official(plain)
