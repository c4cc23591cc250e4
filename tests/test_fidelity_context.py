"""Where the context shortcut survives and how it is broken: VSDC's opt-in moment-in-context
layout (GT content, neighbours, order, windows), the batch audit on planted data, the
branch probes (zeroed branches, clip kinds) and the shift table."""
from __future__ import annotations

import pytest
import torch

from fidelity_support import one_thread  # noqa: F401
from tdfast.data.batch import Batch
from tdfast.data.synthetic import make_synthetic_dataset
from tdfast.errors import InputError
from tdfast.experiments.branches import clip_kinds, zero_branches
from tdfast.experiments.shortcut import shift_table
from tdfast.experiments.vsdc_audit import audit_batches
from tdfast.model.config import TDDETRConfig
from tdfast.training.config import RunConfig
from tdfast.model.tddetr import TDDETR
from tdfast.spans import cxw_to_xx
from tdfast.training.vsdc import strip_look_probability, strip_moment_look, synthesize, vsdc


def _batch(lengths: list[int], windows: list[tuple[int, int]], dim: int = 4) -> Batch:
    """Clip j of row i holds the value 1000 i + j in every column (so a clip names its origin)."""
    b, n = len(lengths), max(lengths)
    mask = torch.arange(n)[None] < torch.tensor(lengths)[:, None]
    ids = (1000 * torch.arange(b)[:, None] + torch.arange(n)[None]).float()
    video = ids[..., None].expand(b, n, dim) * mask[..., None]
    gt = torch.zeros(b, n, dtype=torch.bool)
    spans = []
    for i, (st, ed) in enumerate(windows):
        gt[i, st:ed] = True
        spans.append(torch.tensor([[(st + ed) / 2 / lengths[i], (ed - st) / lengths[i]]]))
    return Batch(video=video, video_mask=mask, query=torch.zeros(b, 2, 3),
                 query_mask=torch.ones(b, 2, dtype=torch.bool), spans=spans, saliency=gt.float(),
                 gt_clip_mask=gt,
                 meta=[{"qid": i, "query": "q", "vid": f"v{i}", "duration": 2.0 * L, "num_clips": L}
                       for i, L in enumerate(lengths)])


@pytest.mark.parametrize("slot, first", [(0.0, False), (0.5, False), (0.99, True), (0.3, True)])
def test_moment_in_context_puts_the_gt_between_partner_clips(slot, first):
    batch = _batch([12, 10], [(4, 7), (2, 5)])
    g = torch.Generator().manual_seed(3)
    u = torch.rand(2, 1, 12, generator=g)
    kw = dict(alpha=0.6, max_len=64, clip_len=2.0, context_first=torch.tensor([first]))
    anchors, contexts = torch.tensor([0]), torch.tensor([1])
    off = synthesize(batch, anchors, contexts, u[0], u[1], **kw)
    on = synthesize(batch, anchors, contexts, u[0], u[1], **kw, moment_slot=torch.tensor([slot]))
    n = int(on.video_mask.sum())
    assert n == int(off.video_mask.sum())  # same clips, another order
    ids = on.video[0, :n, 0].long().tolist()
    assert sorted(ids) == sorted(off.video[0, :n, 0].long().tolist())
    anchor = [j for j in ids if j < 1000]
    partner = [j - 1000 for j in ids if j >= 1000]
    n_c = len(partner)
    gt_at = [k for k, j in enumerate(ids) if 4 <= j < 7]
    assert [ids[k] for k in gt_at] == [4, 5, 6] and gt_at == list(range(gt_at[0], gt_at[0] + 3))
    rest = [j for j in anchor if not 4 <= j < 7]
    assert rest == sorted(rest) and partner == sorted(partner)
    before = int(slot * (n_c + 1))  # partner clips in front of the moment
    block = ids[len(rest):] if first else ids[:n - len(rest)]  # the partner block holding the GT
    assert [j for j in (ids[:len(rest)] if first else ids[n - len(rest):])] == rest
    assert block[before:before + 3] == [4, 5, 6]
    neighbours = [ids[k] for k in (gt_at[0] - 1, gt_at[-1] + 1) if 0 <= k < n]
    own_rest = [j for j in neighbours if j < 1000]  # an anchor clip may only touch the moment
    assert len(own_rest) <= 1 and (not own_rest or before in (0, n_c))  # at a block edge
    # labels follow the GT clips; the window points at them
    assert on.gt_clip_mask[0, :n].nonzero().flatten().tolist() == gt_at
    assert on.saliency[0, :n].nonzero().flatten().tolist() == gt_at
    xx = cxw_to_xx(on.spans[0].double()) * n
    assert xx[0].tolist() == pytest.approx([gt_at[0], gt_at[-1] + 1], abs=1e-4)


