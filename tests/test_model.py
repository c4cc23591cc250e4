"""TD-DETR network: shapes, padding invariance, TD math vs the reference, switches."""
import math

import pytest
import torch

from tdfast import TDDETR, TDDETRConfig
from tdfast.model.attention import MASK_BIAS, mask_to_bias
from tdfast.model.layers import anchor_sine_embedding, sine_positions, temporal_endpoints
from tdfast.model.td_interaction import TDCrossAttention, td_interaction_reference, temporal_differences

from conftest import random_batch


def tiny(**kw) -> TDDETRConfig:
    return TDDETRConfig.from_name("tiny", **kw)


def test_output_shapes_and_ranges():
    c = tiny()
    model = TDDETR(c).eval()
    with torch.no_grad():
        out = model(*random_batch(c, 3, 20, 7))
    assert out["pred_spans"].shape == (3, c.num_queries, 2)
    assert out["pred_logits"].shape == (3, c.num_queries, 2)
    assert out["saliency_scores"].shape == (3, 20)
    assert "aux_outputs" not in out
    assert float(out["pred_spans"].min()) > 0 and float(out["pred_spans"].max()) < 1
    model.train()
    aux = model(*random_batch(c, 3, 20, 7))["aux_outputs"]
    assert [a["pred_spans"].shape for a in aux] == [(3, c.num_queries, 2)] * (c.num_decoder_layers - 1)


@pytest.mark.parametrize("use_tdem", [True, False])
def test_padding_does_not_change_valid_outputs(use_tdem):
    c = tiny(use_tdem=use_tdem)
    model = TDDETR(c).eval()
    video, vmask, query, qmask = random_batch(c, 1, 12, 5, ragged=False)
    base = model(video, vmask, query, qmask)
    pv = torch.cat((video, torch.randn(1, 9, c.video_dim) * 100), 1)  # garbage in the padding
    pq = torch.cat((query, torch.randn(1, 4, c.text_dim) * 100), 1)
    pvm = torch.cat((vmask, torch.zeros(1, 9, dtype=torch.bool)), 1)
    pqm = torch.cat((qmask, torch.zeros(1, 4, dtype=torch.bool)), 1)
    padded = model(pv, pvm, pq, pqm)
    for k in ("pred_spans", "pred_logits"):
        assert (padded[k] - base[k]).abs().max() < 1e-5, k
    assert (padded["saliency_scores"][:, :12] - base["saliency_scores"]).abs().max() < 1e-5


def test_temporal_difference_tokens_hand_case():
    x = torch.tensor([[[1.0, 2.0], [4.0, 0.0], [4.0, 5.0]]])  # [1, 3, 2]
    st = torch.tensor([0.5, -1.0])
    expected = torch.tensor([[[0.5, 3.0], [3.0, -2.0], [0.0, 5.0]]])
    assert torch.equal(temporal_differences(x, st), expected)


def test_temporal_endpoint_features_hand_case():
    # Moment-DETR's TEF: clip i of n real clips -> (i/n, (i+1)/n); 0 on padding.
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    expected = torch.tensor([[[0, 1 / 3], [1 / 3, 2 / 3], [2 / 3, 1], [0, 0]],
                             [[0, 0.25], [0.25, 0.5], [0.5, 0.75], [0.75, 1]]])
    assert (temporal_endpoints(mask) - expected).abs().max() < 1e-7
    # The model adds them itself: its input projection sees video_dim + 2 columns, or video_dim.
    assert TDDETR(tiny()).video_proj[0].linear.in_features == tiny().video_dim + 2
    assert TDDETR(tiny(use_tef=False)).video_proj[0].linear.in_features == tiny().video_dim


