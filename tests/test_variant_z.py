"""Issue 29's variant z: time-locked dropout and the dynamics gate of the VSDC strip-look
(docs/fidelity.md, section 5). Both are training-only: the eval network stays the official one."""
from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import random_batch
from fidelity_support import one_thread  # noqa: F401
from tdfast import TDDETR, InputError, TDDETRConfig
from tdfast.data.batch import Batch
from tdfast.experiments.ablation import NAMED_ROWS
from tdfast.model.checkpoint import load_config
from tdfast.model.config import TRAINING_ONLY_FIELDS
from tdfast.model.layers import TimeLockedDropout
from tdfast.training.config import RunConfig
from tdfast.training.vsdc import moment_dynamics_ratio, vsdc


def test_time_locked_dropout_shares_one_mask_over_time_and_rescales():
    torch.manual_seed(0)
    drop = TimeLockedDropout(0.25).train()
    x = torch.ones(64, 9, 16)  # [B, L, D]
    y = drop(x)
    assert y.unique().tolist() == pytest.approx([0.0, 1.0 / 0.75])  # kept entries rescaled by 1 / (1 - p)
    assert torch.equal(y, y[:, :1].expand_as(y))  # the same mask on every clip of a video
    assert not torch.equal(y[0], y[1])  # but one per video
    kept = (y[:, 0] > 0).float().mean().item()  # 1024 Bernoulli(0.75) draws
    assert abs(kept - 0.75) < 0.05
    # a temporal difference of two clips is the masked difference: no dropout noise
    z = torch.randn(4, 9, 16)
    out = drop(z)
    mask = out[:, :1] / z[:, :1]  # [B, 1, D]
    assert torch.allclose(out[:, 1:] - out[:, :-1], (z[:, 1:] - z[:, :-1]) * mask, atol=1e-6)
    drop.eval()
    assert drop(z) is z  # eval: the identity, as nn.Dropout
    assert TimeLockedDropout(0.0).train()(z) is z


def _pair(**sets) -> tuple[TDDETR, TDDETR]:
    """The official tiny network (2 TD layers) and the same weights with ``sets`` switched on."""
    torch.manual_seed(3)
    official = TDDETR(TDDETRConfig.from_name("tiny", num_td_layers=2))
    variant = TDDETR(TDDETRConfig.from_name("tiny", num_td_layers=2, **sets))
    variant.load_state_dict(official.state_dict(), strict=True)  # no parameter added or removed
    return official, variant


def test_time_locked_model_evaluates_as_the_official_network():
    official, locked = _pair(time_locked_dropout=True)
    batch = random_batch(official.config, 3, 20, 7, seed=4)
    with torch.no_grad():
        a, b = official.eval()(*batch), locked.eval()(*batch)
    for key in ("pred_spans", "pred_logits", "saliency_scores"):
        assert torch.equal(a[key], b[key])
    # Which dropouts are locked: those on the clip tokens a temporal difference is taken of
    # (video projection, every TD layer but the last), none after.
    assert isinstance(locked.video_proj[0].dropout, TimeLockedDropout)
    assert isinstance(locked.td_layers[0].ffn.dropout, TimeLockedDropout)
    assert not isinstance(locked.td_layers[1].dropout, TimeLockedDropout)
    assert not isinstance(locked.text_proj[0].dropout, TimeLockedDropout)


def test_time_locked_projection_keeps_identical_clips_identical_in_training():
    nets = [TDDETR(TDDETRConfig.from_name("tiny", input_dropout=0.5, use_tef=False, time_locked_dropout=lock))
            for lock in (False, True)]
    video = torch.randn(2, 1, nets[0].config.video_dim).expand(2, 12, -1)  # every clip the same
    mask = torch.ones(2, 12, dtype=torch.bool)
    torch.manual_seed(0)
    (official, _), (locked, _) = (net.train().project_video(video, mask) for net in nets)  # [B, L, D]
    assert (locked[:, 1:] - locked[:, :-1]).abs().max() < 1e-5  # differences without dropout noise
    assert (official[:, 1:] - official[:, :-1]).abs().max() > 0.1  # independent masks: noise
    assert (locked[0] - locked[1]).abs().max() > 0.1  # one mask per video


