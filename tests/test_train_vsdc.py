"""VSDC batch transform: GT content bit-for-bit, partners, keep rates, windows, lengths, masks."""
from __future__ import annotations

import math

import pytest
import torch

from tdfast.data.batch import Batch
from tdfast.model.config import TDDETRConfig
from tdfast.training.config import RunConfig, TrainConfig
from tdfast.spans import cxw_to_xx
from tdfast.training.prepare import negative_query_rows, prepare_batch
from tdfast.training.vsdc import choose_partners, video_similarity, vsdc


def make_batch(b: int, max_len: int, dim: int = 8, seed: int = 0, min_len: int = 6,
               two_windows: bool = False) -> Batch:
    """Labelled batch on the 1-clip grid: random lengths, one window (two with ``two_windows``)
    of whole clips per row, saliency on the window clips, distinct vids."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (b,), generator=g)
    mask = torch.arange(max_len)[None] < lengths[:, None]
    video = torch.randn(b, max_len, dim, generator=g) * mask[..., None]
    gt = torch.zeros(b, max_len, dtype=torch.bool)
    spans = []
    for i, n in enumerate(lengths.tolist()):
        cuts = [(0, n)] if not two_windows else [(0, n // 2), (n // 2 + 1, n)]
        rows = []
        for lo, hi in cuts:
            st = int(torch.randint(lo, hi - 1, (1,), generator=g))
            ed = int(torch.randint(st + 1, min(st + 4, hi) + 1, (1,), generator=g))
            gt[i, st:ed] = True
            rows.append([(st + ed) / 2 / n, (ed - st) / n])
        spans.append(torch.tensor(rows))
    saliency = gt * torch.randint(1, 13, (b, max_len), generator=g).float()
    meta = [{"qid": i, "query": f"q{i}", "vid": f"v{i}", "duration": 2.0 * n, "num_clips": n}
            for i, n in enumerate(lengths.tolist())]
    query = torch.randn(b, 5, 4, generator=g)
    return Batch(video=video, video_mask=mask, query=query, query_mask=torch.ones(b, 5, dtype=torch.bool),
                 meta=meta, spans=spans, saliency=saliency, gt_clip_mask=gt)


def partners(out: Batch, b: int) -> torch.Tensor:
    """[B] the context row of VSDC's row i < B, read from its meta (``make_batch`` names row j's
    video v{j})."""
    return torch.tensor([int(m["vsdc_context_vid"][1:]) for m in out.meta[:b]])


def window_clips(spans: torch.Tensor, length: int) -> list[tuple[int, int]]:
    """Normalized cxw [n, 2] on a video of ``length`` clips -> [(first, stop)] clip ranges."""
    xx = cxw_to_xx(spans.double()) * length
    return [(round(float(s)), round(float(e))) for s, e in xx]


def config(**kw) -> tuple[TDDETRConfig, TrainConfig]:
    """The tiny preset's network and training configs with flat ``kw`` (alpha, max_video_len...)."""
    run = RunConfig.from_name("tiny", **kw)
    return run.model, run.training


def test_similarity_is_mean_of_topk_dot_products():
    batch = make_batch(4, 7, seed=1)
    sim = video_similarity(batch.video, batch.video_mask, topk=5)
    v, lens = batch.video, batch.video_mask.sum(1).tolist()
    for a in range(4):
        for b in range(4):
            dots = sorted((float(v[a, i] @ v[b, j]) for i in range(lens[a]) for j in range(lens[b])),
                          reverse=True)
            assert sim[a, b].item() == pytest.approx(sum(dots[:5]) / 5, rel=1e-5, abs=1e-5)


