"""Sliding windows: window plans, saliency stitching, merging, and a planted moment in a long video."""
import numpy as np
import pytest
import torch
from torch import nn

from tdfast import Retriever, TDDETR, TDDETRConfig
from tdfast.retrieval.postprocess import Prediction, select_moments
from tdfast.retrieval.windows import merge_windows, plan_windows, stitch_saliency

C = TDDETRConfig.from_name("tiny")  # max_video_len 32, clip_len 2 s


def test_plan_windows_hand_cases():
    assert plan_windows(20, 32, 16) == [(0, 20)]
    assert plan_windows(32, 32, 16) == [(0, 32)]
    assert plan_windows(100, 32, 16) == [(0, 32), (16, 48), (32, 64), (48, 80), (64, 96), (68, 100)]
    assert plan_windows(40, 32, 32) == [(0, 32), (8, 40)]
    assert plan_windows(34, 32, 1) == [(0, 32), (1, 33), (2, 34)]


def test_stitch_saliency_averages_overlaps():
    sal = stitch_saliency(5, [(0, 3), (2, 5)], [np.array([1.0, 2.0, 3.0]), np.array([5.0, 7.0, 9.0])])
    np.testing.assert_allclose(sal, [1.0, 2.0, 4.0, 7.0, 9.0])


def test_merge_windows_shifts_clamps_and_suppresses():
    # window 2 starts at clip 10 = 20 s; its [0, 4] s moment is [20, 24] s in the video and
    # duplicates window 1's [20, 24] (shifted from the window start 0): NMS keeps the better.
    w1 = Prediction(np.array([[20.0, 24.0], [0.0, 6.0]]), np.array([0.6, 0.3]), np.zeros(16, np.float32))
    w2 = Prediction(np.array([[0.0, 4.0], [28.0, 40.0]]), np.array([0.9, 0.5]), np.ones(16, np.float32))
    p = merge_windows([(0, 16), (10, 26)], [w1, w2], seconds_per_clip=2.0, duration=50.0,
                      top_k=5, nms_iou=None)
    np.testing.assert_allclose(p.spans, [[20.0, 24.0], [48.0, 50.0], [0.0, 6.0]])  # 60 s -> 50 s
    np.testing.assert_allclose(p.scores, [0.9, 0.5, 0.3])
    np.testing.assert_allclose(p.saliency, [0] * 10 + [0.5] * 6 + [1] * 10)


class PlantedMomentOracle(nn.Module):
    """A stand-in model with TDDETR's call signature that *finds* the clips whose first
    text_dim features point along the query's mean token: saliency = that dot product; query 0
    spans the first..last matching clip (normalized to the real length) with foreground logit
    = number of matching clips - 2 (a window holding more of the moment scores higher); the
    other queries are whole-video spans with logit -4."""

    def __init__(self, config: TDDETRConfig, threshold: float = 0.5) -> None:
        super().__init__()
        self.config, self.threshold = config, threshold
        self.unused = nn.Parameter(torch.zeros(()))  # Retriever places the model by its parameters

    def forward(self, video, video_mask, query, query_mask):
        b, n = video.shape[:2]
        qmean = (query * query_mask[..., None]).sum(1) / query_mask.sum(1, keepdim=True)  # [B, Dt]
        sal = torch.einsum("bld,bd->bl", video[..., : query.shape[-1]], qmean) * video_mask  # [B, L]
        hit = (sal > self.threshold) & video_mask
        idx = torch.arange(n)[None].expand(b, n)
        first = torch.where(hit, idx, n).min(1).values.float()
        last = torch.where(hit, idx, -1).max(1).values.float() + 1
        length = video_mask.sum(1).float()
        found = hit.any(1)
        start, end = torch.where(found, first, 0.0) / length, torch.where(found, last, 1.0) / length
        spans = torch.tensor([0.5, 1.0]).repeat(b, self.config.num_queries, 1)  # [B, Q, 2] cxw
        spans[:, 0] = torch.stack(((start + end) / 2, end - start), -1)
        logits = torch.zeros(b, self.config.num_queries, 2)
        logits[:, :, 0] = -4.0
        logits[:, 0, 0] = hit.sum(1).float() - 2.0
        return {"pred_spans": spans, "pred_logits": logits, "saliency_scores": sal}


def planted_video(length: int, moment: tuple[int, int], seed: int = 0):
    """[length, video_dim] noise with clips moment[0]..moment[1]-1 along a direction d in the
    first text_dim dims, and a query of noisy copies of d."""
    g = torch.Generator().manual_seed(seed)
    d = torch.nn.functional.normalize(torch.randn(C.text_dim, generator=g), dim=0)
    video = torch.randn(length, C.video_dim, generator=g) * 0.02
    video[moment[0]: moment[1], : C.text_dim] += d
    query = d + torch.randn(6, C.text_dim, generator=g) * 0.01
    return video, query


