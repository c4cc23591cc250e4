"""The fused kernel's launcher and backend switch reject bad input with exact errors."""
from __future__ import annotations

import sys

import pytest
import torch

import kernels_support  # noqa: F401  (sets TRITON_INTERPRET=1 without CUDA, before the kernel import)
from kernels_support import KERNEL_DEVICE, td_case
from tdfast.errors import BackendUnavailableError, InputError
from tdfast.kernels import td_attention
from tdfast.kernels.availability import require_triton
from tdfast.kernels.packing import pack_weights
from tdfast.kernels.td_attention import td_cross_attention
from tdfast.model.attention import mask_to_bias
from tdfast.model.td_interaction import TDCrossAttention

D, H = 32, 4


@pytest.fixture
def case():
    layer = TDCrossAttention(D, H, use_tdem=True, beta=0.5).to(KERNEL_DEVICE)
    x, text, mask = td_case(2, 9, 5, D, seed=0)
    return x, text, mask_to_bias(mask, x.dtype), pack_weights(layer.weights(), H, 0.5, x.dtype)


@pytest.fixture
def no_launch(monkeypatch):
    """Replace the kernel with one that fails the test if it is ever launched."""
    class Trap:
        def __getitem__(self, grid):
            raise AssertionError("the kernel was launched; the input should have been rejected")
    monkeypatch.setattr(td_attention, "_td_cross_attention_fwd", Trap())


def test_all_masked_text_row_rejected_before_the_kernel(case, no_launch):
    x, text, bias, w = case
    bias[1] = mask_to_bias(torch.zeros(1, 5, dtype=torch.bool), x.dtype)[0]
    with pytest.raises(InputError, match=r"text_bias: row 1 has no real text token"):
        td_cross_attention(x, text, bias, w)


@pytest.mark.parametrize("mutate,message", [
    (lambda x, t, b: (x.double(), t.double(), b), r"x: expected dtype float32, float16 or bfloat16, got torch.float64"),
    (lambda x, t, b: (x.int(), t, b), r"x: expected dtype .* got torch.int32"),
    (lambda x, t, b: (x, t.half(), b), r"text: expected dtype torch.float32 to match x, got torch.float16"),
    (lambda x, t, b: (x[0], t, b), r"x: expected a rank-3 tensor, got shape \(9, 32\)"),
    (lambda x, t, b: (x, t[:1], b), r"text: expected batch size 2 to match x, got 1"),
    (lambda x, t, b: (x, t[..., :16], b), r"text: expected hidden dim 32 to match x, got 16"),
    (lambda x, t, b: (x[..., :16], t[..., :16], b), r"x: expected hidden dim 32 \(the layer's\), got 16"),
    (lambda x, t, b: (x.transpose(0, 1).contiguous().transpose(0, 1), t, b),
     r"x: expected a contiguous tensor, got strides \(32, 64, 1\) for shape \(2, 9, 32\)"),
    (lambda x, t, b: (x, t.transpose(1, 2).contiguous().transpose(1, 2), b), r"text: expected a contiguous tensor"),
    (lambda x, t, b: (x.new_zeros(2, 513, 32), t, b), r"x: expected 1 to 512 video rows \(L\), got 513"),
    (lambda x, t, b: (x, t.new_zeros(2, 65, 32), b.new_zeros(2, 1, 1, 65)),
     r"text: expected 1 to 64 text tokens \(M\), got 65"),
    (lambda x, t, b: (x, t, b[..., :4]), r"text_bias: expected shape \(2, 1, 1, 5\) or \(2, 5\), got \(2, 1, 1, 4\)"),
    (lambda x, t, b: (x, t, b.bool()), r"text_bias: expected an additive float bias .* got dtype torch.bool"),
    (lambda x, t, b: (x, t, b.reshape(2, 5).t().contiguous().t()),
     r"text_bias: expected unit stride along the text tokens, got strides \(1, 2\)"),
    (lambda x, t, b: (x, t.to("meta"), b), r"text: expected device .* to match x, got meta"),
])
def test_bad_tensors_rejected(case, no_launch, mutate, message):
    x, text, bias, w = case
    x, text, bias = mutate(x, text, bias)
    with pytest.raises(InputError, match=message):
        td_cross_attention(x, text, bias, w)


def test_weights_packed_for_another_dtype_rejected(case, no_launch):
    x, text, bias, w = case
    with pytest.raises(InputError, match=r"weights: expected weights packed for torch.float16 .* got "
                                         r"torch.float32"):
        td_cross_attention(x.half(), text.half(), bias, w)


def test_cpu_without_interpreter_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(BackendUnavailableError, match=r"model is on CPU .* set TRITON_INTERPRET=1"):
        require_triton("cpu")


def test_missing_triton_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)  # makes `import triton` raise ImportError
    with pytest.raises(BackendUnavailableError, match=r"triton package is not installed; pip install "
                                                      r"triton \(or: pip install 'tdfast\[gpu\]'\)"):
        require_triton("cuda")
