"""The export-only module: TDDETR behind a flat tensor signature.

Exporters, TensorRT and Triton want positional tensors in and a fixed tuple
out; training wants ``forward(...) -> dict`` with auxiliary outputs. This thin
wrapper gives the first without touching the second (segment-anything's
pattern). Masks may be bool or 0/1 numbers; they become bool here and the
model turns them into finite additive biases (``tdfast.model.attention``), so
the graph never holds -inf.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tdfast.errors import InputError
from tdfast.model.config import TDDETRConfig
from tdfast.model.tddetr import OUTPUT_NAMES  # noqa: F401  (tdfast.export.OUTPUT_NAMES)

INPUT_NAMES = ("video", "video_mask", "query", "query_mask")



def check_max_batch(value: int, name: str = "max_batch") -> None:
    """InputError unless ``value`` (the largest batch an artifact is built or served for;
    ``name``: the argument as the caller knows it) is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name}: expected an integer >= 1, got {value!r}")


# Written into every artifact's metadata so a deployer needs no Python to read the contract.
TENSOR_DOCS = {
    "video": "[B, L, video_dim] float32 clip features as in the feature files (no TEF columns)",
    "video_mask": "[B, L] bool, True = real clip, False = padding; at least one True per row",
    "query": "[B, M, text_dim] float32 query token features",
    "query_mask": "[B, M] bool, True = real token, False = padding; at least one True per row",
    "pred_spans": "[B, Q, 2] float32 (center, width) normalized to the video's real length",
    "pred_logits": "[B, Q, 2] float32 (foreground, background) logits; score = softmax[..., 0]",
    "saliency_scores": "[B, L] float32 per-clip saliency; padding positions are meaningless",
}


class FixedSlopeReLU(nn.Module):
    """A one-slope ``nn.PReLU`` frozen for inference: ``leaky_relu`` with the slope as a
    constant, the same values. Exported as ONNX ``LeakyRelu`` (slope an attribute), which
    ONNX Runtime's CPU kernels run several times faster than ``PRelu`` with a slope tensor
    (docs/benchmarks.md, "Where a CPU forward's time goes")."""

    def __init__(self, slope: float) -> None:
        super().__init__()
        self.slope = slope

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.slope)


def _one_slope(m: nn.Module) -> bool:
    return isinstance(m, nn.PReLU) and m.weight.numel() == 1


def freeze_activations(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every one-slope ``nn.PReLU`` replaced by ``FixedSlopeReLU``
    (the caller's model is not changed; ``model`` itself when it has none)."""
    if not any(map(_one_slope, model.modules())):
        return model
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if _one_slope(child):
                setattr(parent, name, FixedSlopeReLU(child.weight.item()))
    return model


class ExportWrapper(nn.Module):
    """``(video, video_mask, query, query_mask) -> (pred_spans, pred_logits, saliency_scores)``.

    Shapes as in ``TENSOR_DOCS``. Always runs the model in eval mode (no dropout,
    no auxiliary outputs), with its PReLU slopes frozen (``freeze_activations``).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = freeze_activations(model)

    def forward(self, video: Tensor, video_mask: Tensor, query: Tensor, query_mask: Tensor
                ) -> tuple[Tensor, Tensor, Tensor]:
        # .bool() is a no-op on the bool graph inputs (no op in the ONNX graph) and maps 0/1 in eager.
        out = self.model(video, video_mask.bool(), query, query_mask.bool())
        return out["pred_spans"], out["pred_logits"], out["saliency_scores"]


def random_inputs(config: TDDETRConfig, batch: int, video_len: int, query_len: int,
                  padded: bool = True, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A random padded batch (video, video_mask, query, query_mask) on CPU, float32/bool.

    With ``padded``, row i keeps a different number of real clips and tokens (row 0 is
    full, later rows shorter, never empty) and padding holds random values too, so a
    model that leaks padding into real positions shows it.
    """
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(batch, video_len, config.video_dim, generator=g)  # [B, L, Dv]
    query = torch.randn(batch, query_len, config.text_dim, generator=g)  # [B, M, Dt]
    video_len_i = torch.full((batch,), video_len)
    query_len_i = torch.full((batch,), query_len)
    if padded and batch > 1:
        video_len_i = torch.randint(1, video_len + 1, (batch,), generator=g)
        query_len_i = torch.randint(1, query_len + 1, (batch,), generator=g)
        video_len_i[0], query_len_i[0] = video_len, query_len
    video_mask = torch.arange(video_len)[None] < video_len_i[:, None]  # [B, L]
    query_mask = torch.arange(query_len)[None] < query_len_i[:, None]  # [B, M]
    return video, video_mask, query, query_mask