def test_partner_is_most_similar_other_video_never_self():
    sim = torch.tensor([[9.0, 1.0, 2.0], [1.0, 9.0, 0.5], [2.0, 0.5, 9.0]])
    assert choose_partners(sim, ["a", "b", "c"]).tolist() == [2, 0, 0]
    # another query on the same video is skipped while another video exists
    assert choose_partners(sim, ["a", "b", "a"]).tolist() == [1, 0, 1]
    assert choose_partners(sim[:2, :2], ["a", "a"]).tolist() == [1, 0]  # nothing else: the same video
    batch = make_batch(32, 20, seed=3)
    out = vsdc(batch, *config(), torch.Generator().manual_seed(0))
    assert (partners(out, 32) != torch.arange(32)).all()


@pytest.mark.parametrize("two_windows", [False, True])
def test_gt_content_preserved_bit_for_bit_and_windows_cover_exactly_gt(two_windows):
    batch = make_batch(24, 20, seed=4, two_windows=two_windows)
    out = vsdc(batch, *config(alpha=0.5), torch.Generator().manual_seed(1))
    partner = partners(out, 24)
    anchors = torch.cat([torch.arange(24), partner]).tolist()
    old_len = batch.video_mask.sum(1).tolist()
    for p, a in enumerate(anchors):
        n = out.meta[p]["num_clips"]
        assert int(out.video_mask[p].sum()) == n and out.video_mask[p, :n].all()
        new_windows = window_clips(out.spans[p], n)
        old_windows = window_clips(batch.spans[a], old_len[a])
        covered = torch.zeros(out.video_mask.shape[1], dtype=torch.bool)
        for (ns, ne), (os_, oe) in zip(new_windows, old_windows):
            assert ne - ns == oe - os_  # no window cut
            assert torch.equal(out.video[p, ns:ne], batch.video[a, os_:oe])  # bit for bit
            assert torch.equal(out.saliency[p, ns:ne], batch.saliency[a, os_:oe])
            covered[ns:ne] = True
        assert torch.equal(covered, out.gt_clip_mask[p])
        assert out.query[p].equal(batch.query[a]) and out.meta[p]["qid"] == a


def test_keep_rates_match_alpha_within_three_sigma():
    alpha = 0.3
    b, length = 256, 24
    batch = make_batch(b, length, dim=1, seed=5, min_len=length)
    # tag every clip with its source (row, clip) so kept clips can be traced in the output
    batch.video = (torch.arange(b)[:, None] * 1000 + torch.arange(length)[None] + 1).float()[..., None]
    # partners may contribute a whole video: max_video_len large enough that no clip is dropped for length
    out = vsdc(batch, *config(alpha=alpha, max_video_len=2 * length), torch.Generator().manual_seed(2))
    partner = partners(out, b)
    anchors = torch.cat([torch.arange(b), partner])
    contexts = torch.cat([partner, torch.arange(b)])
    tags = out.video[..., 0].long()  # [2B, L']
    src_row, src_clip = (tags - 1) // 1000, (tags - 1) % 1000
    real = out.video_mask
    from_anchor = real & (src_row == anchors[:, None])
    from_context = real & (src_row == contexts[:, None])
    assert (from_anchor | from_context).equal(real)
    was_gt = batch.gt_clip_mask[anchors[:, None], src_clip.clamp(max=length - 1)]
    gt_total = int(batch.gt_clip_mask[anchors].sum())
    assert int((from_anchor & was_gt).sum()) == gt_total  # every GT clip kept
    non_gt = int((batch.video_mask & ~batch.gt_clip_mask)[anchors].sum())
    rate_a = int((from_anchor & ~was_gt).sum()) / non_gt
    n_context = 2 * b * length
    rate_c = int(from_context.sum()) / n_context
    assert abs(rate_a - alpha) <= 3 * math.sqrt(alpha * (1 - alpha) / non_gt)
    assert abs(rate_c - (1 - alpha)) <= 3 * math.sqrt(alpha * (1 - alpha) / n_context)
    # order: rows [0, B) the anchor's clips first, then the partner's; the symmetric rows
    # [B, 2B) the partner's first (official TD-DETR order); each block in time order
    for p in range(0, 2 * b, 37):
        n = int(real[p].sum())
        n_first = int(from_anchor[p].sum()) if p < b else int(from_context[p].sum())
        assert (from_anchor if p < b else from_context)[p, :n_first].all()
        assert (src_clip[p, 1:n_first] > src_clip[p, :n_first - 1]).all()
        assert (src_clip[p, n_first + 1:n] > src_clip[p, n_first:n - 1]).all()


