"""The opt-in TDEM variant (flow_keep_magnitude, dyn_null_slot): parity with the float64
reference, what each switch changes, and that everything downstream follows or refuses it.
The default network staying the official one is checked by the official fixtures
(tests/test_convert_official.py, tests/test_golden.py)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import random_batch
from tdfast import TDDETR, InputError, TDDETRConfig
from tdfast.experiments.ablation import NAMED_ROWS, plan_rows
from tdfast.model.attention import mask_to_bias
from tdfast.model.checkpoint import load_config
from tdfast.model.config import VARIANT_FIELDS
from tdfast.model.td_interaction import TDCrossAttention, td_interaction_reference
from tdfast.training.config import RunConfig

VARIANTS = [(False, False), (True, False), (False, True), (True, True)]


def _case(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    video, pos = torch.randn(3, 11, 32, generator=g), torch.randn(3, 11, 32, generator=g)
    text = torch.randn(3, 6, 32, generator=g)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2, :5] = False  # not a prefix: one real token, last
    return video, pos, torch.randn(32, generator=g), text, mask


@pytest.mark.parametrize("keep,null", VARIANTS)
def test_layer_matches_float64_reference(keep, null):
    torch.manual_seed(1)
    layer = TDCrossAttention(32, 4, 0.0, True, 0.6, keep, null).eval()
    video, pos, start, text, mask = _case()
    got = layer(video, pos, start, text, mask_to_bias(mask, torch.float32))
    want = td_interaction_reference(video, pos, text, mask, layer.weights(start), 4, 0.6, null)
    assert (got - want).abs().max().item() <= 1e-5
    # The reference really takes the variant's path: the other null setting differs.
    other = td_interaction_reference(video, pos, text, mask, layer.weights(start), 4, 0.6, not null)
    assert (got - other).abs().max().item() > 1e-3


def test_keep_magnitude_lets_the_size_of_a_difference_through():
    """The official first LayerNorm makes flow_proj blind to how much a clip changes (scaling
    T by 4 changes nothing); without it the flow features grow with T."""
    torch.manual_seed(0)
    t = torch.randn(2, 9, 32)
    official = TDCrossAttention(32, 4, 0.0, True, 0.7).eval().flow_proj
    variant = TDCrossAttention(32, 4, 0.0, True, 0.7, flow_keep_magnitude=True).eval().flow_proj
    assert (official(4 * t) - official(t)).abs().max().item() <= 1e-4
    f1, f4 = variant(t), variant(4 * t)
    assert (f4 - f1).abs().max().item() > 0.1


def test_null_slot_gives_nothing_to_a_clip_that_matches_no_token():
    """Keys far below the null slot's score 0: the dynamics attention returns its output bias
    alone (A_t = W_o 0 + b_o), where the official softmax must still average the values."""
    torch.manual_seed(0)
    text = torch.randn(1, 4, 32)
    query = torch.randn(1, 5, 32)
    for null in (False, True):
        layer = TDCrossAttention(32, 4, 0.0, True, 0.7, dyn_null_slot=null).eval()
        attn = layer.attn_dyn
        with torch.no_grad():
            attn.k_proj.weight.zero_()
            attn.k_proj.bias.zero_()
            attn.q_proj.weight.zero_()
            attn.q_proj.bias.fill_(1.0)
            attn.k_proj.bias.fill_(-5.0)  # every head's score: 8 * (1 * -5) / sqrt(8) = -14.1
            out = attn(query, text, text, None)
        gap = (out - attn.out_proj.bias).abs().max().item()
        if null:
            assert gap <= 1e-4
        else:
            want = attn.out_proj(attn.v_proj(text).mean(1, keepdim=True))  # uniform over 4 tokens
            assert (out - want).abs().max().item() <= 1e-5 and gap > 0.05


def test_config_json_records_the_variant_and_old_files_read_as_official(tmp_path):
    config = TDDETRConfig.from_name("tiny", flow_keep_magnitude=True, dyn_null_slot=True)
    model = TDDETR(config).eval()
    model.save_pretrained(tmp_path / "v")
    saved = json.loads((tmp_path / "v" / "config.json").read_text())
    assert saved["flow_keep_magnitude"] is True and saved["dyn_null_slot"] is True
    again = TDDETR.from_pretrained(tmp_path / "v").eval()
    batch = random_batch(config, 3, 20, 7, seed=2)
    with torch.no_grad():
        assert torch.equal(model(*batch)["pred_spans"], again(*batch)["pred_spans"])
    # A config.json from before these fields existed: the official network.
    TDDETR(TDDETRConfig.from_name("tiny")).save_pretrained(tmp_path / "old")
    path = tmp_path / "old" / "config.json"
    old = {k: v for k, v in json.loads(path.read_text()).items() if k not in VARIANT_FIELDS}
    path.write_text(json.dumps(old))
    loaded = load_config(tmp_path / "old")
    assert not loaded.flow_keep_magnitude and not loaded.dyn_null_slot


@pytest.mark.parametrize("name", VARIANT_FIELDS)
def test_variant_without_tdem_is_refused(name):
    with pytest.raises(InputError, match=rf"config\.{name}: expected false with use_tdem=false"):
        TDDETRConfig.from_name("tiny", use_tdem=False, **{name: True})


def test_the_variant_changes_only_the_dynamics_branch_parameters():
    official = TDDETR(TDDETRConfig.from_name("tiny")).state_dict()
    variant = TDDETR(TDDETRConfig.from_name("tiny", flow_keep_magnitude=True, dyn_null_slot=True)).state_dict()
    assert set(official) - set(variant) == {"td_layers.0.cross.flow_proj.0.norm.weight",
                                            "td_layers.0.cross.flow_proj.0.norm.bias"}
    assert set(variant) <= set(official)


def test_ablation_rows_of_the_variant():
    base = RunConfig.from_name("tiny")
    rows = {r.name: r for r in plan_rows(["d", "v", "v-net", "v-vsdc"], base=base)}
    full = RunConfig.from_name("tiny").replace(**rows["v"].overrides)
    assert full.model.flow_keep_magnitude and full.model.dyn_null_slot and full.training.vsdc_moment_in_context
    assert full.model.use_tdem and full.training.use_vsdc
    net = base.replace(**rows["v-net"].overrides)
    assert net.model.dyn_null_slot and not net.training.vsdc_moment_in_context
    assert NAMED_ROWS["v-vsdc"] == {"use_vsdc": True, "use_tdem": True, "vsdc_moment_in_context": True}
    strip = base.replace(**NAMED_ROWS["w"])
    assert strip.training.vsdc_strip_look == 1.0 and strip.training.vsdc_moment_in_context and strip.model.dyn_null_slot
    assert NAMED_ROWS["w-vsdc"] == {**NAMED_ROWS["v-vsdc"], "vsdc_strip_look": 1.0}
    # issue 29's tries on top of x: each differs from x in the named fields only
    for name, diff in {"x-dm4": {"w_dyn_match": 4.0}, "x-b03": {"beta": 0.3},
                       "x-then-half": {"vsdc_strip_look": 0.5, "vsdc_strip_all_first": 0.5},
                       "x-nodrop": {"dropout": 0.0, "input_dropout": 0.0},
                       "y": {"vsdc_strip_look": 0.5, "vsdc_strip_all_first": 0.5, "dropout": 0.0,
                             "input_dropout": 0.0}}.items():
        assert NAMED_ROWS[name] == {**NAMED_ROWS["x"], **diff}
    with pytest.raises(InputError, match=r"--rows: expected names from .*'v-net'.*got 'zz'"):
        plan_rows(["zz"])


def test_onnx_export_of_the_variant_verifies_against_eager(tmp_path):
    """The export checks itself on unseen shapes (it raises otherwise); checked again here, and
    the graph carries the variant: its outputs differ from the official network's."""
    from tdfast.export import export_onnx, read_metadata, verify_onnx

    torch.manual_seed(0)
    model = TDDETR(TDDETRConfig.from_name("tiny", flow_keep_magnitude=True, dyn_null_slot=True)).eval()
    torch.nn.init.normal_(model.span_head.layers[-1].weight, std=0.2)
    path = export_onnx(model, tmp_path, log=None)
    rows = verify_onnx(path, model)
    assert all(v <= 1e-4 for r in rows for v in r.max_abs.values())
    assert json.loads(read_metadata(path)["config"])["dyn_null_slot"] is True
    official = TDDETR(TDDETRConfig.from_name("tiny")).eval()
    official.load_state_dict(model.state_dict(), strict=False)  # same weights, official layer
    batch = random_batch(model.config, 2, 17, 6, seed=4)
    with torch.no_grad():
        assert (model(*batch)["saliency_scores"] - official(*batch)["saliency_scores"]).abs().max() > 1e-3


