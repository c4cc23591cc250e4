"""Ragged pairs -> padded batches: length buckets, chunking, batch rounding for static-shape
backends, padding contents, and (on a GPU) pinned host buffers with non_blocking copies."""
import numpy as np
import pytest
import torch

from tdfast import Retriever, TDDETR, TDDETRConfig
from tdfast.defaults import MAX_BATCH
from tdfast.retrieval.retriever import CPU_ACTIVATION_BUDGET, default_batch_size
from tdfast.retrieval.batching import batch_bucket, bucket_of, length_buckets, pad_items, plan_chunks

C = TDDETRConfig.from_name("tiny")  # max_video_len 32, max_query_len 16


def test_bucket_ladders():
    assert length_buckets(75, 16) == [16, 32, 48, 64, 75]  # the qvhighlights video ladder
    assert length_buckets(32, 8) == [8, 16, 24, 32]
    assert length_buckets(16, 16) == [16]
    buckets = length_buckets(75, 16)
    assert [bucket_of(n, buckets) for n in (1, 16, 17, 64, 65, 75)] == [16, 16, 32, 64, 75, 75]
    assert [batch_bucket(n, 32) for n in (1, 2, 3, 5, 8, 9, 31, 32)] == [1, 2, 4, 8, 8, 16, 32, 32]
    assert batch_bucket(7, 6) == 6  # capped at the chunk size


def test_plan_chunks_groups_by_bucket_and_cuts_at_max_batch():
    video_lens = [3, 20, 5, 16, 31, 2, 9, 17]  # buckets 16, 32, 16, 16, 32, 16, 16, 32
    query_lens = [2, 2, 9, 8, 1, 3, 16, 4]  # buckets 8, 8, 16, 8, 8, 8, 16, 8
    chunks = plan_chunks(video_lens, query_lens, [16, 32], [8, 16], max_batch=2, static_batch=False)
    assert [(c.indices, c.video_len, c.query_len, c.batch) for c in chunks] == [
        ((0, 3), 16, 8, 2), ((5,), 16, 8, 1), ((2, 6), 16, 16, 2), ((1, 4), 32, 8, 2), ((7,), 32, 8, 1)]
    # Static shapes: the batch of a short chunk is rounded up (3 real rows run as 4).
    chunks = plan_chunks(video_lens, query_lens, [16, 32], [8, 16], max_batch=8, static_batch=True)
    assert [(c.indices, c.batch) for c in chunks] == [((0, 3, 5), 4), ((2, 6), 2), ((1, 4, 7), 4)]
    assert sorted(i for c in chunks for i in c.indices) == list(range(8))


def test_pad_items_zero_padding_masks_and_dummy_rows():
    g = torch.Generator().manual_seed(0)
    items = [torch.randn(3, 4, generator=g), torch.randn(5, 4, generator=g).double(),
             torch.randn(4, 8, generator=g)[:, ::2]]  # a float64 item and a strided one
    x, mask = pad_items(items, 6, 4, torch.float32, torch.device("cpu"), pin=False)
    assert x.shape == (4, 6, 4) and x.dtype == torch.float32 and mask.dtype == torch.bool
    for i, t in enumerate(items):
        n = t.shape[0]
        np.testing.assert_array_equal(x[i, :n].numpy(), t.float().numpy())
        assert (x[i, n:] == 0).all() and mask[i].tolist() == [True] * n + [False] * (6 - n)
    # The dummy row (batch bucket 4 > 3 items) is zeros with one real token: never all-padding.
    # (x comes from torch.empty: the zeros above are pad_items clearing padding, not luck.)
    assert (x[3] == 0).all() and mask[3].tolist() == [True] + [False] * 5


class ShapeRecorder:
    """Wraps a runner; records the padded (B, L, M) of every call."""

    def __init__(self, runner, static_shapes: bool):
        self.runner, self.static_shapes, self.input_dtype = runner, static_shapes, runner.input_dtype
        self.max_batch = None
        self.shapes = []

    def __call__(self, video, video_mask, query, query_mask):
        self.shapes.append((video.shape[0], video.shape[1], query.shape[1]))
        return self.runner(video, video_mask, query, query_mask)