@pytest.mark.parametrize("moment", [(130, 140), (0, 7), (193, 200), (60, 76)])
def test_sliding_windows_find_the_planted_moment(moment):
    video, query = planted_video(200, moment)  # 400 s, 6.25x max_video_len
    r = Retriever(PlantedMomentOracle(C), batch_size=4)
    (p,) = r.predict([video], [query], top_k=3, sliding_window=True)
    np.testing.assert_allclose(p.spans[0], [moment[0] * C.clip_len, moment[1] * C.clip_len], atol=1e-4)
    assert p.scores[0] == pytest.approx(1 / (1 + np.exp(-(moment[1] - moment[0] - 2))), rel=1e-5)
    # The oracle's saliency does not depend on the window, so stitching must return it unchanged.
    qmean = query.mean(0)
    np.testing.assert_allclose(p.saliency, (video[:, : C.text_dim] @ qmean).numpy(), atol=1e-5)
    assert p.saliency.shape == (200,)


def test_long_video_without_opt_in_is_refused():
    video, query = planted_video(33, (3, 5))
    with pytest.raises(ValueError, match="pass sliding_window=True"):
        Retriever(PlantedMomentOracle(C)).predict([video], [query])


def test_windowed_tddetr_equals_its_windows_run_one_by_one():
    """Real model, 70-clip video (windows (0,32), (16,48), (32,64), (38,70)): the merged answer
    equals each window predicted on its own, shifted to the video's time axis, pooled, NMS'd."""
    torch.manual_seed(0)
    model = TDDETR(C).eval()
    torch.nn.init.normal_(model.span_head.layers[-1].weight, std=0.5)
    torch.nn.init.normal_(model.class_head.weight, std=1.0)
    g = torch.Generator().manual_seed(1)
    video, query = torch.randn(70, C.video_dim, generator=g), torch.randn(9, C.text_dim, generator=g)
    r = Retriever(model)
    (p,) = r.predict([video], [query], top_k=4, nms_iou=0.6, sliding_window=True)
    windows = plan_windows(70, 32, 16)
    singles = r.predict([video[s:e] for s, e in windows], [query] * len(windows), top_k=C.num_queries)
    spans = np.concatenate([w.spans + s * C.clip_len for (s, _), w in zip(windows, singles)])
    scores = np.concatenate([w.scores for w in singles])
    want_spans, want_scores = select_moments(spans, scores, 4, 0.6)
    np.testing.assert_allclose(p.spans, want_spans, atol=1e-4)
    np.testing.assert_allclose(p.scores, want_scores, atol=1e-6)
    cover = np.zeros(70)
    total = np.zeros(70)
    for (s, e), w in zip(windows, singles):
        total[s:e] += w.saliency
        cover[s:e] += 1
    np.testing.assert_allclose(p.saliency, total / cover, atol=1e-5)
    # A short video in the same call is untouched by windowing.
    short = video[:20]
    (a, b) = r.predict([video, short], [query, query], top_k=4, nms_iou=0.6, sliding_window=True)
    (c,) = r.predict([short], [query], top_k=4, nms_iou=0.6)
    np.testing.assert_allclose(b.spans, c.spans, atol=1e-5)
    np.testing.assert_allclose(a.spans, p.spans, atol=1e-5)


def test_window_merge_equals_full_nms_and_stays_linear_in_candidates():
    """The merge used a full IoU matrix of all window candidates: stride 1 on 2000 clips took
    62 s and 2.5 GB, on 10000 clips MemoryError. Greedy NMS against the kept moments only,
    stopping at top k, gives the same moments."""
    import time

    from tdfast.retrieval.windows import nms_top_k

    rng = np.random.default_rng(0)
    starts = rng.uniform(0, 900, 3000)
    spans = np.stack([starts, starts + rng.uniform(1, 100, 3000)], 1).astype(np.float32)
    scores = rng.uniform(0, 1, 3000).astype(np.float32)
    for k, iou in ((5, 0.5), (40, 0.3), (3000, 0.7)):
        want_s, want_p = select_moments(spans, scores, k, iou)
        got_s, got_p = nms_top_k(spans, scores, k, iou)
        np.testing.assert_array_equal(got_s, want_s)
        np.testing.assert_array_equal(got_p, want_p)
    n = 50_000  # 5000 windows x 10 queries: a [n, n] IoU matrix would be 20 GB
    big = np.repeat(spans[:1], n, 0)
    start = time.perf_counter()
    s, p = nms_top_k(big, np.linspace(1, 0, n, dtype=np.float32), 5, 0.5)
    assert s.shape == (1, 2) and time.perf_counter() - start < 30  # every candidate suppressed by the first


def test_too_many_windows_is_an_input_error_naming_the_stride():
    from tdfast.errors import InputError
    from tdfast.retrieval.windows import MAX_WINDOWS

    with pytest.raises(InputError, match=rf"window_stride: 1 clips.*10000 clips into 9969 windows.*at most "
                                         rf"{MAX_WINDOWS}.*window_stride >= 10"):
        plan_windows(10000, 32, 1)
    assert len(plan_windows(10000, 32, 10)) <= MAX_WINDOWS
    r = Retriever(TDDETR(C).eval())
    with pytest.raises(InputError, match="window_stride"):
        r.predict([np.ones((5000, C.video_dim), np.float32)], [np.ones((4, C.text_dim), np.float32)],
                  sliding_window=True, window_stride=1)