def test_fused_kernels_refuse_the_variant(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    pytest.importorskip("triton")
    from tdfast.kernels import fuse_model

    model = TDDETR(TDDETRConfig.from_name("tiny", dyn_null_slot=True)).eval()
    with pytest.raises(InputError, match=r"triton backend: the fused TD kernels implement the official "
                                         r"TD layer; expected dyn_null_slot=false .*got true"):
        fuse_model(model)


def test_match_weight_is_one_minus_the_null_slot_weight_by_hand():
    """float64 by hand: per head, p_null = 1 / (1 + sum_j exp(q.k_j / sqrt(Dh))) over real keys."""
    from tdfast.model.attention import MultiHeadAttention

    torch.manual_seed(1)
    attn = MultiHeadAttention(8, 2, null_slot=True).double().eval()
    query, key = torch.randn(2, 3, 8, dtype=torch.float64), torch.randn(2, 4, 8, dtype=torch.float64)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    got = attn.match_weight(query, key, mask_to_bias(mask, torch.float64))  # [2, 3]
    q, k = attn.q_proj(query), attn.k_proj(key)
    for b in range(2):
        for t in range(3):
            p_null = []
            for h in range(2):
                qh, kh = q[b, t, 4 * h:4 * h + 4], k[b, mask[b], 4 * h:4 * h + 4]
                p_null.append(1.0 / (1.0 + torch.exp(kh @ qh / 2.0).sum()))
            assert got[b, t].item() == pytest.approx(1.0 - sum(p_null).item() / 2, abs=1e-9)
    with pytest.raises(ValueError, match="null_slot"):
        MultiHeadAttention(8, 2).match_weight(query.float(), key.float(), None)


def test_dyn_match_loss_by_hand():
    from tdfast.training.losses import LossNorm, dyn_match_loss

    norm = LossNorm(num_samples=2, num_spans=2, num_queries=2)
    match = torch.tensor([[0.9, 0.5, 0.2, 0.7], [0.5, 0.5, 0.5, 0.3]])
    gt = torch.tensor([[True, False, False, False], [False, False, False, False]])
    mask = torch.tensor([[True, True, True, True], [True, True, True, False]])
    got = dyn_match_loss(match, gt, mask, norm).item()
    row0 = 0.5 * -math.log(0.9) + 0.5 * -(math.log(0.5) + math.log(0.8) + math.log(0.3)) / 3
    row1 = -math.log(0.5)  # background only (clip 3 is padding)
    assert got == pytest.approx((row0 + row1) / 2, abs=1e-6)


def test_dyn_match_needs_the_null_slot_and_trains_it(tmp_path):
    from tdfast.data.synthetic import make_synthetic_dataset
    from tdfast.training import TrainData, TrainOptions, train

    data = make_synthetic_dataset(tmp_path / "d", num_train=8, num_val=2, num_test=1)
    paths = TrainData(data.train, data.val, list(data.video_dirs), data.text_dir)
    with pytest.raises(InputError, match=r"w_dyn_match: expected 0 without use_tdem and dyn_null_slot"):
        train(RunConfig.from_name("tiny", w_dyn_match=1.0), paths, TrainOptions(tmp_path / "r0", epochs=1))
    cfg = RunConfig.from_name("tiny", w_dyn_match=1.0, dyn_null_slot=True, batch_size=4)
    train(cfg, paths, TrainOptions(tmp_path / "r1", epochs=1, seed=0))
    logged = [json.loads(line) for line in (tmp_path / "r1" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in logged if r.get("kind") == "train"]
    # a class-balanced BCE of a weight in (0, 1): log 2 at an even split, finite and positive
    assert steps and all(0.05 < r["dyn_match"] < 5.0 for r in steps)