def test_never_longer_than_max_video_len_and_masks_exact():
    max_len = 16
    batch = make_batch(20, max_len, seed=6, min_len=max_len - 2)
    out = vsdc(batch, *config(alpha=0.2, max_video_len=max_len), torch.Generator().manual_seed(3))
    lengths = out.video_mask.sum(1)
    assert out.video.shape[1] <= max_len and int(lengths.max()) <= max_len
    assert int(lengths.max()) == max_len  # alpha=0.2 keeps ~0.8 of a ~15-clip partner: the cap binds
    assert torch.equal(out.video_mask, torch.arange(out.video.shape[1])[None] < lengths[:, None])
    assert (out.video[~out.video_mask] == 0).all()
    assert not out.gt_clip_mask[~out.video_mask].any()
    assert (out.saliency[~out.video_mask] == 0).all()
    assert [m["num_clips"] for m in out.meta] == lengths.tolist()
    assert [m["duration"] for m in out.meta] == (lengths * 2.0).tolist()


def test_alpha_one_gives_back_the_originals():
    batch = make_batch(6, 12, seed=7)
    out = vsdc(batch, *config(alpha=1.0), torch.Generator().manual_seed(4))
    n = batch.video.shape[1]
    assert torch.equal(out.video[:6, :n], batch.video)
    assert torch.equal(out.video_mask[:6, :n], batch.video_mask)
    for a, b in zip(out.spans[:6], batch.spans):
        assert torch.allclose(a, b, atol=1e-6)


def test_single_row_batch_is_left_alone():
    batch = make_batch(1, 10, seed=8)
    assert vsdc(batch, *config(), torch.Generator().manual_seed(0)) is batch
    assert prepare_batch(batch, *config(), torch.Generator().manual_seed(0)).owner.tolist() == [0]


def test_negative_query_rows_by_hand():
    meta = [{"vid": "a"}, {"vid": "a"}, {"vid": "b", "vsdc_context_vid": "c"}, {"vid": "c"}, {"vid": "d"}]
    # row 0 skips row 1 (same video); row 2 skips row 3 (its context video); row 4 wraps to 0
    assert negative_query_rows(meta).tolist() == [2, 2, 4, 4, 0]
    assert negative_query_rows([{"vid": "a"}, {"vid": "a"}]).tolist() == [1, 0]  # nothing else: p + 1


def test_negative_query_never_comes_from_a_video_in_the_row():
    """After VSDC, QD-DETR's shift by one row often hands a row its own query (the symmetric
    rows of one partner sit side by side); the chosen negatives never do."""
    b = 32
    batch = make_batch(b, 20, seed=9)
    out = prepare_batch(batch, *config(alpha=0.5), torch.Generator().manual_seed(5))
    anchors = torch.cat([torch.arange(b), partners(out, b)])
    contexts = torch.cat([partners(out, b), torch.arange(b)])
    assert out.owner.tolist() == [*range(b), *range(b)]  # pair i's two rows belong to input row i
    shifted = anchors.roll(-1)  # QD-DETR's choice: the query of row p + 1
    bad = (shifted == anchors) | (shifted == contexts)
    assert int((shifted == anchors).sum()) == 4 and int(bad.sum()) == 5  # on this batch, of 64 rows
    source = negative_query_rows(out.meta)
    assert not (anchors[source] == anchors).any() and not (anchors[source] == contexts).any()
    assert torch.equal(out.neg_query, batch.query[anchors[source]])
    # only the bad rows look further (to p + 2 here); the rest keep QD-DETR's p + 1
    step = (source - torch.arange(2 * b)) % (2 * b)
    assert torch.equal(step, torch.where(bad, 2, 1))
