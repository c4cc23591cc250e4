"""Hungarian matcher: cost formula by hand, optimum against brute force over all permutations."""
from __future__ import annotations

import math
from itertools import permutations

import numpy as np
import pytest
import torch

from tdfast.training.matcher import hungarian_match, match_cost


def brute_force(cost: np.ndarray) -> float:
    """Cheapest total cost of an injective map targets -> predictions, by enumeration. cost [N, T]."""
    n, t = cost.shape
    return min(sum(cost[p, j] for j, p in enumerate(perm)) for perm in permutations(range(n), t))


def test_cost_matches_hand_computation():
    # pred (c=0.5, w=0.2) = [0.4, 0.6]; target (0.5, 0.4) = [0.3, 0.7]
    # L1 = 0 + 0.2; IoU = 0.2 / 0.4 = 0.5, enclosing = union -> gIoU 0.5; p_fg = e^2 / (e^2 + 1)
    cost = match_cost(torch.tensor([[0.5, 0.2]]), torch.tensor([[2.0, 0.0]]), torch.tensor([[0.5, 0.4]]),
                      w_class=4.0, w_span_l1=10.0, w_span_giou=1.0)
    p_fg = math.exp(2) / (math.exp(2) + 1)
    assert cost.item() == pytest.approx(10 * 0.2 - 0.5 - 4 * p_fg, abs=1e-6)


def test_cost_giou_term_for_disjoint_spans():
    # [0.1, 0.2] vs [0.5, 0.6]: IoU 0, enclosing 0.5, union 0.2 -> gIoU = -(0.5 - 0.2) / 0.5 = -0.6
    cost = match_cost(torch.tensor([[0.15, 0.1]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[0.55, 0.1]]),
                      w_class=0.0, w_span_l1=0.0, w_span_giou=1.0)
    assert cost.item() == pytest.approx(0.6, abs=1e-6)


@pytest.mark.parametrize("seed", range(12))
def test_matching_is_optimal_like_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    b, q = 3, 5
    spans = torch.rand(b, q, 2, generator=g) * torch.tensor([1.0, 0.5])
    logits = torch.randn(b, q, 2, generator=g)
    sizes = [int(n) for n in torch.randint(0, q + 1, (b,), generator=g)]
    targets = [torch.rand(n, 2, generator=g) * torch.tensor([1.0, 0.5]) + torch.tensor([0.0, 0.01])
               for n in sizes]
    weights = dict(w_class=4.0, w_span_l1=10.0, w_span_giou=1.0)
    matches = hungarian_match(spans, logits, targets, **weights)
    for i, (pred_idx, tgt_idx) in enumerate(matches):
        assert len(pred_idx) == sizes[i]
        assert sorted(tgt_idx.tolist()) == list(range(sizes[i]))  # every target matched once
        assert len(set(pred_idx.tolist())) == sizes[i]  # to distinct predictions
        if sizes[i] == 0:
            continue
        cost = match_cost(spans[i], logits[i], targets[i], **weights).numpy().astype(np.float64)
        total = float(cost[pred_idx.numpy(), tgt_idx.numpy()].sum())
        assert total == pytest.approx(brute_force(cost), abs=1e-5)


def test_more_targets_than_queries_matches_every_query():
    spans = torch.tensor([[[0.2, 0.1], [0.7, 0.1]]])
    logits = torch.zeros(1, 2, 2)
    targets = [torch.tensor([[0.7, 0.1], [0.2, 0.1], [0.5, 0.3]])]
    pred_idx, tgt_idx = hungarian_match(spans, logits, targets, 1.0, 10.0, 1.0)[0]
    # the two queries sit exactly on targets 1 and 0; target 2 stays unmatched
    assert dict(zip(pred_idx.tolist(), tgt_idx.tolist())) == {0: 1, 1: 0}
