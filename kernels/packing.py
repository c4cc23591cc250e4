"""Pack a TD layer's weights into the layout the fused kernel reads.

The kernel multiplies row tiles by weight tiles ``[in, out]`` (row-major,
contiguous along the output features), so every projection is stored
transposed from nn.Linear's ``[out, in]``. The beta-merge is folded into one
output matrix (DESIGN.md, "The fused kernel"):

    out = beta * (A_v Wo_v^T + bo_v) + (1 - beta) * (A_t Wo_t^T + bo_t)
        = [A_v | A_t] @ [beta Wo_v^T ; (1 - beta) Wo_t^T] + (beta bo_v + (1 - beta) bo_t)

Weight matrices take the activations' dtype (the kernel feeds them to the
tensor cores as is); biases stay float32 because they are added to float32
accumulators. Packing is pure PyTorch and runs once per (dtype, device,
weight version) in ``FusedTDCrossAttention``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tdfast.model.td_interaction import TDWeights


@dataclass(frozen=True)
class PackedTDWeights:
    """One TD layer's weights, kernel layout. D = hidden dim.

    ``has_video``/``has_dyn`` say which attention branches contribute: without
    TDEM only the video branch; with TDEM and beta = 1 (or 0) the other branch
    has weight zero and the kernel skips it.
    """

    num_heads: int
    has_video: bool
    has_dyn: bool
    wq_v: Tensor  # [D, D] (in, out), p_d; unused (zeros) when not has_video
    bq_v: Tensor  # [D] float32
    wq_t: Tensor  # [D, D] (in, out), p_t; unused (zeros) when not has_dyn
    bq_t: Tensor  # [D] float32
    start: Tensor  # [D] start token st (Eq. 2); zeros when not has_dyn
    wkv: Tensor  # [D, 2D] (in, out): K columns then V columns
    bkv: Tensor  # [2D] float32
    wo: Tensor  # [2D, D] (in, out): beta * Wo_v^T on top of (1 - beta) * Wo_t^T
    bo: Tensor  # [D] float32, merged output bias

    @property
    def dim(self) -> int:
        return self.wkv.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.wkv.dtype

    @property
    def device(self) -> torch.device:
        return self.wkv.device


def pack_weights(w: TDWeights, num_heads: int, beta: float, dtype: torch.dtype,
                 device: torch.device | str | None = None) -> PackedTDWeights:
    """``TDWeights`` (nn.Linear layout) -> ``PackedTDWeights`` in ``dtype`` on ``device``.

    ``beta`` is the merge weight of the video branch (Eq. 6); it is ignored
    without TDEM (``w.wq_t is None``), where the layer is ``out_video(A_v)``.
    The merge is computed in float32 before the cast to ``dtype``.
    """
    device = w.wq_v.device if device is None else torch.device(device)
    f32 = lambda t: t.detach().to(device=device, dtype=torch.float32)  # noqa: E731
    use_tdem = w.wq_t is not None
    beta_v = float(beta) if use_tdem else 1.0
    has_video = beta_v != 0.0
    has_dyn = use_tdem and beta_v != 1.0
    d = w.wq_v.shape[1]
    zeros_dd = torch.zeros(d, d, device=device)
    zeros_d = torch.zeros(d, device=device)
    wo_t = f32(w.wo_t).T * (1.0 - beta_v) if has_dyn else zeros_dd
    bo = f32(w.bo_v) * beta_v + (f32(w.bo_t) * (1.0 - beta_v) if has_dyn else 0.0)
    cast = lambda t: t.to(dtype).contiguous()  # noqa: E731
    return PackedTDWeights(
        num_heads=num_heads, has_video=has_video, has_dyn=has_dyn,
        wq_v=cast(f32(w.wq_v).T), bq_v=f32(w.bq_v).contiguous(),
        wq_t=cast(f32(w.wq_t).T if has_dyn else zeros_dd),
        bq_t=(f32(w.bq_t) if has_dyn else zeros_d).contiguous(),
        start=cast(f32(w.start) if has_dyn else zeros_d),
        wkv=cast(torch.cat((f32(w.wk).T, f32(w.wv).T), dim=1)),  # [D, 2D]
        bkv=torch.cat((f32(w.bk), f32(w.bv))).contiguous(),
        wo=cast(torch.cat((f32(w.wo_v).T * beta_v, wo_t), dim=0)),  # [2D, D]
        bo=bo.contiguous(),
    )