def test_option_off_draws_nothing_more_and_on_draws_one_slot_per_row():
    batch = _batch([12, 10, 9, 11], [(4, 7), (2, 5), (0, 3), (8, 11)])
    for on, extra in ((False, 0), (True, 8)):
        cfg = RunConfig.from_name("tiny", vsdc_moment_in_context=on, max_video_len=64)
        g, ref = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        vsdc(batch, cfg.model, cfg.training, g)
        torch.rand(2, 8, 12, generator=ref)
        if extra:
            torch.rand(extra, generator=ref)
        assert torch.equal(g.get_state(), ref.get_state())


@pytest.mark.parametrize("slot", [None, 0.4])
def test_strip_look_gives_the_moment_its_context_look_and_keeps_its_differences(slot):
    batch = _batch([12, 10], [(4, 7), (2, 5)])
    g = torch.Generator().manual_seed(3)
    u = torch.rand(2, 1, 12, generator=g)
    kw = dict(alpha=0.6, max_len=64, clip_len=2.0, context_first=torch.tensor([False]),
              moment_slot=None if slot is None else torch.tensor([slot]))
    anchors, contexts = torch.tensor([0]), torch.tensor([1])
    off = synthesize(batch, anchors, contexts, u[0], u[1], **kw)
    on = synthesize(batch, anchors, contexts, u[0], u[1], **kw, strip_look=torch.tensor([True]))
    none = synthesize(batch, anchors, contexts, u[0], u[1], **kw, strip_look=torch.tensor([False]))
    assert torch.equal(none.video, off.video)
    n = int(off.video_mask.sum())
    ids = off.video[0, :n, 0].long().tolist()
    gt = [k for k, j in enumerate(ids) if 4 <= j < 7]  # the moment: anchor clips 4, 5, 6
    partner = [j for j in ids if j >= 1000]
    # the moment's mean is now the partner clips' mean; its differences are unchanged:
    # clips 4, 5, 6 -> 4 + s, 5 + s, 6 + s with s = mean(partner) - 5
    shift = sum(partner) / len(partner) - 5.0
    expected = torch.tensor([4.0, 5.0, 6.0])[:, None].expand(3, 4) + shift
    torch.testing.assert_close(on.video[0, gt, :], expected)
    rest = [k for k in range(on.video.shape[1]) if k not in gt]
    assert torch.equal(on.video[0, rest], off.video[0, rest])  # padding and other clips kept
    for key in ("video_mask", "saliency", "gt_clip_mask"):
        assert torch.equal(getattr(on, key), getattr(off, key))
    torch.testing.assert_close(on.spans[0], off.spans[0])


def test_strip_look_leaves_rows_without_context_or_moment():
    video = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)  # [P=2, L=4, D=3]
    moment = torch.tensor([[False, True, True, False], [False, False, False, False]])
    context = torch.tensor([[False, False, False, False], [True, True, False, False]])
    assert torch.equal(strip_moment_look(video, moment, context), video)
    context[0, 3] = True  # one context clip: row 0's moment (clips 1, 2) moves to its look
    out = strip_moment_look(video, moment, context)
    torch.testing.assert_close(out[0, 1:3].mean(0), video[0, 3])
    torch.testing.assert_close(out[0, 2] - out[0, 1], video[0, 2] - video[0, 1])
    assert torch.equal(out[1], video[1]) and torch.equal(out[0, [0, 3]], video[0, [0, 3]])


