"""Synthetic data: exact formats, determinism by seed, planted moments, and the spurious knob."""
from __future__ import annotations

import filecmp
import json

import numpy as np
import pytest

from tdfast.data import MomentDataset, load_annotations, make_synthetic_dataset, synthetic_batch
from tdfast.data.features import read_npz_array
from tdfast.model.config import TDDETRConfig
from tdfast.spans import cxw_to_xx

SMALL = dict(num_train=40, num_val=12, num_test=12)


def _files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_deterministic_by_seed(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", seed=3, **SMALL)
    b = make_synthetic_dataset(tmp_path / "b", seed=3, **SMALL)
    c = make_synthetic_dataset(tmp_path / "c", seed=4, **SMALL)
    files = _files(a.root)
    assert files == _files(b.root) and len(files) > 100
    _, mismatch, errors = filecmp.cmpfiles(a.root, b.root, [str(f) for f in files], shallow=False)
    assert mismatch == [] and errors == []
    assert a.train.read_bytes() != c.train.read_bytes()
    assert (a.root / "video_feats/train_v0000.npz").read_bytes() != \
        (c.root / "video_feats/train_v0000.npz").read_bytes()


def test_formats_and_grid(tmp_path):
    ds = make_synthetic_dataset(tmp_path, **SMALL)
    spec = json.loads(ds.meta.read_text())["spec"]
    qids = []
    for split in (ds.train, ds.val, ds.test):
        for a in load_annotations(split):  # the strict reader accepts every record
            qids.append(a.qid)
            feats = read_npz_array(ds.video_dirs[0] / f"{a.vid}.npz", "features")
            tokens = read_npz_array(ds.text_dir / f"qid{a.qid}.npz", "last_hidden_state")
            assert feats.shape[1] == 64 and tokens.shape[1] == 32
            assert 10 <= feats.shape[0] <= 32 and a.duration == feats.shape[0] * 2.0
            assert 3 <= tokens.shape[0] <= 7
            clips = [c for st, ed in a.windows for c in range(int(st // 2), int(ed // 2))]
            assert all(st % 2 == 0 and ed % 2 == 0 for st, ed in a.windows)  # on the clip grid
            assert list(a.relevant_clip_ids) == clips
            scores = np.asarray(a.saliency_scores)
            assert scores.shape == (len(clips), 3) and scores.min() >= 0 and scores.max() <= 4
    assert len(qids) == len(set(qids)) and spec["num_train"] == 40


def _decode(ds):
    """Per split: decoded (query concept, context concept) from the written features only."""
    vec = np.load(ds.vectors)
    ctx_clips = json.loads(ds.meta.read_text())["spec"]["context_clips"]
    out = {}
    for name, path in (("train", ds.train), ("test", ds.val), ("test2", ds.test)):
        pairs = []
        for a in load_annotations(path):
            tokens = read_npz_array(ds.text_dir / f"qid{a.qid}.npz", "last_hidden_state")
            concept = int(np.argmax((tokens @ vec["word"].T).max(0)))
            feats = read_npz_array(ds.video_dirs[0] / f"{a.vid}.npz", "features")
            around = [c for st, ed in a.windows for c in
                      [*range(int(st // 2) - ctx_clips, int(st // 2)), *range(int(ed // 2), int(ed // 2) + ctx_clips)]
                      if 0 <= c < len(feats)]
            context = int(np.argmax(feats[around].mean(0) @ vec["ctx"].T))
            pairs.append((concept, context))
        out[name] = np.array(pairs)
    return out


def test_spurious_knob_sets_context_concept_rate(tmp_path):
    ds = make_synthetic_dataset(tmp_path, spurious=0.8, test_spurious=0.0)
    dec = _decode(ds)
    train_rate = np.mean(dec["train"][:, 0] == dec["train"][:, 1])
    assert len(dec["train"]) > 250 and abs(train_rate - 0.8) < 0.08, train_rate
    for split in ("test", "test2"):
        assert np.mean(dec[split][:, 0] == dec[split][:, 1]) < 0.03
    # the decoded values agree with what the generator says it planted
    planted = json.loads(ds.meta.read_text())["planted"]
    truth = np.array([(planted[str(a.qid)]["concept"], planted[str(a.qid)]["context_concept"])
                      for a in load_annotations(ds.train)])
    assert np.mean(np.all(truth == dec["train"], axis=1)) > 0.98

    ds2 = make_synthetic_dataset(tmp_path / "b", spurious=0.2, test_spurious=0.6)
    dec2 = _decode(ds2)
    assert abs(np.mean(dec2["train"][:, 0] == dec2["train"][:, 1]) - 0.2) < 0.08
    rate = np.mean(np.concatenate([dec2["test"], dec2["test2"]])[:, 0] ==
                   np.concatenate([dec2["test"], dec2["test2"]])[:, 1])
    assert abs(rate - 0.6) < 0.12, rate


def test_moment_is_findable_from_text_and_saliency_follows_signal(tmp_path):
    ds = make_synthetic_dataset(tmp_path, **SMALL)
    vec = np.load(ds.vectors)
    cfg = TDDETRConfig.from_name("tiny", normalize_video=False)
    data = MomentDataset(ds.train, ds.video_dirs, ds.text_dir, cfg)
    hits, total, corr = 0, 0, []
    for i in range(len(data)):
        s = data[i]
        concept = int(np.argmax((s["query"].numpy() @ vec["word"].T).max(0)))
        score = s["video"].numpy() @ vec["sig"][concept]  # [L]
        pred = score > np.median(score) + 0.3  # planted signal >= 0.5, noise ~0.06 per clip
        hits += int((pred == s["gt_clip_mask"].numpy()).sum())
        total += len(pred)
        gt = s["gt_clip_mask"].numpy()
        if gt.sum() > 3:
            corr.append(np.corrcoef(score[gt], s["saliency"].numpy()[gt])[0, 1])
    assert hits / total > 0.97
    assert np.mean(corr) > 0.5


def test_two_feature_dirs_and_unlabelled_test(tmp_path):
    ds = make_synthetic_dataset(tmp_path, video_dims=(40, 24), test_labels=False, **SMALL)
    assert [d.name for d in ds.video_dirs] == ["video_feats_0", "video_feats_1"]
    assert not any(a.has_labels for a in load_annotations(ds.test))
    cfg = TDDETRConfig.from_name("tiny")
    s = MomentDataset(ds.val, ds.video_dirs, ds.text_dir, cfg)[0]
    norms = np.linalg.norm(s["video"].numpy()[:, :40], axis=1), np.linalg.norm(s["video"].numpy()[:, 40:], axis=1)
    np.testing.assert_allclose(norms[0], 1, atol=1e-5)  # each dir normalised on its own
    np.testing.assert_allclose(norms[1], 1, atol=1e-5)


@pytest.mark.parametrize("preset", ["tiny", "charades"])
def test_synthetic_batch_matches_collate_contract(preset):
    cfg = TDDETRConfig.from_name(preset)
    b = synthetic_batch(cfg, batch_size=5, seed=2)
    B, L, _ = b.video.shape
    assert b.video.shape[2] == cfg.video_dim and b.query.shape[2] == cfg.text_dim and B == 5
    assert L <= cfg.max_video_len and b.query.shape[1] <= cfg.max_query_len
    for i, m in enumerate(b.meta):
        n = m["num_clips"]
        assert b.video_mask[i].sum() == n and m["duration"] == n * cfg.clip_len
        assert not b.video[i, n:].any() and not b.saliency[i, n:].any()
        # the normalized spans map back onto exactly the GT clips
        xx = cxw_to_xx(b.spans[i]).numpy() * n
        mask = np.zeros(L, bool)
        for st, ed in np.rint(xx).astype(int):
            mask[st:ed] = True
        assert mask.tolist() == b.gt_clip_mask[i].tolist()
        assert bool(((b.saliency[i] > 0) <= b.gt_clip_mask[i]).all())
    b2 = synthetic_batch(cfg, batch_size=5, seed=2)
    assert all(np.array_equal(getattr(b, k).numpy(), getattr(b2, k).numpy()) for k in ("video", "query", "saliency"))