def test_config_json_records_time_locked_dropout_and_old_files_read_as_off(tmp_path):
    TDDETR(TDDETRConfig.from_name("tiny", time_locked_dropout=True)).save_pretrained(tmp_path / "z")
    assert json.loads((tmp_path / "z" / "config.json").read_text())["time_locked_dropout"] is True
    assert load_config(tmp_path / "z").time_locked_dropout
    path = tmp_path / "z" / "config.json"
    old = {k: v for k, v in json.loads(path.read_text()).items() if k not in TRAINING_ONLY_FIELDS}
    path.write_text(json.dumps(old))
    assert not load_config(tmp_path / "z").time_locked_dropout
    with pytest.raises(InputError, match="time_locked_dropout"):
        TDDETRConfig.from_name("tiny", time_locked_dropout="yes")


def test_moment_dynamics_ratio_by_hand():
    e = torch.tensor([1.0, 0.0, 0.0])
    alternating = torch.stack([(-1.0) ** t * e for t in range(4)])  # [4, 3]: +e, -e, +e, -e
    drifting = torch.stack([t * e for t in range(4)])  # 0, e, 2e, 3e
    video = torch.stack([alternating, drifting, drifting])  # [3, 4, 3]
    moment = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 0]], dtype=torch.bool)
    ratio = moment_dynamics_ratio(video, moment)
    # alternating: changes ||2e||^2 = 4; spread 4 * 1 / 3 -> 4 / (2 * 4/3) = 1.5
    # drifting: changes 1; spread (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3 -> 1 / (10/3) = 0.3
    # two moment clips: too few to say, 0
    assert ratio.tolist() == pytest.approx([1.5, 0.3, 0.0], abs=1e-6)
    # scale-free: the L2 normalization of features does not move it
    assert moment_dynamics_ratio(7 * video, moment).tolist() == pytest.approx([1.5, 0.3, 0.0], abs=1e-6)
    # clips apart in time are no pair: a moment of clips 0, 2, 3 has one consecutive pair
    split = torch.tensor([[1, 0, 1, 1]], dtype=torch.bool)
    var = ((alternating[[0, 2, 3]] - alternating[[0, 2, 3]].mean(0)) ** 2).sum() / 2
    assert moment_dynamics_ratio(alternating[None], split).item() == pytest.approx(4 / (2 * var.item()))


def _gate_batch() -> Batch:
    """4 rows of 10 clips, moments of 4 clips; row 0's moment alternates, the others drift."""
    b, n, dim = 4, 10, 4
    t = torch.arange(n, dtype=torch.float32)
    video = (1000 * torch.arange(b)[:, None] + t[None])[..., None].repeat(1, 1, dim)  # [B, L, D] ramps
    video[0, 3:7, 0] += 50 * (-1.0) ** t[3:7]  # row 0's moment flips sign on every clip
    gt = torch.zeros(b, n, dtype=torch.bool)
    gt[:, 3:7] = True
    return Batch(video=video, video_mask=torch.ones(b, n, dtype=torch.bool), query=torch.zeros(b, 2, 3),
                 query_mask=torch.ones(b, 2, dtype=torch.bool), spans=[torch.tensor([[0.5, 0.4]])] * b,
                 saliency=gt.float(), gt_clip_mask=gt,
                 meta=[{"qid": i, "query": "q", "vid": f"v{i}", "duration": 20.0, "num_clips": n}
                       for i in range(b)])


def test_strip_gate_strips_only_moments_that_show_dynamics():
    batch = _gate_batch()
    assert (moment_dynamics_ratio(batch.video, batch.gt_clip_mask) > 1.1).tolist() == [True, False, False, False]

    def run(**sets) -> tuple[Batch, torch.Tensor]:
        cfg = RunConfig.from_name("tiny", max_video_len=64, vsdc_moment_in_context=True, **sets)
        g = torch.Generator().manual_seed(7)
        return vsdc(batch, cfg.model, cfg.training, g), g.get_state()

    plain, plain_state = run()
    ungated, ungated_state = run(vsdc_strip_look=1.0)
    gated, gated_state = run(vsdc_strip_look=1.0, vsdc_strip_gate=1.1)
    assert torch.equal(gated_state, ungated_state)  # the gate draws nothing
    anchor = torch.tensor([m["qid"] for m in gated.meta])  # [2B] each row's anchor video
    assert (ungated.video != plain.video).any(-1).any(-1).all()  # p = 1: every moment stripped
    stripped = (gated.video != plain.video).any(-1).any(-1)
    assert stripped.tolist() == (anchor == 0).tolist()  # only the alternating moment
    assert torch.equal(gated.video[anchor == 0], ungated.video[anchor == 0])


