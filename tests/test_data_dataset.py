"""MomentDataset + collate on a hand-written case: every value checked against hand-computed numbers."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tdfast.data import MomentDataset, collate, make_labels, make_loader, write_npz
from tdfast.data.annotations import Annotation
from tdfast.errors import InputError
from tdfast.model.config import TDDETRConfig

A1 = np.array([[3, 0, 4], [0, 0, 0], [1, 1, 1], [0, 5, 0]], np.float32)  # v1, dir a
B1 = np.array([[0, 2], [1, 0], [3, 4], [0, -1], [9, 9]], np.float32)  # v1, dir b (one clip longer)
S3 = 1 / np.sqrt(3)
V1 = np.array([[0.6, 0, 0.8, 0, 1], [0, 0, 0, 1, 0], [S3, S3, S3, 0.6, 0.8], [0, 1, 0, 0, -1]])
RECORDS = [
    # v1: 4 clips of 2 s; window [2, 5] s overlaps clips 1 and 2
    {"qid": 1, "query": "first", "vid": "v1", "duration": 8, "relevant_windows": [[2, 5]],
     "relevant_clip_ids": [1, 2], "saliency_scores": [[1, 2, 3], [4, 4, 4]]},
    # v2: 2 clips; no saliency scores -> saliency is 1 on GT clips
    {"qid": 2, "query": "second", "vid": "v2", "duration": 4, "relevant_windows": [[0, 1], [3, 4]]},
    # truncation case (used with max_video_len=3): [6, 8] starts at the horizon 6 s -> dropped;
    # [3, 8] is cut to [3, 6]; clip id 3 is past the horizon -> ignored
    {"qid": 3, "query": "third", "vid": "v1", "duration": 8, "relevant_windows": [[3, 8], [6, 8]],
     "relevant_clip_ids": [1, 2, 3], "saliency_scores": [[1, 1, 1], [2, 2, 2], [3, 3, 3]]},
]


def _cfg(**kw) -> TDDETRConfig:
    return TDDETRConfig.from_name("tiny", **{"video_dim": 5, "text_dim": 4, "max_video_len": 8,
                                             "max_query_len": 3, "clip_len": 2.0, **kw})


@pytest.fixture
def data(tmp_path):
    da, db, dt = tmp_path / "a", tmp_path / "b", tmp_path / "t"
    write_npz(da / "v1.npz", features=A1)
    write_npz(db / "v1.npz", features=B1)
    write_npz(da / "v2.npz", features=np.array([[0, 0, 2], [1, 0, 0]], np.float32))
    write_npz(db / "v2.npz", features=np.array([[0, 7], [-2, 0]], np.float32))
    write_npz(dt / "qid1.npz", last_hidden_state=np.array([[2, 0, 0, 0], [0, 0, 3, 0]], np.float32))
    write_npz(dt / "qid2.npz", last_hidden_state=np.diag([1.0, 2, 3, 4]).astype(np.float32))
    write_npz(dt / "qid3.npz", last_hidden_state=np.ones((1, 4), np.float32))
    ann = tmp_path / "ann.jsonl"
    ann.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return ann, [da, db], dt


def test_hand_written_batch(data):
    ann, vdirs, dt = data
    ds = MomentDataset(ann, vdirs, dt, _cfg())
    b = collate([ds[0], ds[1]])
    expect_video = np.zeros((2, 4, 5))
    expect_video[0] = V1
    expect_video[1, :2] = [[0, 0, 1, 0, 1], [1, 0, 0, -1, 0]]
    assert b.video.dtype == torch.float32
    np.testing.assert_allclose(b.video.numpy(), expect_video, atol=1e-6)
    assert b.video_mask.tolist() == [[True] * 4, [True, True, False, False]]
    expect_query = np.zeros((2, 3, 4))
    expect_query[0, :2] = [[1, 0, 0, 0], [0, 0, 1, 0]]
    expect_query[1] = np.eye(4)[:3]  # 4 tokens truncated to max_query_len=3
    np.testing.assert_allclose(b.query.numpy(), expect_query, atol=1e-6)
    assert b.query_mask.tolist() == [[True, True, False], [True, True, True]]
    assert b.meta == [
        {"qid": 1, "query": "first", "vid": "v1", "duration": 8.0, "num_clips": 4},
        {"qid": 2, "query": "second", "vid": "v2", "duration": 4.0, "num_clips": 2}]
    # [2, 5] / 8 = [0.25, 0.625] -> (0.4375, 0.375); [0,1]/4, [3,4]/4 -> (0.125, .25), (0.875, .25)
    np.testing.assert_allclose(b.spans[0].numpy(), [[0.4375, 0.375]])
    np.testing.assert_allclose(b.spans[1].numpy(), [[0.125, 0.25], [0.875, 0.25]])
    assert b.spans[0].dtype == torch.float32
    assert b.gt_clip_mask.tolist() == [[False, True, True, False], [True, True, False, False]]
    np.testing.assert_array_equal(b.saliency.numpy(), [[0, 6, 12, 0], [1, 1, 0, 0]])
    assert b.saliency.dtype == torch.float32


def test_batch_rows_keep_every_field_and_trim_padding(data):
    """Row selection (how a process keeps its share of a global batch) picks every field's
    rows in the given order and trims the padding of the longest video and query left."""
    from tdfast.training.prepare import TrainingBatch

    ann, vdirs, dt = data
    ds = MomentDataset(ann, vdirs, dt, _cfg())
    b = collate([ds[0], ds[1]])
    one = b.rows(torch.tensor([1]))  # v2: 2 clips, 3 query tokens
    assert one.video.shape == (1, 2, 5) and one.video_mask.tolist() == [[True, True]]
    assert one.saliency.tolist() == [[1, 1]] and one.gt_clip_mask.tolist() == [[True, True]]
    assert one.query.shape == (1, 3, 4) and one.meta == [b.meta[1]]
    np.testing.assert_array_equal(one.spans[0].numpy(), b.spans[1].numpy())
    swapped = b.rows(torch.tensor([1, 0]))  # the longest row kept: nothing trimmed
    assert torch.equal(swapped.video, b.video.flip(0)) and [m["qid"] for m in swapped.meta] == [2, 1]
    # a training batch's negative queries are trimmed with their own mask
    neg_mask = torch.tensor([[True, False, False], [True, True, False]])
    tb = TrainingBatch(b.video, b.video_mask, b.query, b.query_mask, b.meta, b.spans, b.saliency,
                       b.gt_clip_mask, owner=torch.tensor([0, 1]), sal_pos_idx=torch.tensor([[1], [0]]),
                       sal_neg_idx=torch.tensor([[0], [1]]), sal_pair_valid=torch.ones(2, 1, dtype=torch.bool),
                       neg_query=b.query * neg_mask[..., None], neg_query_mask=neg_mask)
    first = tb.rows(torch.tensor([0]))
    assert first.neg_query_mask.tolist() == [[True]] and first.neg_query.shape == (1, 1, 4)
    assert first.query.shape == (1, 2, 4) and first.sal_pos_idx.tolist() == [[1]]
    assert first.owner.tolist() == [0] and isinstance(first, TrainingBatch)


def test_truncation_drops_and_cuts_windows(data):
    ann, vdirs, dt = data
    s = MomentDataset(ann, vdirs, dt, _cfg(max_video_len=3))[2]
    assert s["meta"]["num_clips"] == 3 and s["meta"]["duration"] == 8.0
    np.testing.assert_allclose(s["video"].numpy(), V1[:3], atol=1e-6)
    # horizon 6 s: [3, 6] / 6 = [0.5, 1] -> (0.75, 0.5); [6, 8] dropped
    np.testing.assert_allclose(s["spans"].numpy(), [[0.75, 0.5]])
    assert s["gt_clip_mask"].tolist() == [False, True, True]
    np.testing.assert_array_equal(s["saliency"].numpy(), [0, 3, 6])


def test_one_second_clips_charades_labels():
    # clip_len 1 s, 8 clips: [2.5, 5] s / 8 s = [0.3125, 0.625] -> (0.46875, 0.3125); it overlaps
    # clips 2, 3, 4. No saliency scores (Charades-STA): saliency is 1 on those clips.
    ann = Annotation(qid=0, query="q", vid="v", duration=8.0, windows=((2.5, 5.0),))
    labels = make_labels(ann, num_clips=8, clip_len=1.0)
    np.testing.assert_allclose(labels["spans"], [[0.46875, 0.3125]])
    assert labels["gt_clip_mask"].tolist() == [False, False, True, True, True, False, False, False]
    np.testing.assert_array_equal(labels["saliency"], [0, 0, 1, 1, 1, 0, 0, 0])
    # The same window on 2-s clips (4 clips): [2.5, 5] / 8 -> same span, clips 1 and 2.
    two = make_labels(ann, num_clips=4, clip_len=2.0)
    np.testing.assert_allclose(two["spans"], [[0.46875, 0.3125]])
    assert two["gt_clip_mask"].tolist() == [False, True, True, False]


def test_unlabelled_batch_has_no_label_keys(data, tmp_path):
    ann, vdirs, dt = data
    nolab = tmp_path / "test.jsonl"
    nolab.write_text(json.dumps({k: RECORDS[0][k] for k in ("qid", "query", "vid", "duration")}) + "\n")
    ds = MomentDataset(nolab, vdirs, dt, _cfg())
    assert not ds.has_labels
    b = collate([ds[0]])
    assert (b.spans, b.saliency, b.gt_clip_mask) == (None, None, None) and b.video_mask.tolist() == [[True] * 4]
    labelled = MomentDataset(ann, vdirs, dt, _cfg())
    with pytest.raises(InputError, match=r"qids without labels: \[1\]"):
        collate([labelled[1], ds[0]])


def test_missing_feature_names_annotation_line(data, tmp_path):
    ann, vdirs, dt = data
    (dt / "qid2.npz").unlink()
    ds = MomentDataset(ann, vdirs, dt, _cfg())
    with pytest.raises(InputError) as e:
        ds[1]
    assert f"{dt / 'qid2.npz'}: feature file not found (needed by {ann}:2)" == str(e.value)


def test_loader_order_depends_only_on_seed(data):
    ann, vdirs, dt = data
    ds = MomentDataset(ann, vdirs, dt, _cfg(max_video_len=3))

    def order(seed):
        return [m["qid"] for b in make_loader(ds, 1, shuffle=True, seed=seed) for m in b.meta]
    orders = {tuple(order(s)) for s in range(8)}
    assert order(5) == order(5) and len(orders) > 1 and all(sorted(o) == [1, 2, 3] for o in orders)
    assert [m["qid"] for b in make_loader(ds, 2, shuffle=False, seed=0) for m in b.meta] == [1, 2, 3]
    with pytest.raises(InputError, match="shuffle=False when a sampler"):
        make_loader(ds, 2, shuffle=True, seed=0, sampler=torch.utils.data.SequentialSampler(ds))
