"""Saliency pair sampling, the negative-query pass, sine positions and Retriever.warmup on
hand cases whose answers are worked out in the comments."""
import math

import torch

from tdfast import Retriever, TDDETR, TDDETRConfig
from tdfast.model.layers import anchor_sine_embedding, sine_positions
from tdfast.training.saliency_pairs import sample_saliency_pairs
from tdfast.training.wrapper import TrainingModel

from conftest import random_batch


def test_hard_pairs_are_the_highest_against_the_lowest_relevant_clip():
    # Row 0: relevant clips 1..4 with labels 1, 4, 2, 3; clip 0 and 5 outside, 6 padding.
    sal = torch.tensor([[0.0, 1.0, 4.0, 2.0, 3.0, 0.0, 0.0]])
    gt = torch.tensor([[False, True, True, True, True, False, False]])
    vm = torch.tensor([[True] * 6 + [False]])
    g = torch.Generator().manual_seed(0)
    pos, neg, valid = sample_saliency_pairs(sal, gt, vm, 2, g)
    assert pos[0, :2].tolist() == [2, 4] and neg[0, :2].tolist() == [1, 3]  # 4 vs 1, 3 vs 2
    assert valid[0].tolist() == [True, True, True, True]
    # easy pairs: positives among the relevant clips, negatives outside every window, never padding
    assert set(pos[0, 2:].tolist()) <= {1, 2, 3, 4} and set(neg[0, 2:].tolist()) <= {0, 5}


def test_tied_labels_give_no_hard_pair_and_no_outside_clip_no_easy_pair():
    sal = torch.tensor([[2.0, 2.0, 2.0]])
    gt = torch.tensor([[True, True, True]])  # the whole video is the moment: nothing outside
    vm = torch.ones(1, 3, dtype=torch.bool)
    _, _, valid = sample_saliency_pairs(sal, gt, vm, 1, torch.Generator().manual_seed(0))
    assert valid.tolist() == [[False, False]]


def test_sine_positions_count_real_clips_only():
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    pos = sine_positions(mask, 4)  # [2, 4, 4]; frequencies 1, 1, 100, 100 (10000 ** (2 * (i // 2) / 4))
    # row 0 clip 1 is the last real clip: x = 2 / 2 * 2 pi (up to the 1e-6 guard)
    x = 2 * math.pi * 2 / (2 + 1e-6)
    want = torch.tensor([math.sin(x), math.cos(x), math.sin(x / 100), math.cos(x / 100)])
    assert (pos[0, 1] - want).abs().max() < 1e-5
    # the padded row's real clips equal the first two of a 2-clip video, whatever follows
    assert torch.equal(pos[0, :2], sine_positions(mask[:1, :2], 4)[0])
    # anchors: center then width, D/2 features each; (0.5, 0.25) at D = 4 -> 2 per coordinate
    a = anchor_sine_embedding(torch.tensor([[[0.5, 0.25]]]), 4)[0, 0]
    assert torch.allclose(a, torch.tensor([math.sin(math.pi), math.cos(math.pi),
                                           math.sin(math.pi / 2), math.cos(math.pi / 2)]), atol=1e-6)


def test_negative_query_pass_is_the_model_on_the_other_query():
    c = TDDETRConfig.from_name("tiny")
    model = TDDETR(c).eval()
    video, vmask, query, qmask = random_batch(c, 3, 12, 6)
    neg_q, neg_m = query.roll(1, 0), qmask.roll(1, 0)
    with torch.no_grad():
        out = TrainingModel(model)(video, vmask, query, qmask, neg_q, neg_m)
        want = model(video, vmask, neg_q, neg_m)["saliency_scores"]
    assert (out["saliency_scores_neg"] - want)[vmask].abs().max() < 1e-5
    assert (out["saliency_scores_neg"] - out["saliency_scores"])[vmask].abs().max() > 1e-3


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