@pytest.mark.parametrize("static", [False, True])
def test_retriever_calls_the_backend_on_buckets_and_unpads(static):
    """23 ragged pairs, batch_size 4: every backend call is at a bucketed (L, M), at most 4 rows
    (rounded to a power of two for static-shape backends), and each pair's raw output equals
    the model on that pair alone, unpadded."""
    torch.manual_seed(0)
    model = TDDETR(C).eval()
    torch.nn.init.normal_(model.span_head.layers[-1].weight, std=0.5)
    rng = np.random.default_rng(0)
    video_lens, query_lens = rng.integers(1, 33, 23), rng.integers(1, 17, 23)
    videos = [torch.randn(int(n), C.video_dim) for n in video_lens]
    queries = [torch.randn(int(n), C.text_dim) for n in query_lens]
    r = Retriever(model, batch_size=4)
    r.runner = rec = ShapeRecorder(r.runner, static)
    raw = r.raw_outputs(videos, queries)
    assert {(lv, lq) for _, lv, lq in rec.shapes} <= {(lv, lq) for lv in (16, 32) for lq in (8, 16)}
    assert all(b <= 4 for b, _, _ in rec.shapes)
    if static:
        assert {b for b, _, _ in rec.shapes} <= {1, 2, 4}
    groups = {}
    for lv, lq in zip(video_lens, query_lens):
        key = (bucket_of(int(lv), [16, 32]), bucket_of(int(lq), [8, 16]))
        groups[key] = groups.get(key, 0) + 1
    assert len(rec.shapes) == sum(-(-n // 4) for n in groups.values())  # ceil(n / 4) per bucket
    for v, q, got in zip(videos, queries, raw):
        with torch.no_grad():
            want = model(v[None], torch.ones(1, v.shape[0], dtype=torch.bool),
                         q[None], torch.ones(1, q.shape[0], dtype=torch.bool))
        assert got["saliency_scores"].shape == (v.shape[0],)
        for k in got:
            assert np.abs(got[k] - want[k][0].numpy()).max() < 1e-5, k


def test_default_batch_size_keeps_the_ffn_activation_within_the_cpu_budget():
    """QVHighlights preset: 8 pairs x 107 tokens x 1024 x 4 B = 3.5 MB fits the 4 MiB budget, 16
    would not; the tiny preset's 12 KiB per pair is capped at 32; CUDA always gets 32."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert default_batch_size(TDDETRConfig.from_name("qvhighlights"), cpu) == 8
    assert default_batch_size(C, cpu) == MAX_BATCH == 32
    assert default_batch_size(TDDETRConfig.from_name("qvhighlights"), cuda) == 32
    huge = TDDETRConfig.from_name("tiny", ffn_dim=CPU_ACTIVATION_BUDGET // 4)  # one pair overflows
    assert default_batch_size(huge, cpu) == 1


def test_default_batch_size_cuts_calls_and_keeps_the_answers():
    """A model whose FFN is wide enough for the CPU default to be 8 (48 tokens x 2048 x 4 B per
    pair): 20 equal-length pairs go in calls of 8, 8, 4 and return what one call of 20 returns."""
    config = TDDETRConfig.from_name("tiny", ffn_dim=2048)
    torch.manual_seed(0)
    model = TDDETR(config).eval()
    videos = [torch.randn(30, config.video_dim) for _ in range(20)]
    queries = [torch.randn(12, config.text_dim) for _ in range(20)]
    r = Retriever(model)
    assert r.batch_size == 8
    r.runner = rec = ShapeRecorder(r.runner, False)
    got = r.raw_outputs(videos, queries)
    assert [b for b, _, _ in rec.shapes] == [8, 8, 4]
    whole = Retriever(model, batch_size=32)
    whole.runner = rec32 = ShapeRecorder(whole.runner, False)
    want = whole.raw_outputs(videos, queries)
    assert [b for b, _, _ in rec32.shapes] == [20]
    for a, b in zip(got, want):
        for k in a:
            assert np.abs(a[k] - b[k]).max() < 1e-5, k


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_batches_are_built_in_pinned_memory(monkeypatch):
    """CPU inputs, CUDA Retriever: the padded batch is page-locked (so the non_blocking copy is
    asynchronous) and the answer equals the CPU Retriever's."""
    import tdfast.retrieval.retriever as api

    torch.manual_seed(0)
    model = TDDETR(C).eval()
    pinned = []
    real = api.pad_items

    def spy(*args, **kwargs):
        x, mask = real(*args, **kwargs)
        pinned.append((x.is_pinned(), mask.is_pinned()))
        return x, mask

    monkeypatch.setattr(api, "pad_items", spy)
    videos = [torch.randn(n, C.video_dim) for n in (5, 20, 32)]
    queries = [torch.randn(n, C.text_dim) for n in (3, 16, 9)]
    got = Retriever(model, device="cuda").raw_outputs(videos, queries)
    assert pinned and all(a and b for a, b in pinned)
    want = Retriever(model).raw_outputs(videos, queries)
    for g, w in zip(got, want):
        for k in g:
            assert np.abs(g[k] - w[k]).max() < 1e-4, k
