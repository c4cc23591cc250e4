"""Retriever boundary validation: every bad input raises InputError naming the argument first,
then the expected value and the value seen."""
import numpy as np
import pytest
import torch

from tdfast import BackendUnavailableError, InputError, Retriever, TDDETR, TDDETRConfig

from conftest import assert_names

C = TDDETRConfig.from_name("tiny")  # video_dim 64, text_dim 32, max_video_len 32, max_query_len 16


@pytest.fixture(scope="module")
def retriever():
    torch.manual_seed(0)
    return Retriever(TDDETR(C))


def _v(n=8):
    return np.random.default_rng(n).standard_normal((n, C.video_dim)).astype(np.float32)


def _q(n=4):
    return np.random.default_rng(100 + n).standard_normal((n, C.text_dim)).astype(np.float32)


def _nan_video():
    v = _v()
    v[2, 3] = np.nan
    return v


def _inf_query():
    q = _q()
    q[1, 0] = -np.inf
    return q


# (name, predict kwargs, the argument named first, what else the message must say: the
# expected and the seen values; the wording around them is free to improve)
PREDICT_CASES = [
    ("video rank", dict(videos=[np.zeros(C.video_dim, np.float32)], queries=[_q()]),
     "videos[0]", ("rank-2", "(64,)")),
    ("batched rank", dict(videos=torch.zeros(1, 2, 8, C.video_dim), queries=[_q()]),
     "videos", ("(1, 2, 8, 64)",)),
    ("video dim", dict(videos=[_v(), np.zeros((8, 63), np.float32)], queries=[_q(), _q()]),
     "videos[1]", ("64", "63")),
    ("query dim", dict(videos=[_v()], queries=[np.zeros((4, 31), np.float32)]),
     "queries[0]", ("32", "31")),
    ("nan video", dict(videos=[_nan_video()], queries=[_q()]),
     "videos[0]", ("NaN", "(2, 3)")),
    ("inf query", dict(videos=[_v(), _v()], queries=[_q(), _inf_query()]),
     "queries[1]", ("inf", "(1, 0)")),
    ("empty query", dict(videos=[_v()], queries=[np.zeros((0, C.text_dim), np.float32)]),
     "queries[0]", ("(0, 32)",)),
    ("zero-length video", dict(videos=[np.zeros((0, C.video_dim), np.float32)], queries=[_q()]),
     "videos[0]", ("(0, 64)",)),
    ("too long", dict(videos=[_v(40)], queries=[_q()]),
     "videos[0]", ("max_video_len=32", "40", "sliding_window=True")),
    ("query too long", dict(videos=[_v()], queries=[_q(20)]),
     "queries[0]", ("max_query_len=16", "20")),
    ("count mismatch", dict(videos=[_v(), _v()], queries=[_q()]),
     "queries", ("(2)", "got 1")),
    ("empty list", dict(videos=[], queries=[]), "videos", ("empty",)),
    ("int numpy", dict(videos=[np.ones((8, C.video_dim), np.int64)], queries=[_q()]),
     "videos[0]", ("int64",)),
    ("int torch", dict(videos=[_v()], queries=[torch.ones(4, C.text_dim, dtype=torch.int32)]),
     "queries[0]", ("torch.int32",)),
    ("bool", dict(videos=[_v()], queries=[np.ones((4, C.text_dim), bool)]),
     "queries[0]", ("bool",)),
    ("str item", dict(videos=["clip.npz"], queries=[_q()]),
     "videos[0]", ("str",)),
    ("str list", dict(videos="clip.npz", queries=[_q()]),
     "videos", ("str",)),
    ("top_k zero", dict(videos=[_v()], queries=[_q()], top_k=0), "top_k", ("got 0",)),
    ("top_k bool", dict(videos=[_v()], queries=[_q()], top_k=True),
     "top_k", ("True",)),
    ("nms_iou", dict(videos=[_v()], queries=[_q()], nms_iou=1.5),
     "nms_iou", ("(0, 1]", "1.5")),
    ("durations count", dict(videos=[_v()], queries=[_q()], durations=[10.0, 20.0]),
     "durations", ("(1)", "got 2")),
    ("durations value", dict(videos=[_v()], queries=[_q()], durations=[-3.0]),
     "durations[0]", ("-3.0",)),
    ("sliding flag", dict(videos=[_v()], queries=[_q()], sliding_window="yes"),
     "sliding_window", ("'yes'",)),
    ("window stride", dict(videos=[_v(40)], queries=[_q()], sliding_window=True, window_stride=0),
     "window_stride", ("max_video_len=32", "got 0")),
    ("window stride too big", dict(videos=[_v(40)], queries=[_q()], sliding_window=True, window_stride=33),
     "window_stride", ("max_video_len=32", "33")),
    ("rank-3 item", dict(videos=[np.zeros((1, 8, C.video_dim), np.float32)], queries=[_q()]),
     "videos[0]", ("rank-2", "(1, 8, 64)")),
    ("batched dim", dict(videos=torch.zeros(2, 8, 60), queries=[_q(), _q()]),
     "videos[0]", ("64", "60")),
    ("nms_iou zero", dict(videos=[_v()], queries=[_q()], nms_iou=0.0),
     "nms_iou", ("(0, 1]", "0.0")),
    ("durations nan", dict(videos=[_v()], queries=[_q()], durations=[float("nan")]),
     "durations[0]", ("nan",)),
    ("list item", dict(videos=[[[0.0] * C.video_dim] * 8], queries=[_q()]),
     "videos[0]", ("list",)),
]