@pytest.mark.parametrize("use_tdem, beta", [(True, 0.7), (True, 0.0), (True, 1.0), (False, 0.7)])
def test_td_cross_attention_equals_reference(use_tdem, beta):
    torch.manual_seed(1)
    layer = TDCrossAttention(32, 4, 0.1, use_tdem, beta).eval()
    for p in layer.parameters():  # LayerNorm affine and biases away from their 1 / 0 init
        torch.nn.init.normal_(p, std=0.3)
    start = torch.randn(32) if use_tdem else None
    video, pos, text = torch.randn(3, 11, 32), torch.randn(3, 11, 32), torch.randn(3, 6, 32)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, 2:] = False
    mask[2, 5:] = False
    got = layer(video, pos, start, text, mask_to_bias(mask, video.dtype))
    want = td_interaction_reference(video, pos, text, mask, layer.weights(start), 4, beta)
    assert (got - want).abs().max() < 1e-5
    # The residual merge: beta * V + (1 - beta) * A_t + A_v, so V's weight is exactly beta.
    if use_tdem:
        shifted = layer(video + 1.0, pos - 1.0, start, text, mask_to_bias(mask, video.dtype))
        assert (shifted - got - beta).abs().max() < 1e-5


def test_beta_one_keeps_the_dynamics_branch_out_of_the_output_only_through_its_weight():
    # beta = 1: s = V + 0 * A_t + A_v. The dynamics parameters get zero gradient, the
    # video branch does not.
    c = tiny(beta=1.0)
    model = TDDETR(c).train()
    out = model(*random_batch(c, 2, 10, 4))
    (out["pred_spans"].sum() + out["saliency_scores"].sum() + out["pred_logits"].sum()).backward()
    cross = model.td_layers[0].cross
    for p in (cross.attn_dyn.q_proj.weight, cross.attn_dyn.k_proj.weight, cross.flow_proj[0].linear.weight,
              model.start_token):
        assert p.grad is not None and float(p.grad.abs().max()) == 0.0
    assert float(cross.attn.q_proj.weight.grad.abs().max()) > 0.0


def test_without_tdem_the_layer_has_no_dynamics_parameters():
    names = {n for n, _ in TDDETR(tiny(use_tdem=False)).named_parameters()}
    assert not any(("attn_dyn" in n or "start_token" in n or "flow_proj" in n) for n in names)
    tdem = {n for n, _ in TDDETR(tiny()).named_parameters()}
    assert {"start_token", "td_layers.0.cross.attn_dyn.k_proj.weight",
            "td_layers.0.cross.flow_proj.1.linear.weight"} <= tdem


def test_decoder_first_layer_alone_has_the_query_position_projection():
    model = TDDETR(tiny(num_decoder_layers=3))
    assert [layer.ca_q_pos is not None for layer in model.decoder.layers] == [True, False, False]


def test_each_layer_predicts_from_the_anchor_it_was_given():
    # Layer 0's spans are sigmoid(span_head(h0) + logit(sigmoid(anchors))): with the span
    # head zeroed they are the anchors themselves; later layers use refined anchors.
    c = tiny(num_decoder_layers=3)
    model = TDDETR(c).train()
    torch.nn.init.zeros_(model.span_head.layers[-1].weight)
    torch.nn.init.zeros_(model.span_head.layers[-1].bias)
    out = model(*random_batch(c, 2, 10, 4))
    first = out["aux_outputs"][0]["pred_spans"]
    assert (first - model.anchors.sigmoid().expand_as(first)).abs().max() < 1e-6
    assert (out["pred_spans"] - first).abs().max() > 1e-3  # refined by bbox_embed


def test_mask_bias_is_finite():
    bias = mask_to_bias(torch.tensor([[True, False]]), torch.float16)
    assert bias.shape == (1, 1, 1, 2)
    assert bias.flatten().tolist() == [0.0, MASK_BIAS]
    assert torch.isfinite(bias).all()


def test_qvhighlights_preset_forward_on_cpu():
    c = TDDETRConfig.from_name("qvhighlights")
    model = TDDETR(c).eval()
    video, vmask, query, qmask = random_batch(c, 2, 75, 32)
    with torch.no_grad():
        out = model(video, vmask, query, qmask)
        alone = model(video[1:, :72], vmask[1:, :72], query[1:, :30], qmask[1:, :30])
    assert out["saliency_scores"].shape == (2, 75)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert (out["pred_logits"][1] - alone["pred_logits"][0]).abs().max() < 1e-5


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
