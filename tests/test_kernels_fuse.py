"""fuse_model: the whole TD-DETR with fused TD interactions equals the eager model."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from kernels_support import KERNEL_DEVICE
from tdfast import TDDETR, TDDETRConfig
from tdfast.errors import BackendUnavailableError, InputError
from tdfast.kernels import FusedTDCrossAttention, fuse_model
from tdfast.kernels import td_interaction as kernel_module
from conftest import random_batch

KEYS = ("pred_spans", "pred_logits", "saliency_scores")


def _models(use_tdem: bool, beta: float = 0.5) -> tuple[TDDETR, TDDETR]:
    config = TDDETRConfig.from_name("tiny", use_tdem=use_tdem, beta=beta)
    eager = TDDETR(config).to(KERNEL_DEVICE).eval()
    return eager, fuse_model(copy.deepcopy(eager))


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts launcher calls, so a test can tell the fused path really ran."""
    calls = []
    launch = kernel_module.td_interaction
    monkeypatch.setattr(kernel_module, "td_interaction", lambda *a, **k: calls.append(1) or launch(*a, **k))
    return calls


@pytest.mark.parametrize("use_tdem,beta", [(True, 0.5), (True, 0.0), (True, 1.0), (False, 0.5)])
def test_fused_model_matches_eager_on_ragged_batch(use_tdem, beta, kernel_calls):
    eager, fused = _models(use_tdem, beta)
    batch = [t.to(KERNEL_DEVICE) for t in random_batch(eager.config, 5, 23, 9, seed=3)]
    with torch.no_grad():
        want, got = eager(*batch), fused(*batch)
    assert len(kernel_calls) == eager.config.num_td_layers
    vmask = batch[1]
    for key in KEYS:
        diff = got[key] - want[key]
        if key == "saliency_scores":
            diff = diff[vmask]  # real clips only (DESIGN.md, "Tolerances")
        assert diff.abs().max().item() <= 1e-4, f"{key}: max abs diff {diff.abs().max().item()}"
    assert torch.equal(got["pred_logits"][:, :, 0].argmax(1), want["pred_logits"][:, :, 0].argmax(1))


def test_fused_model_keeps_parameters_and_state_dict():
    eager, fused = _models(True)
    layer = fused.td_layers[0].cross
    assert isinstance(layer, FusedTDCrossAttention)
    assert list(fused.state_dict()) == list(eager.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(fused.state_dict().values(), eager.state_dict().values()))
    # the fused layer adopts the eager layer's parameter objects (fuse_model is in place)
    before = dict(eager.td_layers[0].cross.named_parameters())
    fuse_model(eager)
    assert all(p is before[n] for n, p in eager.td_layers[0].cross.named_parameters())
    assert fuse_model(eager) is eager  # twice is harmless


def test_packed_weights_follow_in_place_updates():
    eager, fused = _models(True)
    batch = [t.to(KERNEL_DEVICE) for t in random_batch(eager.config, 2, 11, 5, seed=4)]
    with torch.no_grad():
        fused(*batch)  # packs and caches
        for model in (eager, fused):
            model.td_layers[0].cross.attn_dyn.q_proj.weight.mul_(3.0)
            model.td_layers[0].cross.flow_proj[1].norm.bias.add_(0.5)
            model.start_token.add_(1.0)  # passed at forward, never cached
        want, got = eager(*batch), fused(*batch)
    diff = (got["saliency_scores"] - want["saliency_scores"])[batch[1]]
    assert diff.abs().max().item() <= 1e-4


def test_gradients_through_fused_layer_refused():
    _, fused = _models(True)
    batch = [t.to(KERNEL_DEVICE) for t in random_batch(fused.config, 2, 8, 4)]
    with pytest.raises(BackendUnavailableError, match=r"no backward pass; run the model under "
                                                      r"torch.no_grad\(\)"):
        fused(*batch)


def test_fuse_model_refuses_cpu_without_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    model = TDDETR(TDDETRConfig.from_name("tiny"))
    with pytest.raises(BackendUnavailableError, match=r"set TRITON_INTERPRET=1"):
        fuse_model(model)


def test_fuse_model_needs_td_layers():
    with pytest.raises(InputError, match=r"model: expected a module containing TDCrossAttention "
                                         r"layers \(a TDDETR\), got Linear with none"):
        fuse_model(nn.Linear(4, 4).to(KERNEL_DEVICE))