@pytest.mark.parametrize("name, kwargs, argument, parts", PREDICT_CASES, ids=[c[0] for c in PREDICT_CASES])
def test_predict_rejects_bad_input(retriever, name, kwargs, argument, parts):
    with pytest.raises(InputError) as e:
        retriever.predict(**kwargs)
    assert_names(e.value, argument, *parts)
    assert isinstance(e.value, ValueError)


CONSTRUCT_CASES = [
    ("backend", dict(backend="tensorflow"),
     "backend", ("onnxruntime", "'tensorflow'")),
    ("device", dict(device="gpu0"), "device", ("'gpu0'",)),
    ("device type", dict(device=3.5), "device", ("3.5",)),
    ("dtype", dict(dtype="int8"),
     "dtype", ("float16", "'int8'")),
    ("batch_size", dict(batch_size=0), "batch_size", ("got 0",)),
]


@pytest.mark.parametrize("name, kwargs, argument, parts", CONSTRUCT_CASES, ids=[c[0] for c in CONSTRUCT_CASES])
def test_constructor_rejects_bad_arguments(name, kwargs, argument, parts):
    with pytest.raises(InputError) as e:
        Retriever(TDDETR(C), **kwargs)
    assert_names(e.value, argument, *parts)


def test_model_must_be_a_tddetr():
    with pytest.raises(InputError, match="model: expected a TDDETR .* got Linear"):
        Retriever(torch.nn.Linear(2, 2))


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(InputError, match="config.json"):
        Retriever.from_pretrained(tmp_path / "nope")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_backend_unavailable():
    with pytest.raises(BackendUnavailableError, match="no CUDA GPU is visible"):
        Retriever(TDDETR(C), device="cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_tensorrt_without_gpu_is_backend_unavailable():
    with pytest.raises(BackendUnavailableError, match="tensorrt backend: needs a CUDA GPU"):
        Retriever(TDDETR(C), backend="tensorrt")


def test_huge_finite_values_are_rejected_and_inf_among_them_is_found(retriever):
    """Features near float32's max overflow the input LayerNorm (every output NaN): they are
    an InputError naming the argument and the first offending value, and an inf among them
    is still reported as such; values at the bound still run and give finite outputs."""
    v = np.full((8, C.video_dim), 1e15, np.float32)
    out = retriever.raw_outputs([v], [_q()])[0]
    assert all(np.isfinite(x).all() for x in out.values())
    v[3, 2] = -3e38
    with pytest.raises(InputError, match=r"videos\[0\]: expected values within \+-1e\+15 .*found 1 "
                                         r"beyond it, the first -3e\+38 at index \(3, 2\)"):
        retriever.raw_outputs([v], [_q()])
    v[5, 7] = np.inf
    with pytest.raises(InputError, match=r"videos\[0\]: expected finite values, found 1 NaN/inf "
                                         r"\(first at index \(5, 7\)\)"):
        retriever.raw_outputs([v], [_q()])


def test_float_dtypes_are_cast_and_agree(retriever):
    """float64 / float16 / bfloat16 inputs are cast to the model dtype: float64 exactly, the
    half types within their rounding of the inputs."""
    v, q = _v(12), _q(6)
    base = retriever.raw_outputs([v], [q])[0]
    as64 = retriever.raw_outputs([v.astype(np.float64)], [torch.from_numpy(q).double()])[0]
    for k in base:
        np.testing.assert_array_equal(as64[k], base[k])
    as16 = retriever.raw_outputs([v.astype(np.float16)], [torch.from_numpy(q).bfloat16()])[0]
    for k in base:
        assert np.abs(as16[k] - base[k]).max() < 0.1, k


def test_durations_beyond_float32_spans_are_input_errors_numpy_scalars_are_fine():
    """durations=[1e308] gave inf spans; np.float32 durations were refused."""
    import numpy as np

    from tdfast import InputError, Retriever, TDDETR, TDDETRConfig

    c = TDDETRConfig.from_name("tiny")
    r = Retriever(TDDETR(c).eval())
    v, q = [np.ones((10, c.video_dim), np.float32)], [np.ones((4, c.text_dim), np.float32)]
    for bad in (1e308, 1e20):
        with pytest.raises(InputError, match=r"durations\[0\]: expected seconds in \(0, 1e\+07\]"):
            r.predict(v, q, durations=[bad])
    (a,) = r.predict(v, q, durations=[np.float32(30.0)])
    (b,) = r.predict(v, q, durations=[30.0])
    np.testing.assert_array_equal(a.spans, b.spans)
    assert np.isfinite(a.spans).all() and a.spans.max() <= 30.0


def test_negative_stride_arrays_are_accepted_as_their_copies():
    import numpy as np

    from tdfast import Retriever, TDDETR, TDDETRConfig

    c = TDDETRConfig.from_name("tiny")
    r = Retriever(TDDETR(c).eval())
    rng = np.random.default_rng(0)
    v, q = rng.normal(size=(10, c.video_dim)).astype(np.float32), rng.normal(size=(4, c.text_dim)).astype(np.float32)
    (a,) = r.predict([v[::-1]], [q[::-1]])
    (b,) = r.predict([v[::-1].copy()], [q[::-1].copy()])
    np.testing.assert_array_equal(a.spans, b.spans)
    np.testing.assert_array_equal(a.saliency, b.saliency)


def test_prepare_query_and_video_of_the_wrong_rank_are_input_errors():
    import numpy as np

    from tdfast import InputError, Retriever, TDDETR, TDDETRConfig

    c = TDDETRConfig.from_name("tiny")
    r = Retriever(TDDETR(c).eval())
    with pytest.raises(InputError, match=r"tokens: expected a rank-2 tensor, got shape \(32,\)"):
        r.prepare_query(np.ones(c.text_dim, np.float32))
    with pytest.raises(InputError, match=r"parts\[0\]: expected a rank-2 tensor, got shape \(64,\)"):
        r.prepare_video(np.ones(c.video_dim, np.float32))


@pytest.mark.parametrize("bad, named", [
    # cast to float before: token ids or labels became "features"
    (lambda c: np.ones((5, c.video_dim), np.int64), "integer/bool inputs are rejected"),
    (lambda c: np.ones((5, c.video_dim), bool), "integer/bool inputs are rejected"),
    # passed through before, and predict rejected the prepared array later
    (lambda c: np.full((5, c.video_dim), np.nan, np.float32), "NaN/inf"),
    (lambda c: np.full((5, c.video_dim), np.inf, np.float32), "NaN/inf"),
    # reached Tensor.item() before (RuntimeError)
    (lambda c: torch.ones(5, c.video_dim, device="meta"), "meta device"),
    (lambda c: np.ones((0, c.video_dim), np.float32), "at least one row"),
])
def test_prepare_checks_what_predict_checks(bad, named):
    from tdfast import InputError, Retriever, TDDETR, TDDETRConfig

    c = TDDETRConfig.from_name("tiny")
    r = Retriever(TDDETR(c).eval())
    with pytest.raises(InputError) as e:
        r.prepare_video(bad(c))
    assert str(e.value).startswith("parts[0]: ") and named in str(e.value), str(e.value)
    video = np.ones((5, c.video_dim), np.float32)
    with pytest.raises(InputError) as e:
        r.prepare_video([video, bad(c)])
    assert str(e.value).startswith("parts[1]: "), str(e.value)
    tokens = bad(c)[:, : c.text_dim]
    with pytest.raises(InputError) as e:
        r.prepare_query(tokens)
    assert str(e.value).startswith("tokens: ") and named in str(e.value), str(e.value)
