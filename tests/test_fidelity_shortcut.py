"""The shortcut benchmark's data: decoys carry the query's context and not its signature,
val can be drawn like train, defaults are unchanged; decoy hit rates by hand."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tdfast.data.annotations import load_annotations
from tdfast.data.features import FeatureStore, read_npz_array
from tdfast.data.synthetic import make_synthetic_dataset
from tdfast.errors import InputError
from tdfast.experiments import shortcut
from tdfast.model.config import TDDETRConfig
from tdfast.retrieval.postprocess import Prediction

SIZES = dict(num_train=30, num_val=12, num_test=12)


@pytest.fixture(scope="module")
def shifted(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("shortcut"), spurious=1.0, test_spurious=0.0,
                                  test_decoy=1.0, val_like_train=True, **SIZES)


def _planted(ds):
    return json.loads(ds.meta.read_text())["planted"]


def test_splits_follow_the_knobs(shifted):
    planted = _planted(shifted)
    for split, spurious in (("train", True), ("val", True), ("test", False)):
        rows = [p for p in planted.values() if p["split"] == split]
        assert rows and all(p["spurious"] is spurious for p in rows), split
        decoys = [p["decoy_clips"] is not None for p in rows]
        assert (sum(decoys) > 0.5 * len(rows)) if split == "test" else not any(decoys), split


def test_decoy_is_flanked_by_the_query_context_and_holds_no_signature(shifted):
    vec = np.load(shifted.vectors)
    planted = _planted(shifted)
    spec = json.loads(shifted.meta.read_text())["spec"]
    checked = 0
    for a in load_annotations(shifted.test):
        p = planted[str(a.qid)]
        if p["decoy_clips"] is None:
            continue
        feats = read_npz_array(shifted.video_dirs[0] / f"{a.vid}.npz", "features")
        st, ed = p["decoy_clips"]
        flank = [c for c in [*range(st - spec["context_clips"], st), *range(ed, ed + spec["context_clips"])]
                 if 0 <= c < len(feats)]
        c = p["concept"]
        assert feats[flank] @ vec["ctx"][c] == pytest.approx(np.ones(len(flank)), abs=0.35)
        # the decoy's clips hold no sig[c] beyond the video's background level; the GT's do
        sig = feats @ vec["sig"][c]
        background = np.median(sig)
        assert np.abs(sig[st:ed] - background).max() < 0.3
        gt = set(range(*p["window_clips"][0]))
        assert (sig[sorted(gt)] - background).min() > 0.3
        assert not gt & set(range(st - spec["context_clips"], ed + spec["context_clips"]))
        # the true moment is flanked by another concept's context
        assert p["context_concept"] != c
        checked += 1
    assert checked >= 8


def test_default_knobs_plant_no_decoys_and_shift_val(tmp_path):
    ds = make_synthetic_dataset(tmp_path, spurious=1.0, test_spurious=0.0, **SIZES)
    planted = _planted(ds)
    assert all(p["decoy_clips"] is None for p in planted.values())
    assert all(p["spurious"] is False for p in planted.values() if p["split"] == "val")
    with pytest.raises(InputError, match=r"test_decoy: expected a probability in \[0, 1\], got 1.5"):
        make_synthetic_dataset(tmp_path / "bad", test_decoy=1.5)


class _Lookup:
    """Answers each query with a fixed window (seconds), found by its prepared tokens."""

    def __init__(self, config, answers):
        self.config, self.answers = config, answers

    def predict(self, videos, queries, top_k=10, nms_iou=None, sliding_window=False, postprocess="none"):
        return [Prediction(np.array([self.answers[q.tobytes()]]), np.array([1.0]), np.zeros(len(v)))
                for v, q in zip(videos, queries)]


def test_decoy_hits_by_hand(shifted, monkeypatch):
    config = TDDETRConfig.from_name("tiny")
    store = FeatureStore(shifted.video_dirs, shifted.text_dir, config)
    planted = _planted(shifted)
    anns = [a for a in load_annotations(shifted.test) if planted[str(a.qid)]["decoy_clips"]]
    key = {a.qid: store.query(a.qid).tobytes() for a in anns}
    decoy = {key[a.qid]: [x * 2.0 for x in planted[str(a.qid)]["decoy_clips"]] for a in anns}
    # the decoy's first context clip only: no GT overlap, inside the decoy zone
    flank = {key[a.qid]: [2.0 * (planted[str(a.qid)]["decoy_clips"][0] - 1),
                          2.0 * planted[str(a.qid)]["decoy_clips"][0]] for a in anns}
    gt = {key[a.qid]: list(a.windows[0]) for a in anns}
    # a third each: GT, decoy, decoy flank
    third = len(anns) // 3
    mixed = {key[a.qid]: (gt if i < third else decoy if i < 2 * third else flank)[key[a.qid]]
             for i, a in enumerate(anns)}
    n = len(anns)
    for answers, expected in ((decoy, (0.0, 100.0)), (gt, (100.0, 0.0)),
                              (mixed, (round(100 * third / n, 2), round(100 * (n - third) / n, 2)))):
        monkeypatch.setattr("tdfast.retrieval.retriever.Retriever.from_pretrained", lambda *a, **k: _Lookup(config, answers))
        hits = shortcut.decoy_hits("ckpt", shifted.test, shifted.meta, shifted.video_dirs, shifted.text_dir)
        assert (hits["top1_on_gt"], hits["top1_near_decoy"]) == expected
        assert hits["queries"] == n