def test_strip_look_draws_one_number_per_row_after_the_official_draws():
    batch = _batch([12, 10, 9, 11], [(4, 7), (2, 5), (0, 3), (8, 11)])
    outs = {}
    for p in (0.0, 0.5, 1.0):
        cfg = RunConfig.from_name("tiny", vsdc_strip_look=p, max_video_len=64)
        g, ref = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        outs[p] = vsdc(batch, cfg.model, cfg.training, g)
        torch.rand(2, 8, 12, generator=ref)
        expected = torch.rand(8, generator=ref) < p if p else None  # [2B] the stripped rows
        assert torch.equal(g.get_state(), ref.get_state())
        if expected is None:
            continue
        changed = (outs[p].video != outs[0.0].video).any(-1)  # [2B, L']
        assert not (changed & ~outs[0.0].gt_clip_mask).any()  # only moment clips move
        assert changed.any(1).tolist() == expected.tolist()
    with pytest.raises(InputError, match="vsdc_strip_look"):
        RunConfig.from_name("tiny", vsdc_strip_look=1.5)


def test_strip_look_schedule_strips_every_sample_first_then_p():
    sched = RunConfig.from_name("tiny", vsdc_strip_look=0.5, vsdc_strip_all_first=0.5).training
    assert [strip_look_probability(sched, e / 4) for e in range(4)] == [1.0, 1.0, 0.5, 0.5]
    flat = RunConfig.from_name("tiny", vsdc_strip_look=0.5).training
    assert [strip_look_probability(flat, e / 4) for e in range(4)] == [0.5] * 4
    only_first = RunConfig.from_name("tiny", vsdc_strip_all_first=0.25).training  # then no stripping
    assert [strip_look_probability(only_first, e / 4) for e in range(4)] == [1.0, 0.0, 0.0, 0.0]
    with pytest.raises(InputError, match="vsdc_strip_all_first"):
        RunConfig.from_name("tiny", vsdc_strip_all_first=-0.1)


@pytest.mark.parametrize("done", [0.2, 0.6])
def test_vsdc_follows_the_schedule(done):
    batch = _batch([12, 10, 9, 11], [(4, 7), (2, 5), (0, 3), (8, 11)])

    def run(done: float, **sets) -> tuple[Batch, torch.Tensor]:
        cfg = RunConfig.from_name("tiny", max_video_len=64, **sets)
        g = torch.Generator().manual_seed(5)
        return vsdc(batch, cfg.model, cfg.training, g, done), g.get_state()

    sched, sched_state = run(done, vsdc_strip_look=0.5, vsdc_strip_all_first=0.5)
    same, same_state = run(0.0, vsdc_strip_look=1.0 if done < 0.5 else 0.5)  # the constant p of that epoch
    assert torch.equal(sched.video, same.video) and torch.equal(sched_state, same_state)
    stripped = (sched.video != run(0.0)[0].video).any(-1).any(-1)  # [2B] rows whose moment moved
    assert stripped.all() if done < 0.5 else 0 < int(stripped.sum()) < 8
    # p falls to 0 after the first part: nothing stripped, but the draw is still made
    late, late_state = run(done, vsdc_strip_all_first=0.5)
    official, official_state = run(0.0)
    assert torch.equal(late.video, official.video) == (done >= 0.5)
    assert not torch.equal(late_state, official_state)


