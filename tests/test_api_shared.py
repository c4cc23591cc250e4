"""Encode once, retrieve many: ``predict_queries`` (one video, many queries) and ``predict_videos``
(one query, many videos) give ``predict``'s pairwise answers, projecting the shared input once."""
import numpy as np
import pytest
import torch

from tdfast import InputError, Retriever, TDDETR, TDDETRConfig

C = TDDETRConfig.from_name("tiny")


@pytest.fixture(scope="module")
def model() -> TDDETR:
    torch.manual_seed(0)
    m = TDDETR(C).eval()
    torch.nn.init.normal_(m.class_head.weight, std=0.2)  # separated scores: rankings not decided by round-off
    return m


def feats(n: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def assert_same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.spans, w.spans, atol=1e-4)
        np.testing.assert_allclose(g.scores, w.scores, atol=1e-5)
        np.testing.assert_allclose(g.saliency, w.saliency, atol=1e-5)


@pytest.mark.parametrize("batch_size", [32, 3])
def test_predict_queries_equals_pairwise_predict(model, batch_size):
    video = feats(23, C.video_dim, 0)
    queries = [feats(n, C.text_dim, 10 + n) for n in (5, 16, 1, 9, 12, 3, 7)]
    r = Retriever(model, batch_size=batch_size)
    calls = []
    real = model.project_video
    model.project_video = lambda *a: calls.append(a[0].shape) or real(*a)  # count the projections
    try:
        got = r.predict_queries(video, queries, top_k=4, duration=50.0)
    finally:
        del model.project_video
    assert calls == [(1, 23, C.video_dim)]  # once, for one video, whatever the chunking
    assert_same(got, r.predict([video] * len(queries), queries, top_k=4, durations=[50.0] * len(queries)))


def test_predict_videos_equals_pairwise_predict(model):
    query = feats(6, C.text_dim, 1)
    videos = [feats(n, C.video_dim, 20 + n) for n in (3, 17, 32, 9, 30)]
    r = Retriever(model, batch_size=2)
    got = r.predict_videos(videos, query, top_k=3, nms_iou=0.5)
    assert_same(got, r.predict(videos, [query] * len(videos), top_k=3, nms_iou=0.5))


def test_other_backends_run_the_pairs(model, tmp_path):
    model.save_pretrained(tmp_path / "ckpt")
    video, queries = feats(11, C.video_dim, 2), [feats(4, C.text_dim, 3), feats(8, C.text_dim, 4)]
    ort = Retriever.from_pretrained(tmp_path / "ckpt", backend="onnxruntime")
    assert_same(ort.predict_queries(video, queries), Retriever(model).predict_queries(video, queries))


def test_shared_inputs_are_checked(model):
    r = Retriever(model)
    with pytest.raises(InputError, match="video: expected at most max_video_len=32"):
        r.predict_queries(feats(40, C.video_dim, 0), [feats(3, C.text_dim, 0)])
    with pytest.raises(InputError, match="video: expected one 2-D"):
        r.predict_queries([feats(4, C.video_dim, 0)], [feats(3, C.text_dim, 0)])
    with pytest.raises(InputError, match=r"query\[0\]: expected at most max_query_len=16"):
        r.predict_videos([feats(4, C.video_dim, 0)], feats(17, C.text_dim, 0))
    with pytest.raises(InputError, match=r"videos\[1\]"):
        r.predict_videos([feats(4, C.video_dim, 0), feats(4, 3, 0)], feats(3, C.text_dim, 0))
