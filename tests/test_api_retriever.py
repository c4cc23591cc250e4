"""Retriever on the eager backend: padding/bucketing/chunking invariance, predict vs the model
and postprocess by hand, mixed and strided inputs, feature preparation, threads, no NaN."""
import threading

import numpy as np
import pytest
import torch

from tdfast import Retriever, TDDETR, TDDETRConfig
from tdfast.data.features import l2_normalize, prepare_query, prepare_video
from tdfast.retrieval.postprocess import postprocess

C = TDDETRConfig.from_name("tiny")
VIDEO_LENS = (3, 17, 32, 9, 30, 1)  # buckets 16, 32, 32, 16, 32, 16
QUERY_LENS = (5, 16, 1, 9, 8, 12)  # buckets 8, 16, 8, 16, 8, 16


def make_model(seed: int = 0) -> TDDETR:
    torch.manual_seed(seed)
    model = TDDETR(C).eval()
    # Non-zero last span layer: spans then depend on the input (a fresh model's don't);
    # a wider class head separates the scores, so rankings are not decided by round-off.
    torch.nn.init.normal_(model.span_head.layers[-1].weight, std=0.5)
    torch.nn.init.normal_(model.class_head.weight, std=0.2)
    return model


def pairs(seed: int = 0, video_lens=VIDEO_LENS, query_lens=QUERY_LENS):
    g = torch.Generator().manual_seed(seed)
    videos = [torch.randn(n, C.video_dim, generator=g) for n in video_lens]
    queries = [torch.randn(n, C.text_dim, generator=g) for n in query_lens]
    return videos, queries


def alone(model, video, query):
    """The model on one unpadded pair: the oracle for everything batched."""
    with torch.no_grad():
        return model(video[None], torch.ones(1, video.shape[0], dtype=torch.bool),
                     query[None], torch.ones(1, query.shape[0], dtype=torch.bool))


@pytest.fixture(scope="module")
def model():
    return make_model()


@pytest.mark.parametrize("batch_size", [32, 4, 1])
def test_raw_outputs_equal_the_model_on_each_pair_alone(model, batch_size):
    videos, queries = pairs()
    got = Retriever(model, batch_size=batch_size).raw_outputs(videos, queries)
    for (v, q), g in zip(zip(videos, queries), got):
        want = alone(model, v, q)
        assert g["saliency_scores"].shape == (v.shape[0],)
        for k in ("pred_spans", "pred_logits", "saliency_scores"):
            assert np.abs(g[k] - want[k][0].numpy()).max() < 1e-5, k


def test_one_batched_tensor_equals_the_list(model):
    g = torch.Generator().manual_seed(3)
    video, query = torch.randn(3, 20, C.video_dim, generator=g), torch.randn(3, 7, C.text_dim, generator=g)
    r = Retriever(model)
    a = r.raw_outputs(video, query)
    b = r.raw_outputs(list(video), [q.numpy() for q in query])
    for x, y in zip(a, b):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_mixed_numpy_torch_and_strided_inputs(model):
    videos, queries = pairs(1, (10, 25), (6, 11))
    r = Retriever(model)
    base = r.raw_outputs(videos, queries)
    # Strided views: a transposed copy viewed back, every other row of a doubled array.
    v0 = videos[0].T.contiguous().T
    assert not v0.is_contiguous()
    doubled = np.repeat(queries[1].numpy(), 2, axis=0)[::2]
    assert not doubled.flags["C_CONTIGUOUS"]
    got = r.raw_outputs([v0, videos[1].numpy()], [queries[0].numpy(), doubled])
    for x, y in zip(base, got):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_predict_equals_postprocess_of_the_model(model):
    # No 1-clip video here: all its moment queries tie on score, and ties rank by round-off.
    videos, queries = pairs(2, video_lens=VIDEO_LENS[:-1] + (4,))
    durations = [float(v.shape[0]) * 3.0 for v in videos]  # not L * clip_len: 3 s per clip
    preds = Retriever(model, batch_size=4).predict(videos, queries, top_k=3, durations=durations)
    for v, q, d, p in zip(videos, queries, durations, preds):
        out = alone(model, v, q)
        (want,) = postprocess(out["pred_spans"], out["pred_logits"], out["saliency_scores"],
                              [v.shape[0]], torch.tensor([d]), top_k=3)
        np.testing.assert_allclose(p.spans, want.spans, atol=1e-4)
        np.testing.assert_allclose(p.scores, want.scores, atol=1e-5)
        np.testing.assert_allclose(p.saliency, want.saliency, atol=1e-5)
        assert p.spans.shape == (3, 2) and p.spans.min() >= 0 and p.spans.max() <= d