def test_trainer_passes_the_fraction_of_epochs_done(tmp_path, monkeypatch):
    import tdfast.training.trainer as trainer
    from tdfast.training import TrainData, TrainOptions, train

    seen = []

    def spy(*args, **kwargs):
        seen.append(args[4])
        return real(*args, **kwargs)

    real = trainer.prepare_batch
    monkeypatch.setattr(trainer, "prepare_batch", spy)
    data = make_synthetic_dataset(tmp_path / "d", num_train=8, num_val=2, num_test=1)
    cfg = RunConfig.from_name("tiny", batch_size=4, vsdc_strip_look=0.5, vsdc_strip_all_first=0.5)
    train(cfg, TrainData(data.train, data.val, list(data.video_dirs), data.text_dir),
          TrainOptions(tmp_path / "r", epochs=4, seed=0))
    per_epoch = len(seen) // 4
    assert per_epoch >= 2 and seen == [e / 4 for e in range(4) for _ in range(per_epoch)]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("ctx"), num_train=48, num_val=2, num_test=2,
                                  spurious=1.0, signal=0.5, context_signal=1.5)


def test_audit_finds_the_shortcut_and_the_layout_breaks_it(planted):
    base = RunConfig.from_name("tiny", batch_size=16)
    plain = audit_batches(planted.root, base.override(["use_vsdc=false"]))
    assert plain["rows"] > 40 and plain["flank_side_ctx"] == 100.0 and plain["rows_stray_ctx"] == 0.0
    official = audit_batches(planted.root, base.override(["use_vsdc=true"]))
    # alpha 0.7 keeps a flanking context clip with 1 - 0.3^2 = 0.91 per side
    assert 75.0 < official["flank_side_ctx"] < 98.0 and official["rows"] == 2 * plain["rows"]
    moved = audit_batches(planted.root, base.override(["use_vsdc=true", "vsdc_moment_in_context=true"]))
    assert moved["flank_side_ctx"] < 40.0 and moved["rows_stray_ctx"] > 80.0


def test_zeroed_branches_leave_the_other_terms_and_are_removed():
    torch.manual_seed(0)
    model = TDDETR(TDDETRConfig.from_name("tiny")).eval()
    cross = model.td_layers[0].cross
    g = torch.Generator().manual_seed(1)
    video, pos, text = (torch.randn(2, 7, 32, generator=g), torch.randn(2, 7, 32, generator=g),
                        torch.randn(2, 4, 32, generator=g))
    bias = torch.zeros(2, 1, 1, 4)
    with torch.no_grad():
        full = cross(video, pos, model.start_token, text, bias)
        a_v = cross.attn(video + pos, text, text, bias)
        with zero_branches(model, ("attn_dyn",)):
            no_t = cross(video, pos, model.start_token, text, bias)
        with zero_branches(model, ("attn",)):
            no_v = cross(video, pos, model.start_token, text, bias)
        after = cross(video, pos, model.start_token, text, bias)
    torch.testing.assert_close(no_t, cross.beta * video + a_v)
    torch.testing.assert_close(no_v, full - a_v)
    assert torch.equal(after, full) and (full - no_t).abs().max() > 1e-3


def test_clip_kinds_by_hand():
    kinds = clip_kinds({"window_clips": [[3, 5]], "decoy_clips": [9, 10]}, 13, 2)
    # 0 moment, 1 context, 2 decoy (with its flanks), 3 other
    assert kinds.tolist() == [3, 1, 1, 0, 0, 1, 1, 2, 2, 2, 2, 2, 3]


def test_shift_table_keeps_per_seed_ratios():
    def run(seed, val, test):
        m = {k: v for k, v in zip(("MR-full-R1@0.5", "MR-full-R1@0.7", "MR-full-mAP"), val)}
        t = {k: v for k, v in zip(("MR-full-R1@0.5", "MR-full-R1@0.7", "MR-full-mAP"), test)}
        return {"row": "d", "seed": seed, "analysis": {"val": {"normal": m}, "test": {"normal": t}}}

    table = shift_table([run(0, (80, 40, 50), (40, 10, 25)), run(1, (60, 20, 40), (45, 20, 40))])
    r = table[0]["MR-full-R1@0.5"]
    assert r["in_dist"]["mean"] == 70.0 and r["shifted"]["mean"] == 42.5
    assert r["kept"]["values"] == [50.0, 75.0] and r["kept"]["mean"] == 62.5
    assert table[0]["MR-full-R1@0.7"]["kept"]["values"] == [25.0, 100.0]
