"""Feature loading: concatenation order, per-dir L2 norm, truncation, and every bad-file error."""
from __future__ import annotations

import numpy as np
import pytest

from tdfast.data.features import FeatureStore, l2_normalize, write_npz
from tdfast.errors import InputError
from tdfast.model.config import TDDETRConfig

A = np.array([[3, 0, 4], [0, 0, 0], [1, 1, 1], [0, 5, 0]], dtype=np.float32)  # dir A: L=4, D=3
B = np.array([[0, 2], [1, 0], [3, 4], [0, -1], [9, 9]], dtype=np.float32)  # dir B: L=5, D=2


def _cfg(**kw) -> TDDETRConfig:
    return TDDETRConfig.from_name("tiny", **{"video_dim": 5, "text_dim": 4, "max_video_len": 8,
                                             "max_query_len": 3, **kw})


@pytest.fixture
def dirs(tmp_path):
    da, db, dt = tmp_path / "a", tmp_path / "b", tmp_path / "t"
    write_npz(da / "v1.npz", features=A)
    write_npz(db / "v1.npz", features=B)
    write_npz(dt / "qid1.npz", last_hidden_state=np.array([[2, 0, 0, 0], [0, 0, 3, 0]], np.float32))
    write_npz(dt / "qid2.npz", last_hidden_state=np.arange(20, dtype=np.float32).reshape(5, 4))
    return da, db, dt


def test_concat_order_norm_and_shortest_length(dirs):
    da, db, dt = dirs
    v = FeatureStore([da, db], dt, _cfg()).video("v1")
    s3 = 1 / np.sqrt(3)
    expect = np.array([[0.6, 0, 0.8, 0, 1], [0, 0, 0, 1, 0], [s3, s3, s3, 0.6, 0.8], [0, 1, 0, 0, -1]])
    np.testing.assert_allclose(v, expect, atol=1e-6)  # zero row stays zero; B's 5th clip cut
    v_ba = FeatureStore([db, da], dt, _cfg()).video("v1")
    np.testing.assert_allclose(v_ba, expect[:, [3, 4, 0, 1, 2]], atol=1e-6)


def test_no_normalisation_and_video_truncation(dirs):
    da, db, dt = dirs
    v = FeatureStore([da, db], dt, _cfg(normalize_video=False, max_video_len=2)).video("v1")
    np.testing.assert_array_equal(v, np.concatenate([A[:2], B[:2]], 1))


def test_query_truncation_and_norm(dirs):
    da, db, dt = dirs
    store = FeatureStore([da, db], dt, _cfg())
    np.testing.assert_allclose(store.query(1), [[1, 0, 0, 0], [0, 0, 1, 0]])
    q2 = store.query(2)
    raw = np.arange(12, dtype=np.float64).reshape(3, 4)
    np.testing.assert_allclose(q2, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)
    assert q2[0, 0] == 0 and abs(q2[0, 3] - 3 / np.sqrt(14)) < 1e-6


def test_l2_normalize_is_eps_safe():
    out = l2_normalize(np.array([[0.0, 0.0], [1e-30, 0.0], [3.0, 4.0]]))
    np.testing.assert_allclose(out, [[0, 0], [1e-18, 0], [0.6, 0.8]], atol=1e-20)


def test_l2_normalize_survives_float32_overflow_of_the_squares():
    # 3e20 squared is inf in float32: the row must still come out (0.6, 0.8), not zeros or NaN.
    out = l2_normalize(np.array([[3e20, 4e20], [3.0, 4.0], [3e38, -3e38]], np.float32))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.6, 0.8], [0.5 ** 0.5, -(0.5 ** 0.5)]], rtol=1e-6)


def test_cache_returns_same_readonly_array(dirs):
    da, db, dt = dirs
    store = FeatureStore([da, db], dt, _cfg(), cache_size=1)
    v = store.video("v1")
    assert store.video("v1") is v and not v.flags.writeable
    store.query(1)  # evicts v1 (LRU of size 1)
    assert store.video("v1") is not v


@pytest.mark.parametrize("case, needle", [
    ("missing", "feature file not found"),
    ("key", "expected key 'features', found keys ['feats', 'other']"),
    ("nan", "found 1 NaN/inf (first at index (1, 2))"),
    ("inf_text", "found 2 NaN/inf"),
    ("dim", "expected video_dim=5 in total, got 3 + 3 = 6"),
    ("text_dim", "expected text_dim=4, got 6"),
    ("empty_text", "empty query (0 tokens)"),
    ("corrupt", "not a readable npz file"),
    ("rank", "expected a 2-D array"),
    ("beyond_f32", "expected values within float32 range (|x| <= 3.4e38), found 1 beyond it "
                   "(first at index (2, 1): 1e+300)"),
    ("complex", "expected real numbers, got dtype complex64"),
])
def test_bad_feature_files_name_the_file(tmp_path, case, needle):
    da, db, dt = tmp_path / "a", tmp_path / "b", tmp_path / "t"
    write_npz(da / "v.npz", features=A)
    write_npz(db / "v.npz", features=B)
    write_npz(dt / "qid0.npz", last_hidden_state=np.ones((2, 4), np.float32))
    bad_file, what = da / "v.npz", "video"
    if case == "missing":
        bad_file.unlink()
    elif case == "key":
        write_npz(bad_file, feats=A, other=A)
    elif case == "nan":
        write_npz(bad_file, features=np.where(np.arange(12).reshape(4, 3) == 5, np.nan, A))
    elif case == "dim":
        write_npz(db / "v.npz", features=np.ones((4, 3), np.float32))
        bad_file = db / "v.npz"
    elif case == "corrupt":
        bad_file.write_bytes(b"not a zip")
    elif case == "rank":
        write_npz(bad_file, features=np.ones(4, np.float32))
    elif case == "beyond_f32":  # finite in the float64 file, inf once cast to float32
        write_npz(bad_file, features=np.where(np.arange(12).reshape(4, 3) == 7, 1e300, A.astype(np.float64)))
    elif case == "complex":
        write_npz(bad_file, features=A + 1j)
    else:
        bad_file, what = dt / "qid0.npz", "query"
        tokens = {"inf_text": np.array([[np.inf, 0, 0, -np.inf]], np.float32),
                  "text_dim": np.ones((2, 6), np.float32),
                  "empty_text": np.zeros((0, 4), np.float32)}[case]
        write_npz(bad_file, last_hidden_state=tokens)
    store = FeatureStore([da, db], dt, _cfg())
    with pytest.raises(InputError) as e:
        store.video("v", "needed by ann.jsonl:3") if what == "video" else store.query(0, "needed by ann.jsonl:3")
    msg = str(e.value)
    assert str(bad_file) in msg and needle in msg and "ann.jsonl:3" in msg, msg


def test_missing_directory(tmp_path):
    (tmp_path / "t").mkdir()
    with pytest.raises(InputError, match="feature directory .*nodir.* not found"):
        FeatureStore([tmp_path / "nodir"], tmp_path / "t", _cfg())


def test_write_npz_is_byte_reproducible(tmp_path):
    x = np.random.default_rng(0).standard_normal((3, 2)).astype(np.float32)
    a, b = write_npz(tmp_path / "a.npz", features=x), write_npz(tmp_path / "b.npz", features=x)
    assert a.read_bytes() == b.read_bytes()
    np.testing.assert_array_equal(np.load(a)["features"], x)