def test_default_duration_is_clips_times_clip_len_and_nms_applies(model):
    videos, queries = pairs(4, (12,), (5,))
    r = Retriever(model)
    (p,) = r.predict(videos, queries, top_k=C.num_queries)
    (scaled,) = r.predict(videos, queries, top_k=C.num_queries, durations=[12 * C.clip_len * 2])
    np.testing.assert_allclose(scaled.spans, 2 * p.spans, rtol=1e-5, atol=1e-5)
    (nms,) = r.predict(videos, queries, top_k=C.num_queries, nms_iou=0.3)
    from tdfast.spans import pairwise_iou

    iou = pairwise_iou(nms.spans, nms.spans)
    assert (iou[~np.eye(len(nms.spans), dtype=bool)] < 0.3).all()
    assert nms.scores[0] == p.scores[0] and len(nms.scores) <= len(p.scores)


def test_from_pretrained_round_trip(model, tmp_path):
    model.save_pretrained(tmp_path / "ckpt")
    videos, queries = pairs(5, (7, 31), (3, 13))
    a = Retriever(model).predict(videos, queries)
    b = Retriever.from_pretrained(tmp_path / "ckpt").predict(videos, queries)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.spans, y.spans)
        np.testing.assert_array_equal(x.saliency, y.saliency)


def test_prepare_helpers_match_the_data_layer():
    c = TDDETRConfig.from_name("tiny", video_dim=48)
    r = Retriever(TDDETR(c))
    rng = np.random.default_rng(0)
    slowfast, clip = rng.standard_normal((40, 32)) * 5, rng.standard_normal((41, 16)) * 3
    long = r.prepare_video([slowfast, clip])
    assert long.shape == (40, 48)  # cut to the shorter source, not to max_video_len=32
    np.testing.assert_allclose(np.linalg.norm(long, axis=1), np.sqrt(2), rtol=1e-5)  # per source
    np.testing.assert_allclose(long[:, :32], l2_normalize(slowfast.astype(np.float32)), rtol=1e-6)
    np.testing.assert_array_equal(r.prepare_video([slowfast, clip], truncate=True),
                                  prepare_video([slowfast, clip], c))
    tokens = rng.standard_normal((20, c.text_dim))
    np.testing.assert_array_equal(r.prepare_query(tokens), prepare_query(tokens, c))
    assert r.prepare_query(tokens).shape == (c.max_query_len, c.text_dim)


def test_threads_share_one_retriever(model):
    """8 threads x 3 rounds on one Retriever give exactly the single-threaded answers."""
    r = Retriever(model, batch_size=4)
    work = [pairs(10 + i, VIDEO_LENS[: 2 + i % 4], QUERY_LENS[: 2 + i % 4]) for i in range(8)]
    expected = [r.predict(v, q) for v, q in work]
    got: dict[int, list] = {}
    errors = []

    def worker(i):
        try:
            for _ in range(3):
                got[i] = r.predict(*work[i])
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, want in enumerate(expected):
        for x, y in zip(want, got[i]):
            np.testing.assert_array_equal(x.spans, y.spans)
            np.testing.assert_array_equal(x.scores, y.scores)
            np.testing.assert_array_equal(x.saliency, y.saliency)


def test_no_nan_on_extreme_finite_inputs(model):
    videos = [torch.full((1, C.video_dim), 1e4), torch.zeros(32, C.video_dim), torch.randn(5, C.video_dim) * 1e3]
    queries = [torch.full((1, C.text_dim), -1e4), torch.zeros(16, C.text_dim), torch.randn(1, C.text_dim)]
    for p in Retriever(model).predict(videos, queries, top_k=C.num_queries):
        assert np.isfinite(p.spans).all() and np.isfinite(p.scores).all() and np.isfinite(p.saliency).all()


def test_nan_from_a_backend_is_an_error_not_an_answer(model):
    r = Retriever(model)
    real = r.runner

    class NaNRunner:
        static_shapes, input_dtype = False, torch.float32

        def __call__(self, *args):
            out = real(*args)
            return {**out, "saliency_scores": out["saliency_scores"] * float("nan")}

    r.runner = NaNRunner()
    with pytest.raises(FloatingPointError, match=r"returned NaN/inf in \['saliency_scores'\]"):
        r.predict(*pairs(0, (4,), (2,)))


def test_warmup_runs_the_largest_buckets_and_changes_nothing():
    c = TDDETRConfig.from_name("tiny")
    model = TDDETR(c).eval()
    calls = []
    r = Retriever(model)
    run = r.runner.__call__
    r.runner = type("Counting", (), {"__call__": lambda self, *a: calls.append(tuple(a[0].shape)) or run(*a),
                                     "static_shapes": False, "input_dtype": torch.float32, "max_batch": None,
                                     "name": "eager"})()
    video, query = torch.randn(9, c.video_dim), torch.randn(4, c.text_dim)
    before = r.predict([video], [query])[0]
    assert r.warmup(batch_sizes=(1, 2), calls=2) == {}  # eager compiles nothing
    assert calls[1:] == [(1, 32, c.video_dim)] * 2 + [(2, 32, c.video_dim)] * 2  # max_video_len bucket
    after = r.predict([video], [query])[0]
    assert (before.spans == after.spans).all() and (before.saliency == after.saliency).all()
