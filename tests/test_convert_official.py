"""Official QD-DETR / TD-DETR checkpoints convert to a tdfast model that computes the official function.

The fixtures in ``tests/fixtures/official`` were made by running the official code
(``tests/fixtures/gen_official.py``, by hand, with the official repositories in a folder
outside this one): a small model of each family with every parameter perturbed, saved in the
official checkpoint format, and its outputs on ragged inputs run one sample at a time.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tdfast import InputError, TDDETR, convert_official
from tdfast.cli import main as cli_main
from tdfast.convert import read_official

FIXTURES = Path(__file__).parent / "fixtures" / "official"
FAMILIES = ("qd_detr", "td_detr")
OUTPUTS = ("pred_spans", "pred_logits")


def official_io(family: str, root: Path = FIXTURES) -> dict[str, torch.Tensor]:
    return load_file(root / f"{family}_io.safetensors")


def max_diffs(model: TDDETR, io: dict[str, torch.Tensor]) -> dict[str, float]:
    """Largest |tdfast - official| per output over the batch (real clips only for saliency)."""
    vmask, qmask = io["video_mask"].bool(), io["query_mask"].bool()
    with torch.no_grad():
        out = model(io["video"], vmask, io["query"], qmask)
    diffs = {k: float((out[k] - io[k]).abs().max()) for k in OUTPUTS}
    diffs["saliency_scores"] = float((out["saliency_scores"] - io["saliency_scores"])[vmask].abs().max())
    return diffs


def read_ckpt(path: Path) -> dict:
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, weights_only=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_cli_convert_equals_the_official_code_batched_and_ragged(family, tmp_path, capsys):
    out = tmp_path / "ckpt"
    assert cli_main(["convert", str(FIXTURES / f"{family}.ckpt"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert ("TD-DETR" if family == "td_detr" else "QD-DETR") in printed and str(out) in printed
    model = TDDETR.from_pretrained(out).eval()
    assert model.config.use_tdem == (family == "td_detr")
    io = official_io(family)
    lengths = io["video_mask"].sum(1).long().tolist()
    assert len(set(lengths)) == len(lengths) > 1  # ragged: every row has its own length
    diffs = max_diffs(model, io)
    assert max(diffs.values()) <= 1e-5, diffs


@pytest.mark.parametrize("family", FAMILIES)
def test_each_sample_alone_unpadded_equals_the_official_outputs(family, tmp_path):
    model = TDDETR.from_pretrained(convert_official(FIXTURES / f"{family}.ckpt", tmp_path / "c")).eval()
    io = official_io(family)
    for i in range(io["video"].shape[0]):
        n, m = int(io["video_mask"][i].sum()), int(io["query_mask"][i].sum())
        with torch.no_grad():
            out = model(io["video"][i:i + 1, :n], torch.ones(1, n, dtype=torch.bool),
                        io["query"][i:i + 1, :m], torch.ones(1, m, dtype=torch.bool))
        for k in OUTPUTS:
            assert (out[k][0] - io[k][i]).abs().max() <= 1e-5, (k, i)
        assert (out["saliency_scores"][0] - io["saliency_scores"][i, :n]).abs().max() <= 1e-5


def test_every_official_tensor_matters_for_the_outputs(tmp_path):
    # The parity above would not notice a tensor that tdfast loads but never uses: zeroing
    # any one of the official tensors (after conversion) must move some output.
    conv = read_official(FIXTURES / "td_detr.ckpt")
    io = official_io("td_detr")
    model = TDDETR(conv.config).eval()
    model.load_state_dict(conv.state_dict)
    base = max_diffs(model, io)
    assert max(base.values()) <= 1e-5
    unused = []
    g = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():
        saved = p.detach().clone()
        with torch.no_grad():  # a random change of every entry, larger than the entries
            p.add_(torch.randn(p.shape, generator=g) * (1.0 + 2 * p.abs()))
        if max(max_diffs(model, io).values()) < 1e-5:  # 10x the float32 noise of the parity
            unused.append(name)
        with torch.no_grad():
            p.copy_(saved)
    # Exactly the tensors the math makes inert, in the official code too: key biases (a
    # constant added to every key shifts each softmax row by a constant) and the first
    # decoder layer's self-attention projections (its input is all zeros, so every value is
    # the same bias vector, whatever the attention weights).
    inert = {n for n, _ in model.named_parameters()
             if n.endswith(("k_proj.bias", "k_content.bias", "k_pos.bias"))
             or (n.startswith("decoder.layers.0.sa_") and not n.startswith(("decoder.layers.0.sa_out",
                                                                            "decoder.layers.0.sa_v.bias")))}
    assert set(unused) == inert, sorted(set(unused) ^ inert)


@pytest.mark.parametrize("family", FAMILIES)
def test_converted_config_comes_from_opt(family):
    conv = read_official(FIXTURES / f"{family}.ckpt")
    opt = vars(read_ckpt(FIXTURES / f"{family}.ckpt")["opt"])
    c = conv.config
    assert c.video_dim == opt["v_feat_dim"] - 2 and c.use_tef  # opt counts the 2 TEF columns
    assert (c.text_dim, c.hidden_dim, c.num_heads, c.ffn_dim) == (
        opt["t_feat_dim"], opt["hidden_dim"], opt["nheads"], opt["dim_feedforward"])
    assert (c.num_td_layers, c.num_encoder_layers, c.num_decoder_layers, c.num_queries) == (
        opt["enc_layers"], opt["enc_layers"], opt["dec_layers"], opt["num_queries"])
    if family == "td_detr":
        assert c.beta == opt["beta"] and c.use_tdem
    assert sorted(conv.unused) == sorted(k for k in read_ckpt(FIXTURES / f"{family}.ckpt")["model"]
                                 if k.startswith("txt_position_embed."))


def write_modified(tmp_path: Path, change) -> Path:
    ckpt = read_ckpt(FIXTURES / "td_detr.ckpt")
    change(ckpt)
    path = tmp_path / "modified.ckpt"
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("change, named", [
    (lambda c: c["model"].__setitem__("transformer.extra_head.weight", torch.zeros(2)),
     "transformer.extra_head.weight"),
    (lambda c: c["model"].pop("transformer.decoder.layers.1.ca_kpos_proj.bias"),
     "decoder.layers.1.ca_k_pos.bias"),
    (lambda c: c["model"].__setitem__("class_embed.weight", torch.zeros(3, 32)), "class_head.weight"),
    (lambda c: c["model"].__setitem__("class_embed.bias", torch.zeros(2, dtype=torch.int32)),
     "class_head.bias"),
    (lambda c: c["opt"].__setattr__("pre_norm", True), "pre_norm"),
    (lambda c: c["opt"].__delattr__("hidden_dim"), "hidden_dim"),
    (lambda c: c.pop("opt"), "argparse.Namespace"),
])
def test_bad_checkpoints_name_what_is_wrong(tmp_path, change, named):
    path = write_modified(tmp_path, change)
    with pytest.raises(InputError) as e:
        convert_official(path, tmp_path / "out")
    assert named in str(e.value) and str(path) in str(e.value)
    assert not (tmp_path / "out").exists()


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused_unexecuted(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"model": {}, "opt": _RunsCode(marker)}, path)
    with pytest.raises(InputError, match="refused as unsafe") as e:
        convert_official(path, tmp_path / "out")
    assert str(path) in str(e.value) and "weights_only=False" not in str(e.value)
    assert not marker.exists()


def test_not_a_checkpoint_and_non_empty_out_are_errors(tmp_path, capsys):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.ckpt"):
        convert_official(junk, tmp_path / "out")
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert cli_main(["convert", str(FIXTURES / "qd_detr.ckpt"), "--out", str(out)]) == 2
    assert "--out" in capsys.readouterr().err and (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


FULL = os.environ.get("TDFAST_OFFICIAL_FULL")


@pytest.mark.skipif(not FULL, reason="set TDFAST_OFFICIAL_FULL to gen_official.py --full's folder")
@pytest.mark.parametrize("family", FAMILIES)
def test_full_size_official_checkpoint(family, tmp_path):
    root = Path(FULL)
    model = TDDETR.from_pretrained(convert_official(root / f"{family}.ckpt", tmp_path / "c")).eval()
    diffs = max_diffs(model, official_io(family, root))
    print(family, diffs)
    assert max(diffs.values()) <= 1e-4, diffs
