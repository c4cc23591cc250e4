import numpy as np
import pytest
import torch

from tdfast.spans import cxw_to_xx, elementwise_iou, pairwise_giou, pairwise_iou, xx_to_cxw


def test_pairwise_iou_hand_values():
    a = np.array([[0.0, 10.0], [5.0, 5.0]])
    b = np.array([[5.0, 15.0], [20.0, 30.0], [5.0, 5.0], [0.0, 10.0]])
    expected = np.array([[5 / 15, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(pairwise_iou(a, b), expected)


def test_giou_identical_is_one_and_disjoint_negative():
    a = torch.tensor([[0.2, 0.4], [0.0, 1.0]])
    g = pairwise_giou(a, a)
    assert torch.allclose(torch.diagonal(g), torch.ones(2))
    # [0,1] vs [2,3]: IoU 0, enclosure 3, union 2 -> gIoU = -(3-2)/3
    d = pairwise_giou(torch.tensor([[0.0, 1.0]]), torch.tensor([[2.0, 3.0]]))
    assert d.item() == pytest.approx(-1 / 3)


def test_numpy_and_torch_agree_and_elementwise_is_diagonal():
    rng = np.random.default_rng(0)
    s = np.sort(rng.uniform(0, 50, size=(7, 2)), axis=1)
    t = np.sort(rng.uniform(0, 50, size=(7, 2)), axis=1)
    np.testing.assert_allclose(pairwise_iou(torch.tensor(s), torch.tensor(t)).numpy(), pairwise_iou(s, t))
    np.testing.assert_allclose(elementwise_iou(s, t), np.diagonal(pairwise_iou(s, t)))


def test_span_conversion_round_trip_values():
    x = torch.tensor([[0.5, 0.2], [0.1, 0.1]])
    np.testing.assert_allclose(cxw_to_xx(x).numpy(), [[0.4, 0.6], [0.05, 0.15]], rtol=1e-6)
    np.testing.assert_allclose(xx_to_cxw(cxw_to_xx(x)).numpy(), x.numpy(), rtol=1e-6)
