"""Fused TD interaction (``TDCrossAttention.forward`` of the official T2V / TD layer): two launches.

Math (``tdfast/model/td_interaction.py``; oracle ``td_interaction_reference``), with x = V + pos
[L, D], text [M, D], H heads of Dh, start token st:

    T   = [x_1 - st, x_2 - x_1, ...]                          temporal differences
    F   = relu(LN2(relu(LN1(T) W1 + b1)) W2 + b2)              flow projection
    A_v = MHA(Q = x, K = V = text),  A_t = MHA'(Q = F, K = V = text)  (own q/k/v/out each)
    s   = beta V + (1 - beta) A_t + A_v                        official merge

Launch plan (docs/kernels.md has the arithmetic):

1. ``_text_kv_kernel``, a plain tiled GEMM over the flattened [B * M, D] text and the S * P
   projection columns: the text is projected into K_v, V_v (, K_t, V_t) once (not once per
   row tile) and written to a small [B, S, H, M, BDH] buffer that the row programs read from
   L2. Folding it into the row kernel would either repeat it in every row tile or need a
   grid-wide barrier.
2. ``_rows_kernel``, grid ceil(B * L / BLOCK_L) over the flattened [B * L, D] video: a program
   owns BLOCK_L rows (possibly spanning two or more videos) and every head, so
   * the two LayerNorms of the flow projection see whole rows: LN1 statistics in a first pass
     over the row's K-chunks, LN1 applied on the fly to each chunk of the F1 GEMM, LN2 on the
     F1 accumulator in registers; F2 is produced in N-chunks and each chunk goes straight into
     the dynamics query GEMM (F2 never exists as a whole);
   * both queries are [BLOCK_L, H * BDH] accumulators, split into HG = 2 or 4 groups of heads
     and reshaped to [H / HG, BLOCK_L, BDH] for batched (3-d) ``tl.dot``s: no per-head reload
     of the rows, and only one group's score and output tiles live at a time;
   * the output projections sum heads in the GEMM's reduction, in registers, and the merge
     (beta V + biases) is its epilogue: one store of s, no atomics, deterministic.

Masking is additive and finite: the caller's bias (0 / MASK_BIAS) on real key columns, -1e30
on tile columns past M; no -inf, no host sync. Every ``tl.dot`` accumulates in fp32;
operands are the activations' dtype (fp32 operands use IEEE products unless TF32 is allowed).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from tdfast.kernels.availability import fix_interpreter_loop_bounds, interpreting, require_triton
from tdfast.kernels.launch_config import (LaunchConfig, check_config, default_config, device_arch,
                                          next_pow2)
from tdfast.kernels.packing import PackedTDWeights
from tdfast.kernels.validate import check_td_inputs

INTERPRETED = interpreting()  # how the @triton.jit below were defined (see availability.py)
if INTERPRETED:
    fix_interpreter_loop_bounds()
LOG2E = 1.4426950408889634
LN_EPS = 1e-5  # nn.LayerNorm's default, as the flow projection's LinearLayer uses it


# Runtime sizes are not specialised on (== 1, divisible by 16): one compiled kernel serves every
# (B, L, M) instead of a recompile whenever a new batch or padded length changes those
# properties (offsets use the constexpr D, so the hints would buy nothing measurable).
TEXT_KV_RUNTIME_INTS = ["M", "TR", "n_tblocks"]
ROWS_RUNTIME_INTS = ["L", "M", "R", "stride_bias_b"]


@triton.jit(do_not_specialize=TEXT_KV_RUNTIME_INTS)
def _text_kv_kernel(
    text_ptr, wkv_ptr, bkv_ptr, kv_ptr, M, TR, n_tblocks,
    D: tl.constexpr, H: tl.constexpr, BDH: tl.constexpr, S: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """kv[b, s, h, m, :] = text[b, m] @ wkv[s][:, head h] + bkv[s][head h] for BLOCK_T rows of
    the flattened [B * M, D] text and BLOCK_C of the S * P projection columns (within one set
    s = K_v, V_v, K_t, V_t). The text projection is batch-independent, so a tile mixes videos."""
    pid = tl.program_id(0)
    cb = pid // n_tblocks  # row blocks vary fastest: neighbouring programs share a weight slice
    tb = pid % n_tblocks
    dtype = text_ptr.dtype.element_ty
    P: tl.constexpr = H * BDH
    rows = tb * BLOCK_T + tl.arange(0, BLOCK_T)  # [BT] flattened text rows b * M + m
    row_ok = rows < TR
    s = (cb * BLOCK_C) // P  # BLOCK_C divides P: a column block never straddles two sets
    col = cb * BLOCK_C - s * P + tl.arange(0, BLOCK_C)  # [BC] padded column within the set
    acc = tl.zeros([BLOCK_T, BLOCK_C], dtype=tl.float32)
    for k0 in range(0, BLOCK_D, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)  # [BK]
        k_ok = kk < D
        tk = tl.load(text_ptr + rows[:, None] * D + kk[None, :], mask=row_ok[:, None] & k_ok[None, :],
                     other=0.0)  # [BT, BK]
        w = tl.load(wkv_ptr + s * D * P + kk[:, None] * P + col[None, :], mask=k_ok[:, None],
                    other=0.0)  # [BK, BC]
        acc = tl.dot(tk, w, acc, input_precision=PRECISION)
    acc += tl.load(bkv_ptr + s * P + col)[None, :]
    b = rows // M
    m = rows % M
    off = ((b[:, None] * S + s) * H + (col // BDH)[None, :]) * M * BDH + m[:, None] * BDH \
        + (col % BDH)[None, :]  # [BT, BC] into kv [B, S, H, M, BDH]
    tl.store(kv_ptr + off, acc.to(dtype), mask=row_ok[:, None])


@triton.jit
def _load_x(video_ptr, pos_ptr, r, ok, kk, k_ok, D: tl.constexpr):
    """(video + pos)[r, kk] in fp32, zeros where masked: r [BL], kk [BK] -> [BL, BK]."""
    off = r[:, None] * D + kk[None, :]
    msk = ok[:, None] & k_ok[None, :]
    v = tl.load(video_ptr + off, mask=msk, other=0.0).to(tl.float32)
    return v + tl.load(pos_ptr + off, mask=msk, other=0.0).to(tl.float32)


@triton.jit
def _load_t(video_ptr, pos_ptr, start_ptr, r, row_ok, t_pos, kk, k_ok, D: tl.constexpr):
    """Temporal differences T[r, kk] = x[r] - x[r - 1] (x[r] - st at a video's first clip), fp32."""
    x = _load_x(video_ptr, pos_ptr, r, row_ok, kk, k_ok, D)
    prev = _load_x(video_ptr, pos_ptr, r - 1, row_ok & (t_pos > 0), kk, k_ok, D)
    st = tl.load(start_ptr + kk, mask=k_ok, other=0.0).to(tl.float32)
    return x - tl.where((t_pos == 0)[:, None], st[None, :], prev)


@triton.jit
def _attend_heads(q, h0, kv_ptr, bias_ptr, set_k, b_r, b_lo, b_hi, M, stride_bias_b,
                  S: tl.constexpr, H: tl.constexpr, NH: tl.constexpr, BDH: tl.constexpr,
                  BLOCK_L: tl.constexpr, BLOCK_M: tl.constexpr, PRECISION: tl.constexpr):
    """Attention of heads h0 .. h0 + NH - 1: q [BL, NH * BDH] (scaled, input dtype) against the
    K/V sets ``set_k``, ``set_k + 1`` of each video the rows belong to -> [BL, NH * BDH] fp32."""
    dtype = kv_ptr.dtype.element_ty
    q3 = tl.permute(tl.reshape(q, (BLOCK_L, NH, BDH)), (1, 0, 2))  # [NH, BL, BDH]
    hh = h0 + tl.arange(0, NH)[:, None, None]
    jj = tl.arange(0, BDH)
    mm = tl.arange(0, BLOCK_M)
    m_ok = mm < M
    acc = tl.zeros([NH, BLOCK_L, BDH], dtype=tl.float32)
    for bb in range(b_lo, b_hi + 1):  # usually one video, two where the row tile crosses a boundary
        head = (bb * S + set_k) * H + hh  # [NH, 1, 1]
        k_t = tl.load(kv_ptr + (head * M + mm[None, None, :]) * BDH + jj[None, :, None],
                      mask=m_ok[None, None, :], other=0.0)  # [NH, BDH, BM]
        v = tl.load(kv_ptr + ((head + H) * M + mm[None, :, None]) * BDH + jj[None, None, :],
                    mask=m_ok[None, :, None], other=0.0)  # [NH, BM, BDH]
        bias = tl.load(bias_ptr + bb * stride_bias_b + mm, mask=m_ok, other=0.0).to(tl.float32)
        bias = tl.where(m_ok, bias * 1.4426950408889634, -1.0e30)  # [BM], log2 domain (LOG2E)
        s = tl.dot(q3, k_t, input_precision=PRECISION) + bias[None, None, :]  # [NH, BL, BM]
        p = tl.math.exp2(s - tl.max(s, axis=2)[:, :, None])
        o = tl.dot(p.to(dtype), v, input_precision=PRECISION) / tl.sum(p, axis=2)[:, :, None]
        acc = tl.where((b_r == bb)[None, :, None], o, acc)
    return tl.reshape(tl.permute(acc, (1, 0, 2)), (BLOCK_L, NH * BDH))


@triton.jit
def _attend(q, kv_ptr, bias_ptr, set_k, b_r, b_lo, b_hi, M, stride_bias_b, qk_scale,
            S: tl.constexpr, H: tl.constexpr, BDH: tl.constexpr, HG: tl.constexpr,
            BLOCK_L: tl.constexpr, BLOCK_M: tl.constexpr, PRECISION: tl.constexpr):
    """Multi-head attention of the rows' queries q [BL, H * BDH] (fp32, bias added), HG (2 or 4)
    groups of H / HG heads one after the other -> the groups' outputs, each [BL, H / HG * BDH]
    in the input dtype (with HG = 2 the last two repeat the first two). Groups bound the live
    score / output tiles (all heads at once made 64-row tiles spill); they need no join: the
    output projection takes them as parts of its reduction."""
    dtype = kv_ptr.dtype.element_ty
    C: tl.constexpr = H * BDH // HG
    NH: tl.constexpr = H // HG
    qs = (q * qk_scale).to(dtype)
    if HG == 2:
        q0, q1 = tl.split(tl.permute(tl.reshape(qs, (BLOCK_L, 2, C)), (0, 2, 1)))  # [BL, C] each
        q2 = q0
        q3 = q1
    else:
        quads = tl.permute(tl.reshape(qs, (BLOCK_L, 2, 2, C)), (0, 3, 1, 2))  # [BL, C, hi, lo]
        even, odd = tl.split(quads)  # lo = 0, 1: [BL, C, hi]
        q0, q2 = tl.split(even)  # head groups 0 and 2
        q1, q3 = tl.split(odd)  # head groups 1 and 3
    a0 = _attend_heads(q0, 0, kv_ptr, bias_ptr, set_k, b_r, b_lo, b_hi, M, stride_bias_b,
                       S, H, NH, BDH, BLOCK_L, BLOCK_M, PRECISION).to(dtype)
    a1 = _attend_heads(q1, NH, kv_ptr, bias_ptr, set_k, b_r, b_lo, b_hi, M, stride_bias_b,
                       S, H, NH, BDH, BLOCK_L, BLOCK_M, PRECISION).to(dtype)
    a2 = a0
    a3 = a1
    if HG == 4:
        a2 = _attend_heads(q2, 2 * NH, kv_ptr, bias_ptr, set_k, b_r, b_lo, b_hi, M, stride_bias_b,
                           S, H, NH, BDH, BLOCK_L, BLOCK_M, PRECISION).to(dtype)
        a3 = _attend_heads(q3, 3 * NH, kv_ptr, bias_ptr, set_k, b_r, b_lo, b_hi, M, stride_bias_b,
                           S, H, NH, BDH, BLOCK_L, BLOCK_M, PRECISION).to(dtype)
    return a0, a1, a2, a3


@triton.jit
def _project_out(acc, a0, a1, a2, a3, wo_ptr, nn, n_ok, D: tl.constexpr, C: tl.constexpr,
                 HG: tl.constexpr, PRECISION: tl.constexpr):
    """acc += [a0 | a1 (| a2 | a3)] @ wo[:, nn]: the head groups' parts of the reduction."""
    w = wo_ptr + tl.arange(0, C)[:, None] * D + nn[None, :]  # [C, BN]: head group 0's rows
    ok = n_ok[None, :]
    acc = tl.dot(a0, tl.load(w, mask=ok, other=0.0), acc, input_precision=PRECISION)
    acc = tl.dot(a1, tl.load(w + C * D, mask=ok, other=0.0), acc, input_precision=PRECISION)
    if HG == 4:
        acc = tl.dot(a2, tl.load(w + 2 * C * D, mask=ok, other=0.0), acc, input_precision=PRECISION)
        acc = tl.dot(a3, tl.load(w + 3 * C * D, mask=ok, other=0.0), acc, input_precision=PRECISION)
    return acc


@triton.jit(do_not_specialize=ROWS_RUNTIME_INTS)
def _rows_kernel(
    video_ptr, pos_ptr, start_ptr, kv_ptr, bias_ptr, out_ptr,
    wq_v_ptr, bq_v_ptr, wo_v_ptr, bo_ptr,
    f1_gain_sum_ptr, f1_bias_ptr, w_f1_ptr, ln2_w_ptr, ln2_b_ptr, w_f2_ptr, b_f2_ptr,
    wq_t_ptr, bq_t_ptr, wo_t_ptr,
    L, M, R, stride_bias_b, beta, qk_scale, eps,
    D: tl.constexpr, H: tl.constexpr, BDH: tl.constexpr, S: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, HG: tl.constexpr,
    HAS_DYN: tl.constexpr, PRECISION: tl.constexpr,
):
    """out[r] = s for BLOCK_L rows r = b * L + t of the flattened video (launch step 2).

    Inputs: video, pos [R = B * L, D] (activation dtype); start [D] (the start token; only
    read with ``HAS_DYN``); kv [B, S, H, M, BDH] from ``_text_kv_kernel`` (sets 0, 1: K_v, V_v;
    2, 3: K_t, V_t); bias [B, M] fp32 additive key mask (row stride ``stride_bias_b``);
    weights as ``PackedTDWeights`` names them (``f1_gain_sum`` / ``f1_bias``: LN1 folded
    through W1). Output: out [R, D] in out's dtype. Three phases:

    1. with ``HAS_DYN``: F1 (LN1 folded into its GEMM), LN2 in registers, F2 chunk by chunk
       into the dynamics query Q_t, then A_t = attention of Q_t on (K_t, V_t);
    2. the video query Q_v = (video + pos) Wq_v + bq_v and A_v on (K_v, V_v);
    3. s = A_v Wo_v + (1 - beta) A_t Wo_t + bo + beta * video, one N-chunk at a time.

    A program may span several videos (rows b_lo .. b_hi): each row attends with its own
    video's key mask. Runtime ints (L, M, R, stride) are not specialised on; the rest are
    tile sizes and switches (``LaunchConfig``, ``kernel_args``).
    """
    pid = tl.program_id(0)
    dtype = video_ptr.dtype.element_ty
    P: tl.constexpr = H * BDH
    r = pid * BLOCK_L + tl.arange(0, BLOCK_L)  # [BL] flattened rows b * L + t
    row_ok = r < R
    t_pos = r % L
    b_r = r // L
    b_lo = (pid * BLOCK_L) // L
    b_hi = (tl.minimum(pid * BLOCK_L + BLOCK_L, R) - 1) // L
    cols_d = tl.arange(0, BLOCK_D)  # [BD] feature columns
    d_ok = cols_d < D
    cols_p = tl.arange(0, P)  # [P] padded head columns

    C: tl.constexpr = P // HG  # columns of one head group
    a_t0 = tl.zeros([BLOCK_L, C], dtype=dtype)
    a_t1 = a_t0
    a_t2 = a_t0
    a_t3 = a_t0
    if HAS_DYN:
        # F1 = relu(LN1(T) W1 + b1) in one pass over T's K-chunks, LN1 folded into the weights
        # (pack_weights): LN1(T) W1 = rstd * (T (g1 o W1)) - rstd * mu * (g1 W1) + b1_ln W1, so
        # the row statistics accumulate in the same loop as the GEMM that needs them.
        s1 = tl.zeros([BLOCK_L], dtype=tl.float32)
        s2 = tl.zeros([BLOCK_L], dtype=tl.float32)
        f1 = tl.zeros([BLOCK_L, BLOCK_D], dtype=tl.float32)
        for k0 in range(0, BLOCK_D, BLOCK_K):
            kk = k0 + tl.arange(0, BLOCK_K)
            k_ok = kk < D
            t = _load_t(video_ptr, pos_ptr, start_ptr, r, row_ok, t_pos, kk, k_ok, D)
            s1 += tl.sum(t, axis=1)
            s2 += tl.sum(t * t, axis=1)
            w1 = tl.load(w_f1_ptr + kk[:, None] * D + cols_d[None, :],
                         mask=k_ok[:, None] & d_ok[None, :], other=0.0)  # [BK, BD] g1 o W1
            f1 = tl.dot(t.to(dtype), w1, f1, input_precision=PRECISION)
        mu1 = s1 / D
        rstd1 = 1.0 / tl.sqrt(tl.maximum(s2 / D - mu1 * mu1, 0.0) + eps)
        g1w = tl.load(f1_gain_sum_ptr + cols_d, mask=d_ok, other=0.0)  # g1 W1 (column sums)
        b1w = tl.load(f1_bias_ptr + cols_d, mask=d_ok, other=0.0)  # b1_ln W1 + b1
        f1 = rstd1[:, None] * f1 - (rstd1 * mu1)[:, None] * g1w[None, :] + b1w[None, :]
        f1 = tl.where(d_ok[None, :], tl.maximum(f1, 0.0), 0.0)
        # LN2 on the F1 rows in registers (padded columns are 0 and stay out of the statistics).
        mu2 = tl.sum(f1, axis=1) / D
        c2 = tl.where(d_ok[None, :], f1 - mu2[:, None], 0.0)
        rstd2 = 1.0 / tl.sqrt(tl.sum(c2 * c2, axis=1) / D + eps)
        g2 = tl.load(ln2_w_ptr + cols_d, mask=d_ok, other=0.0)
        be2 = tl.load(ln2_b_ptr + cols_d, mask=d_ok, other=0.0)
        n2 = (c2 * rstd2[:, None] * g2[None, :] + be2[None, :]).to(dtype)  # [BL, BD]
        # F2 = relu(n2 W2 + b2) one N-chunk at a time, each chunk straight into Q_t.
        q_t = tl.zeros([BLOCK_L, P], dtype=tl.float32)
        for n0 in range(0, BLOCK_D, BLOCK_N):
            nn = n0 + tl.arange(0, BLOCK_N)
            n_ok = nn < D
            w2 = tl.load(w_f2_ptr + cols_d[:, None] * D + nn[None, :],
                         mask=d_ok[:, None] & n_ok[None, :], other=0.0)  # [BD, BN]
            f2 = tl.dot(n2, w2, input_precision=PRECISION)
            f2 = tl.maximum(f2 + tl.load(b_f2_ptr + nn, mask=n_ok, other=0.0)[None, :], 0.0)
            wq = tl.load(wq_t_ptr + nn[:, None] * P + cols_p[None, :], mask=n_ok[:, None],
                         other=0.0)  # [BN, P]
            q_t = tl.dot(f2.to(dtype), wq, q_t, input_precision=PRECISION)
        q_t += tl.load(bq_t_ptr + cols_p)[None, :]
        a_t0, a_t1, a_t2, a_t3 = _attend(q_t, kv_ptr, bias_ptr, 2, b_r, b_lo, b_hi, M, stride_bias_b,
                                         qk_scale, S, H, BDH, HG, BLOCK_L, BLOCK_M, PRECISION)

    # Video query Q_v = x Wq_v + bq_v (the rows' K-chunks again: L1 / L2 hits).
    q_v = tl.zeros([BLOCK_L, P], dtype=tl.float32)
    for k0 in range(0, BLOCK_D, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)
        k_ok = kk < D
        x = _load_x(video_ptr, pos_ptr, r, row_ok, kk, k_ok, D).to(dtype)
        wq = tl.load(wq_v_ptr + kk[:, None] * P + cols_p[None, :], mask=k_ok[:, None], other=0.0)
        q_v = tl.dot(x, wq, q_v, input_precision=PRECISION)
    q_v += tl.load(bq_v_ptr + cols_p)[None, :]
    a_v0, a_v1, a_v2, a_v3 = _attend(q_v, kv_ptr, bias_ptr, 0, b_r, b_lo, b_hi, M, stride_bias_b,
                                     qk_scale, S, H, BDH, HG, BLOCK_L, BLOCK_M, PRECISION)

    # s = A_v Wo_v + (1 - beta) A_t Wo_t + merged bias + beta V, one N-chunk at a time.
    for n0 in range(0, BLOCK_D, BLOCK_N):
        nn = n0 + tl.arange(0, BLOCK_N)
        n_ok = nn < D
        acc = tl.zeros([BLOCK_L, BLOCK_N], dtype=tl.float32)
        acc = _project_out(acc, a_v0, a_v1, a_v2, a_v3, wo_v_ptr, nn, n_ok, D, C, HG, PRECISION)
        if HAS_DYN:
            acc = _project_out(acc, a_t0, a_t1, a_t2, a_t3, wo_t_ptr, nn, n_ok, D, C, HG, PRECISION)
        off = r[:, None] * D + nn[None, :]
        ok = row_ok[:, None] & n_ok[None, :]
        video = tl.load(video_ptr + off, mask=ok, other=0.0).to(tl.float32)
        acc += tl.load(bo_ptr + nn, mask=n_ok, other=0.0)[None, :] + beta * video
        tl.store(out_ptr + off, acc.to(out_ptr.dtype.element_ty), mask=ok)


def precision_for(dtype: torch.dtype, allow_tf32: bool) -> str:
    """``tl.dot`` input precision: IEEE fp32 unless TF32 is allowed; 16-bit always uses MMA."""
    return "ieee" if (dtype == torch.float32 and not allow_tf32) else "tf32"


def torch_allows_tf32() -> bool:
    """Whether eager fp32 matmuls may use TF32 here (the fused module follows the same switch)."""
    return bool(torch.backends.cuda.matmul.allow_tf32) or torch.get_float32_matmul_precision() != "highest"


def kernel_args(weights: PackedTDWeights, text_len: int, cfg: LaunchConfig, allow_tf32: bool
                ) -> tuple[dict, dict]:
    """The constexprs of (text_kv, rows) for these weights, text length and tiles; shared by the
    launcher and ``tdfast.kernels.aot`` so that both compile the same kernels."""
    d, h, bdh = weights.dim, weights.num_heads, weights.padded_head_dim
    common = dict(D=d, H=h, BDH=bdh, S=weights.kv_sets, BLOCK_M=max(16, next_pow2(text_len)),
                  BLOCK_D=max(16, next_pow2(d)),
                  PRECISION=precision_for(weights.dtype, allow_tf32))
    kv = {k: v for k, v in common.items() if k != "BLOCK_M"}
    kv.update(BLOCK_T=cfg.kv_block_t, BLOCK_C=cfg.kv_block_c, BLOCK_K=cfg.block_k)
    rows = dict(common, BLOCK_L=cfg.block_l, BLOCK_K=cfg.block_k, BLOCK_N=cfg.block_n,
                HG=cfg.head_groups, HAS_DYN=weights.has_dyn)
    return kv, rows


def td_interaction(video: Tensor, pos: Tensor, start: Tensor | None, text: Tensor,
                   text_bias: Tensor, weights: PackedTDWeights, *, allow_tf32: bool | None = None,
                   config: LaunchConfig | None = None) -> Tensor:
    """Fused ``TDCrossAttention.forward``: video, pos [B, L, D], start [D] (None without TDEM),
    text [B, M, D], text_bias [B, 1, 1, M] or [B, M] (0 = real token, MASK_BIAS = padding)
    -> s [B, L, D] in video's dtype.

    ``weights`` from ``pack_weights`` for video's dtype and device. Validates shapes, dtypes,
    strides and devices (``check_td_inputs``; no value is read, so no GPU sync); CPU tensors
    need ``TRITON_INTERPRET=1``. ``allow_tf32`` (default: torch's fp32 matmul setting) lets fp32
    products use TF32. ``config`` overrides the tiles (``default_config``), checked by
    ``check_config``; the default is the one for video's GPU (its SM version).
    """
    bias_rows = check_td_inputs(video, pos, start, text, text_bias, weights)
    require_triton(video.device)
    b, n, d = video.shape
    m = text.shape[1]
    h, bdh, sets = weights.num_heads, weights.padded_head_dim, weights.kv_sets
    if allow_tf32 is None:
        allow_tf32 = torch_allows_tf32()
    cfg = config or default_config(video.dtype, b, n, m, d, h, allow_tf32, device_arch(video.device))
    check_config(cfg, d, h)
    kv_meta, rows_meta = kernel_args(weights, m, cfg, allow_tf32)
    kv = torch.empty(b, sets, h, m, bdh, device=video.device, dtype=video.dtype)
    n_tblocks = triton.cdiv(b * m, cfg.kv_block_t)
    _text_kv_kernel[(n_tblocks * (sets * h * bdh // cfg.kv_block_c),)](
        text, weights.wkv, weights.bkv, kv, m, b * m, n_tblocks, **kv_meta,
        num_warps=cfg.kv_num_warps, num_stages=cfg.kv_num_stages)
    start_arg = start.to(video.dtype) if weights.has_dyn else weights.bo  # bo: unused pointer
    out = torch.empty_like(video)
    rows = b * n
    _rows_kernel[(triton.cdiv(rows, cfg.block_l),)](
        video, pos, start_arg, kv, bias_rows, out,
        weights.wq_v, weights.bq_v, weights.wo_v, weights.bo,
        *((weights.f1_gain_sum, weights.f1_bias, weights.w_f1, weights.ln2_w, weights.ln2_b,
           weights.w_f2, weights.b_f2, weights.wq_t, weights.bq_t, weights.wo_t)
          if weights.has_dyn else (weights.bo,) * 10),  # unused pointers without the branch
        n, m, rows, bias_rows.stride(0), weights.beta, LOG2E / weights.head_dim**0.5, LN_EPS,
        **rows_meta, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return out