@pytest.mark.parametrize("value, message", [
    (-0.5, r"config\.vsdc_strip_gate: expected a value in \[0, inf\], got -0.5"),
    (math.nan, r"config\.vsdc_strip_gate: expected a finite number, got nan"),
])
def test_bad_gate_values_are_refused(value, message):
    with pytest.raises(InputError, match=message):
        RunConfig.from_name("tiny", vsdc_strip_look=0.5, vsdc_strip_gate=value)


def test_gate_without_a_strip_look_is_refused():
    with pytest.raises(InputError, match=r"config\.vsdc_strip_gate: expected 0 without a strip-look.*got 1\.1"):
        RunConfig.from_name("tiny", vsdc_strip_gate=1.1)


def test_rows_z_lock_and_z_are_y_with_locked_dropout_and_the_gate():
    y_with_dropout = {k: v for k, v in NAMED_ROWS["y"].items() if k not in ("dropout", "input_dropout")}
    assert NAMED_ROWS["z-lock"] == {**y_with_dropout, "time_locked_dropout": True}
    assert NAMED_ROWS["z"] == {**NAMED_ROWS["z-lock"], "vsdc_strip_gate": 1.1}
    assert NAMED_ROWS["z-quarter"] == {**NAMED_ROWS["z"], "vsdc_strip_look": 0.25}
    assert NAMED_ROWS["z-f25"] == {**NAMED_ROWS["z"], "vsdc_strip_all_first": 0.25}
    assert NAMED_ROWS["z-m0"] == {**NAMED_ROWS["z"], "w_dyn_match": 0.0}
    z = RunConfig.from_name("tiny").replace(**NAMED_ROWS["z"])
    assert z.model.dropout == 0.1 and z.model.input_dropout == 0.1  # the tiny preset's dropout kept
    assert z.model.time_locked_dropout and z.training.vsdc_strip_gate == 1.1


def test_gate_summary_counts_the_queries_above_each_threshold():
    from tdfast.experiments.strip_gate import gate_summary, main

    s = gate_summary([0.0, 0.9, 1.0, 1.12, 1.3], [1.05, 1.2])
    assert s["queries"] == 5 and s["zero"] == pytest.approx(0.2)
    assert s["above"] == {"1.05": pytest.approx(0.4), "1.2": pytest.approx(0.2)}
    assert s["quantiles"]["0.5"] == pytest.approx(1.0)
    with pytest.raises(InputError, match=r"--data: expected NAME=DIR with DIR/train.jsonl, got 'nowhere'"):
        main(["--data", "nowhere", "--out", "unused"])
    with pytest.raises(InputError, match=r"--thresholds: expected finite numbers >= 0, got '-1'"):
        main(["--data", "x=y", "--thresholds", "-1", "--out", "unused"])


def test_time_locked_model_exports_and_fuses_as_the_official_network(tmp_path, monkeypatch):
    """Eval math unchanged: the ONNX export verifies itself and records the switch; the fused
    kernels take the model (no refusal) and give the eager outputs."""
    from tdfast.export import export_onnx, read_metadata, verify_onnx

    torch.manual_seed(0)
    model = TDDETR(TDDETRConfig.from_name("tiny", time_locked_dropout=True)).eval()
    path = export_onnx(model, tmp_path, log=None)
    assert all(v <= 1e-4 for r in verify_onnx(path, model) for v in r.max_abs.values())
    assert json.loads(read_metadata(path)["config"])["time_locked_dropout"] is True
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    pytest.importorskip("triton")
    from tdfast.kernels import fuse_model

    batch = random_batch(model.config, 2, 9, 5, seed=1)
    with torch.no_grad():
        eager = model(*batch)["pred_spans"]
        fused = fuse_model(model)(*batch)["pred_spans"]
    assert type(model.td_layers[0].cross).__name__ == "FusedTDCrossAttention"
    assert (fused - eager).abs().max() < 1e-4
