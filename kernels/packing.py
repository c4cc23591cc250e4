"""Pack a TD layer's weights (``TDWeights``, nn.Linear layout) into the layout the fused kernels read.

The kernels multiply row tiles by weight tiles ``[in, out]`` (row-major, contiguous along
the output features), so every matrix is stored transposed from nn.Linear's ``[out, in]``.

Heads are padded: a head of Dh features takes ``BDH = max(16, next_pow2(Dh))`` columns
(``tl.dot`` needs every dim >= 16), so the query / key / value projections are
``[D, H * BDH]`` with zero columns after each head's Dh real ones, and the output
projections ``[H * BDH, D]`` with zero rows there. At qvhighlights widths (Dh = 32) the
padding is empty; at the tiny preset (Dh = 8) it doubles the head width.

The first flow unit's LayerNorm is folded into its Linear (``_fold_layer_norm``); the second
stays a LayerNorm on the kernel's register tile.

The official merge ``s = beta * V + (1 - beta) * (A_t Wo_t^T + bo_t) + (A_v Wo_v^T + bo_v)`` is
folded into the packing: ``wo_t`` holds ``(1 - beta) Wo_t^T`` and ``bo`` the merged bias
``bo_v + (1 - beta) bo_t``, so the kernel adds ``beta * V`` and two GEMMs. Without TDEM,
or with beta = 1, the dynamics branch has weight zero (``has_dyn`` False) and is compiled out;
the layer is then ``V + A_v Wo_v^T + bo_v`` (``beta`` = 1).

Matrices take the activations' dtype (fed to the tensor cores as is); biases, LayerNorm
parameters and beta stay float32 (added to float32 accumulators).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tdfast.model.td_interaction import TDWeights


def padded_head_dim(head_dim: int) -> int:
    """Columns one head takes in the packed layout: a power of two >= 16 (``tl.dot``'s minimum)."""
    return max(16, 1 << (head_dim - 1).bit_length())


@dataclass(frozen=True)
class PackedTDWeights:
    """One TD layer's weights in kernel layout. D = hidden dim, P = H * BDH (padded heads).

    ``has_dyn``: the dynamics branch (flow projection, A_t) contributes; False without TDEM
    and when beta = 1. Unused tensors (no dynamics branch) are zero-size placeholders.
    """

    num_heads: int
    head_dim: int  # Dh (real)
    beta: float  # weight of the video residual (1.0 without the dynamics branch)
    has_dyn: bool
    wq_v: Tensor  # [D, P] video query projection
    bq_v: Tensor  # [P] float32
    wo_v: Tensor  # [P, D] video output projection
    wkv: Tensor  # [S, D, P]: K_v, V_v (, K_t, V_t) text projections; S = 4 with has_dyn, else 2
    bkv: Tensor  # [S, P] float32
    bo: Tensor  # [D] float32: bo_v + (1 - beta) bo_t
    f1_gain_sum: Tensor  # [D] float32: g1 W1^T, column sums of the folded flow unit 1 weight
    f1_bias: Tensor  # [D] float32: b1_ln W1^T + b1 (LayerNorm bias through the Linear, plus its bias)
    w_f1: Tensor  # [D, D] flow unit 1: diag(g1) W1^T (LayerNorm scale folded in)
    ln2_w: Tensor  # flow unit 2
    ln2_b: Tensor
    w_f2: Tensor
    b_f2: Tensor
    wq_t: Tensor  # [D, P] dynamics query projection
    bq_t: Tensor  # [P] float32
    wo_t: Tensor  # [P, D]: (1 - beta) Wo_t^T

    @property
    def dim(self) -> int:
        return self.wq_v.shape[0]

    @property
    def padded_head_dim(self) -> int:
        return self.wq_v.shape[1] // self.num_heads

    @property
    def kv_sets(self) -> int:
        return self.wkv.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.wq_v.dtype

    @property
    def device(self) -> torch.device:
        return self.wq_v.device


def _fold_layer_norm(g: Tensor, b: Tensor, weight: Tensor, bias: Tensor, dtype: torch.dtype
                     ) -> dict[str, Tensor]:
    """LayerNorm(g, b) then Linear(weight [out, in], bias), as the kernel computes it:

        LN(t) W^T + c = rstd (t (g o W^T)) - rstd mu (g W^T) + (b W^T + c)

    so a program needs only the row sums of t and t^2, gathered in the GEMM's own K-loop."""
    wt = weight.T  # [in, out]
    return dict(w_f1=(g[:, None] * wt).to(dtype).contiguous(), f1_gain_sum=(g @ wt).contiguous(),
                f1_bias=(b @ wt + bias).contiguous())


def pack_weights(w: TDWeights, num_heads: int, beta: float, dtype: torch.dtype,
                 device: torch.device | str | None = None) -> PackedTDWeights:
    """``TDWeights`` (nn.Linear layout) -> ``PackedTDWeights`` in ``dtype`` on ``device``.

    ``beta`` is ignored without TDEM (``w.wq_t is None``). Products with beta are taken in
    float32 before the cast to ``dtype``. ``w.start`` is not packed: the kernel reads the
    model's start token as passed to ``forward``.
    """
    device = w.wq_v.device if device is None else torch.device(device)
    d = w.wq_v.shape[1]
    dh = d // num_heads
    bdh = padded_head_dim(dh)
    has_dyn = w.wq_t is not None and float(beta) != 1.0
    beta = float(beta) if has_dyn else 1.0

    def f32(t: Tensor) -> Tensor:
        return t.detach().to(device=device, dtype=torch.float32)

    def heads_out(weight: Tensor) -> Tensor:  # nn.Linear [D(out), D(in)] -> [D(in), P]
        t = f32(weight).T.reshape(d, num_heads, dh)
        return torch.nn.functional.pad(t, (0, bdh - dh)).reshape(d, num_heads * bdh)

    def heads_bias(bias: Tensor) -> Tensor:  # [D] -> [P]
        return torch.nn.functional.pad(f32(bias).reshape(num_heads, dh), (0, bdh - dh)).flatten()

    def heads_in(weight: Tensor) -> Tensor:  # out_proj [D(out), D(in)] -> [P, D(out)]
        t = f32(weight).T.reshape(num_heads, dh, d)
        return torch.nn.functional.pad(t, (0, 0, 0, bdh - dh)).reshape(num_heads * bdh, d)

    def mat(t: Tensor) -> Tensor:
        return t.to(dtype).contiguous()

    def vec(t: Tensor) -> Tensor:
        return t.contiguous()

    none_m = torch.empty(0, device=device, dtype=dtype)
    none_v = torch.empty(0, device=device, dtype=torch.float32)
    kv = [(w.wk_v, w.bk_v), (w.wv_v, w.bv_v)] + ([(w.wk_t, w.bk_t), (w.wv_t, w.bv_t)] if has_dyn else [])
    bo = f32(w.bo_v) + ((1.0 - beta) * f32(w.bo_t) if has_dyn else 0.0)
    return PackedTDWeights(
        num_heads=num_heads, head_dim=dh, beta=beta, has_dyn=has_dyn,
        wq_v=mat(heads_out(w.wq_v)), bq_v=vec(heads_bias(w.bq_v)), wo_v=mat(heads_in(w.wo_v)),
        wkv=mat(torch.stack([heads_out(m) for m, _ in kv])),
        bkv=vec(torch.stack([heads_bias(b) for _, b in kv])), bo=vec(bo),
        **(_fold_layer_norm(f32(w.ln1_w), f32(w.ln1_b), f32(w.w_f1), f32(w.b_f1), dtype) if has_dyn
           else dict(f1_gain_sum=none_v, f1_bias=none_v, w_f1=none_m)),
        ln2_w=vec(f32(w.ln2_w)) if has_dyn else none_v, ln2_b=vec(f32(w.ln2_b)) if has_dyn else none_v,
        w_f2=mat(f32(w.w_f2).T) if has_dyn else none_m, b_f2=vec(f32(w.b_f2)) if has_dyn else none_v,
        wq_t=mat(heads_out(w.wq_t)) if has_dyn else none_m,
        bq_t=vec(heads_bias(w.bq_t)) if has_dyn else none_v,
        wo_t=mat((1.0 - beta) * heads_in(w.wo_t)) if has_dyn else none_m,
    )
