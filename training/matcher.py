"""Hungarian matching between predicted moments and ground-truth spans (DETR / Moment-DETR)."""
from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from tdfast.spans import cxw_to_xx, pairwise_giou

FOREGROUND = 0  # index of the foreground logit in ``pred_logits`` (Moment-DETR convention)

Match = tuple[Tensor, Tensor]  # (prediction indices [n], target indices [n]), int64


def match_cost(pred_spans: Tensor, pred_logits: Tensor, tgt_spans: Tensor, w_class: float,
               w_span_l1: float, w_span_giou: float) -> Tensor:
    """Cost of assigning each prediction to each target.

    pred_spans [N, 2] and tgt_spans [T, 2] normalized (center, width); pred_logits [N, 2].
    Returns [N, T]: ``w_span_l1 * L1 - w_span_giou * gIoU - w_class * p(foreground)``,
    the same coefficients as the losses (paper Sec. 4.1).
    """
    prob_fg = pred_logits.float().softmax(-1)[:, FOREGROUND]  # [N]
    cost_l1 = torch.cdist(pred_spans.float(), tgt_spans.float(), p=1)  # [N, T]
    giou = pairwise_giou(cxw_to_xx(pred_spans.float()), cxw_to_xx(tgt_spans.float()))  # [N, T]
    return w_span_l1 * cost_l1 - w_span_giou * giou - w_class * prob_fg[:, None]


@torch.no_grad()
def hungarian_match(pred_spans: Tensor, pred_logits: Tensor, tgt_spans: list[Tensor],
                    w_class: float, w_span_l1: float, w_span_giou: float) -> list[Match]:
    """Optimal one-to-one assignment per sample.

    pred_spans [B, Q, 2], pred_logits [B, Q, 2]; tgt_spans: B tensors [n_i, 2] (n_i may be 0).
    Returns B pairs (pred_idx [k_i], tgt_idx [k_i]) with k_i = min(Q, n_i), on the CPU,
    sorted by prediction index. One cost matrix for the whole batch, then one
    ``linear_sum_assignment`` per sample on its block.
    """
    b, q = pred_spans.shape[:2]
    sizes = [int(t.shape[0]) for t in tgt_spans]
    empty = (torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64))
    if sum(sizes) == 0:
        return [empty for _ in range(b)]
    targets = torch.cat([t.to(pred_spans.device) for t in tgt_spans])  # [T, 2]
    cost = match_cost(pred_spans.flatten(0, 1), pred_logits.flatten(0, 1), targets,
                      w_class, w_span_l1, w_span_giou)  # [B*Q, T]
    cost = cost.view(b, q, -1).cpu().numpy()
    out: list[Match] = []
    start = 0
    for i, n in enumerate(sizes):
        if n == 0:
            out.append(empty)
            continue
        rows, cols = linear_sum_assignment(cost[i, :, start:start + n])
        out.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        start += n
    return out


def matched_pairs(matches: list[Match]) -> tuple[Tensor, Tensor, Tensor]:
    """Flatten per-sample matches -> (batch_idx [K], pred_idx [K], tgt_idx [K]), all int64."""
    batch_idx = torch.cat([torch.full_like(p, i) for i, (p, _) in enumerate(matches)])
    pred_idx = torch.cat([p for p, _ in matches])
    tgt_idx = torch.cat([t for _, t in matches])
    return batch_idx, pred_idx, tgt_idx

