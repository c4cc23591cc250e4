"""Fused TD cross-attention (one TD layer's ``TDCrossAttention.forward``) in one Triton kernel.

Math (DESIGN.md, "The fused kernel"; oracle: ``td_cross_attention_reference``),
per batch element, x = video + positions [L, D], text [M, D], H heads of Dh:

    K_h, V_h = text Wk_h + bk_h, text Wv_h + bv_h         [M, Dh]  (text projected once per program)
    Qv_h     = x Wq_v,h + bq_v,h                           [L, Dh]
    Qt_h     = (x_t - x_{t-1}) Wq_t,h + bq_t,h, x_0 = st   [L, Dh]  (temporal differences, Eq. 3)
    A*_h     = softmax(Q*_h K_h^T / sqrt(Dh) + bias) V_h   both against the same K_h, V_h
    out      = sum_h [Av_h | At_h] @ [beta Wo_v,h ; (1-beta) Wo_t,h] + merged bias

Layout decisions (docs/kernels.md has the measurements to redo on a GPU):

* Grid (L-blocks, B, head groups). A program owns BLOCK_L video rows and, by
  default, every head: the output projection mixes heads, and owning all of
  them lets the program accumulate ``out`` for its rows in registers and store
  it once -- no [B, L, 2D] round trip through memory for a second GEMM, no
  atomics, deterministic. With ``head_groups > 1`` (more programs for small
  batches) each program does H / head_groups heads and adds its partial
  output with float32 atomics instead.
* Temporal differences: ``W(x_t - x_{t-1}) = W x_t - W x_{t-1}``; the kernel
  uses it right-to-left. Each K-chunk of x is loaded together with the same
  chunk shifted one row up (same cache lines), subtracted in fp32 and
  projected once, which halves the dynamics GEMM against projecting both rows
  and subtracting; the p_t bias is added once, after the GEMM, exactly as in
  the reference (it cancels between the two projected rows).
* M <= 64, so all text keys are one tile: the online softmax has a single
  block and reduces to max-subtract / exp2 / normalise, done once per branch.
* Masking is additive and finite: the caller's bias (0 or MASK_BIAS = -1e4)
  on real key columns, -1e30 on tile columns past M. No -inf anywhere.
* fp16/bf16 operands go to tl.dot as is, accumulation is fp32; fp32 uses
  IEEE products unless the caller allows TF32.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from tdfast.kernels.availability import interpreting, require_triton
from tdfast.kernels.packing import PackedTDWeights
from tdfast.kernels.validate import check_td_inputs

INTERPRETED = interpreting()  # how the @triton.jit below was defined (see availability.py)
LOG2E = 1.4426950408889634


@triton.jit
def _attend(q, k_t, v, bias, PRECISION: tl.constexpr):
    """softmax2(q k_t + bias) v, one key block: q [BL, BDH], k_t [BDH, BM], v [BM, BDH],
    bias [BM] (log2 domain) -> [BL, BDH] fp32."""
    s = tl.dot(q, k_t, input_precision=PRECISION) + bias[None, :]  # [BL, BM], log2 units
    p = tl.math.exp2(s - tl.max(s, axis=1)[:, None])
    denom = tl.sum(p, axis=1)
    return tl.dot(p.to(v.dtype), v, input_precision=PRECISION) / denom[:, None]


@triton.jit
def _td_cross_attention_fwd(
    x_ptr, text_ptr, bias_ptr, out_ptr, kv_ptr,
    wq_v_ptr, bq_v_ptr, wq_t_ptr, bq_t_ptr, start_ptr, wkv_ptr, bkv_ptr, wo_ptr, bo_ptr,
    L, M, D, stride_bias_b, qk_scale,
    DH: tl.constexpr, HEADS_PER_PROGRAM: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_DH: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_VIDEO: tl.constexpr, HAS_DYN: tl.constexpr, PRECOMPUTED_KV: tl.constexpr,
    ATOMIC_OUT: tl.constexpr, PRECISION: tl.constexpr,
):
    pid_l = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    group = tl.program_id(2)
    dtype = x_ptr.dtype.element_ty

    rows = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)  # [BL] video rows of this program
    row_ok = rows < L
    keys = tl.arange(0, BLOCK_M)  # [BM] text tokens
    key_ok = keys < M
    dh = tl.arange(0, BLOCK_DH)  # [BDH] feature within a head
    dh_ok = dh < DH
    kk = tl.arange(0, BLOCK_K)  # [BK] input-feature chunk
    od = tl.arange(0, BLOCK_D)  # [BD] output feature
    od_ok = od < D
    x_rows = x_ptr + b * L * D + rows[:, None] * D  # [BL, 1]
    prev_rows = x_rows - D  # the row above; row 0 takes the start token instead
    prev_ok = row_ok & (rows > 0)
    is_first = (rows == 0)[:, None]
    text_rows = text_ptr + b * M * D + keys[:, None] * D  # [BM, 1]

    bias = tl.load(bias_ptr + b * stride_bias_b + keys, mask=key_ok, other=0.0).to(tl.float32)
    bias = tl.where(key_ok, bias * 1.4426950408889634, -1.0e30)  # [BM], log2 domain (LOG2E)
    acc = tl.zeros([BLOCK_L, BLOCK_D], dtype=tl.float32)  # merged output rows, all heads

    for hh in range(HEADS_PER_PROGRAM):
        h = group * HEADS_PER_PROGRAM + hh
        hcol = h * DH + dh  # [BDH] this head's columns among the D projection outputs
        q_v = tl.zeros([BLOCK_L, BLOCK_DH], dtype=tl.float32)
        q_t = tl.zeros([BLOCK_L, BLOCK_DH], dtype=tl.float32)
        k = tl.zeros([BLOCK_M, BLOCK_DH], dtype=tl.float32)
        v = tl.zeros([BLOCK_M, BLOCK_DH], dtype=tl.float32)
        for k0 in range(0, D, BLOCK_K):
            kin = k0 + kk  # [BK]
            k_ok = kin < D
            w_off = kin[:, None] * D + hcol[None, :]  # [BK, BDH] into a [D, D] (in, out) matrix
            w_ok = k_ok[:, None] & dh_ok[None, :]
            xk = tl.load(x_rows + kin[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            if HAS_VIDEO:
                wq = tl.load(wq_v_ptr + w_off, mask=w_ok, other=0.0)
                q_v = tl.dot(xk, wq, q_v, input_precision=PRECISION)
            if HAS_DYN:
                prev = tl.load(prev_rows + kin[None, :], mask=prev_ok[:, None] & k_ok[None, :],
                               other=0.0)
                st = tl.load(start_ptr + kin, mask=k_ok, other=0.0)
                prev = tl.where(is_first, st[None, :], prev)  # [BL, BK]
                diff = (xk.to(tl.float32) - prev.to(tl.float32)).to(dtype)  # T rows, Eq. 3
                wq = tl.load(wq_t_ptr + w_off, mask=w_ok, other=0.0)
                q_t = tl.dot(diff, wq, q_t, input_precision=PRECISION)
            if not PRECOMPUTED_KV:
                tk = tl.load(text_rows + kin[None, :], mask=key_ok[:, None] & k_ok[None, :],
                             other=0.0)  # [BM, BK]
                kv_off = kin[:, None] * (2 * D) + hcol[None, :]  # into [D, 2D]: K cols, V cols
                k = tl.dot(tk, tl.load(wkv_ptr + kv_off, mask=w_ok, other=0.0), k,
                           input_precision=PRECISION)
                v = tl.dot(tk, tl.load(wkv_ptr + kv_off + D, mask=w_ok, other=0.0), v,
                           input_precision=PRECISION)
        if PRECOMPUTED_KV:  # [B, M, 2D] from one GEMM, biases included
            kv_off = b * M * 2 * D + keys[:, None] * (2 * D) + hcol[None, :]
            kv_ok = key_ok[:, None] & dh_ok[None, :]
            k = tl.load(kv_ptr + kv_off, mask=kv_ok, other=0.0).to(tl.float32)
            v = tl.load(kv_ptr + kv_off + D, mask=kv_ok, other=0.0).to(tl.float32)
        else:
            k += tl.load(bkv_ptr + hcol, mask=dh_ok, other=0.0)[None, :]
            v += tl.load(bkv_ptr + D + hcol, mask=dh_ok, other=0.0)[None, :]
        k_t = tl.trans(k.to(dtype))  # [BDH, BM]
        v = v.to(dtype)
        wo_off = hcol[:, None] * D + od[None, :]  # [BDH, BD] into the [2D, D] merged Wo
        wo_ok = dh_ok[:, None] & od_ok[None, :]
        if HAS_VIDEO:
            q = (q_v + tl.load(bq_v_ptr + hcol, mask=dh_ok, other=0.0)[None, :]) * qk_scale
            a = _attend(q.to(dtype), k_t, v, bias, PRECISION)
            wo = tl.load(wo_ptr + wo_off, mask=wo_ok, other=0.0)  # beta * Wo_v^T rows
            acc = tl.dot(a.to(dtype), wo, acc, input_precision=PRECISION)
        if HAS_DYN:
            q = (q_t + tl.load(bq_t_ptr + hcol, mask=dh_ok, other=0.0)[None, :]) * qk_scale
            a = _attend(q.to(dtype), k_t, v, bias, PRECISION)
            wo = tl.load(wo_ptr + D * D + wo_off, mask=wo_ok, other=0.0)  # (1-beta) Wo_t^T rows
            acc = tl.dot(a.to(dtype), wo, acc, input_precision=PRECISION)

    out_ptrs = out_ptr + b * L * D + rows[:, None] * D + od[None, :]
    out_ok = row_ok[:, None] & od_ok[None, :]
    bo = tl.load(bo_ptr + od, mask=od_ok, other=0.0)
    if ATOMIC_OUT:  # partial sums over head groups; group 0 adds the bias once
        acc += tl.where(group == 0, bo, 0.0)[None, :]
        tl.atomic_add(out_ptrs, acc, mask=out_ok)
    else:
        tl.store(out_ptrs, (acc + bo[None, :]).to(out_ptr.dtype.element_ty), mask=out_ok)


def _pow2(n: int, floor: int = 16) -> int:
    """Tile size for a dim of n: a power of two >= n, at least 16 (tl.dot's minimum)."""
    return max(floor, triton.next_power_of_2(n))


def td_cross_attention(x: Tensor, text: Tensor, text_bias: Tensor, weights: PackedTDWeights, *,
                       check_values: bool = True, allow_tf32: bool = False,
                       block_l: int | None = None, head_groups: int = 1,
                       precompute_kv: bool | None = None, num_warps: int | None = None,
                       num_stages: int | None = None) -> Tensor:
    """Fused ``TDCrossAttention.forward``: x [B, L, D] (video + positions), text [B, M, D],
    text_bias [B, 1, 1, M] or [B, M] (0 = real token, MASK_BIAS = padding) -> [B, L, D].

    ``weights`` from ``pack_weights`` for x's dtype and device. Validates first
    (``check_td_inputs``; ``check_values=False`` skips the one check that reads
    the bias and syncs a GPU); CPU tensors need ``TRITON_INTERPRET=1``. Tuning knobs, all with measured-or-reasoned defaults:
    ``block_l`` video rows per program; ``head_groups`` splits the heads over that many
    programs (float32 atomics on the output); ``precompute_kv`` projects the text with one
    GEMM before the kernel instead of inside every program (default: when the video
    rows need more than two programs, so the in-kernel projection would repeat > 2x);
    ``num_warps``, ``num_stages`` as in Triton (fp32 defaults to 2 stages: three
    stages of its K-loop tiles, 72 KB each at BLOCK_L = 64, overflow shared memory).
    """
    bias_rows = check_td_inputs(x, text, text_bias, weights, check_values)
    require_triton(x.device)
    b, n, d = x.shape
    m = text.shape[1]
    h = weights.num_heads
    if h % head_groups:
        raise ValueError(f"head_groups: expected a divisor of num_heads={h}, got {head_groups}")
    dh = d // h
    block_l = block_l or (_pow2(n) if n <= 32 else 64)
    n_lblocks = triton.cdiv(n, block_l)
    if precompute_kv is None:
        precompute_kv = n_lblocks > 2
    kv = (torch.addmm(weights.bkv.to(x.dtype), text.view(b * m, d), weights.wkv).view(b, m, 2 * d)
          if precompute_kv else weights.bkv)  # [B, M, 2D]; bkv only stands in for an unused pointer
    atomic = head_groups > 1
    out = torch.zeros(b, n, d, device=x.device, dtype=torch.float32) if atomic else torch.empty_like(x)
    # IEEE only matters (and only costs) for fp32 operands; 16-bit ones always use MMA.
    precision = "ieee" if (x.dtype == torch.float32 and not allow_tf32) else "tf32"
    grid = (n_lblocks, b, head_groups)
    _td_cross_attention_fwd[grid](
        x, text, bias_rows, out, kv,
        weights.wq_v, weights.bq_v, weights.wq_t, weights.bq_t, weights.start,
        weights.wkv, weights.bkv, weights.wo, weights.bo,
        n, m, d, bias_rows.stride(0), LOG2E / dh**0.5,
        DH=dh, HEADS_PER_PROGRAM=h // head_groups,
        BLOCK_L=block_l, BLOCK_M=_pow2(m), BLOCK_DH=_pow2(dh), BLOCK_K=min(64, _pow2(d)),
        BLOCK_D=_pow2(d), HAS_VIDEO=weights.has_video, HAS_DYN=weights.has_dyn,
        PRECOMPUTED_KV=precompute_kv, ATOMIC_OUT=atomic, PRECISION=precision,
        num_warps=num_warps or (4 if block_l <= 32 else 8),
        num_stages=num_stages or (2 if x.dtype == torch.float32 else 3),
    )
    return out.to(x.dtype) if atomic else out
