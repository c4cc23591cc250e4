"""The fused kernels' launcher and backend switch reject bad input with exact errors, each an
``InputError`` (or ``BackendUnavailableError``) naming the argument, before any launch."""
from __future__ import annotations

import sys

import pytest
import torch

import kernels_support  # noqa: F401  (sets TRITON_INTERPRET=1 without CUDA, before the kernel import)
from kernels_support import td_case, td_layer
from tdfast.errors import BackendUnavailableError, InputError
from tdfast.kernels import td_interaction as kernel_module
from tdfast.kernels.availability import fix_interpreter_loop_bounds, require_triton
from tdfast.kernels.launch_config import LaunchConfig, all_configs, check_config, default_config, device_arch
from tdfast.kernels.packing import pack_weights
from tdfast.kernels.td_interaction import td_interaction
from tdfast.model.attention import mask_to_bias

D, H = 32, 4


@pytest.fixture
def case():
    layer, start = td_layer(D, H, use_tdem=True, seed=0)
    video, pos, text, mask = td_case(2, 9, 5, D, seed=0)
    w = pack_weights(layer.weights(start), H, 0.5, torch.float32)
    return video, pos, start, text, mask_to_bias(mask, video.dtype), w


@pytest.fixture
def no_launch(monkeypatch):
    """Replace both kernels with traps that fail the test if they are ever launched."""
    class Trap:
        def __getitem__(self, grid):
            raise AssertionError("a kernel was launched; the input should have been rejected")
    monkeypatch.setattr(kernel_module, "_text_kv_kernel", Trap())
    monkeypatch.setattr(kernel_module, "_rows_kernel", Trap())


@pytest.mark.parametrize("mutate,message", [
    (lambda v, p, s, t, b: (v.double(), p.double(), s, t.double(), b),
     r"video: expected dtype float32, float16 or bfloat16, got torch.float64"),
    (lambda v, p, s, t, b: (v, p.half(), s, t, b), r"pos: expected dtype torch.float32 to match video, got torch.float16"),
    (lambda v, p, s, t, b: (v, p, s, t.half(), b), r"text: expected dtype torch.float32 to match video, got torch.float16"),
    (lambda v, p, s, t, b: (v[0], p, s, t, b), r"video: expected a rank-3 tensor, got shape \(9, 32\)"),
    (lambda v, p, s, t, b: (v, p[:, :8], s, t, b), r"pos: expected shape \(2, 9, 32\) to match video, got \(2, 8, 32\)"),
    (lambda v, p, s, t, b: (v, p, s, t[:1], b), r"text: expected batch size 2 to match video, got 1"),
    (lambda v, p, s, t, b: (v, p, s, t[..., :16], b), r"text: expected hidden dim 32 to match video, got 16"),
    (lambda v, p, s, t, b: (v[..., :16], p[..., :16], s, t[..., :16], b),
     r"video: expected hidden dim 32 \(the layer's\), got 16"),
    (lambda v, p, s, t, b: (v.transpose(0, 1).contiguous().transpose(0, 1), p, s, t, b),
     r"video: expected a contiguous tensor, got strides \(32, 64, 1\) for shape \(2, 9, 32\)"),
    (lambda v, p, s, t, b: (v, p, s, t.transpose(1, 2).contiguous().transpose(1, 2), b),
     r"text: expected a contiguous tensor"),
    (lambda v, p, s, t, b: (v, p, s, t.new_zeros(2, 65, 32), b.new_zeros(2, 1, 1, 65)),
     r"text: expected 1 to 64 text tokens \(M\), got 65"),
    (lambda v, p, s, t, b: (v, p, s, t, b[..., :4]),
     r"text_bias: expected shape \(2, 1, 1, 5\) or \(2, 5\), got \(2, 1, 1, 4\)"),
    (lambda v, p, s, t, b: (v, p, s, t, b.bool()), r"text_bias: expected an additive float bias .* got dtype torch.bool"),
    (lambda v, p, s, t, b: (v, p, s, t, b.reshape(2, 5).t().contiguous().t()),
     r"text_bias: expected unit stride along the text tokens, got strides \(1, 2\)"),
    (lambda v, p, s, t, b: (v, p, None, t, b), r"start: expected the start token, a tensor of shape \(32,\), got NoneType"),
    (lambda v, p, s, t, b: (v, p, s[:16], t, b), r"start: expected the start token, a tensor of shape \(32,\), got \(16,\)"),
    (lambda v, p, s, t, b: (v, p, s, t.to("meta"), b), r"text: expected device .* to match video, got meta"),
])
def test_bad_tensors_rejected(case, no_launch, mutate, message):
    video, pos, start, text, bias, w = case
    video, pos, start, text, bias = mutate(video, pos, start, text, bias)
    with pytest.raises(InputError, match=message):
        td_interaction(video, pos, start, text, bias, w)


def test_weights_packed_for_another_dtype_rejected(case, no_launch):
    video, pos, start, text, bias, w = case
    with pytest.raises(InputError, match=r"weights: expected weights packed for torch.float16 .* got "
                                         r"torch.float32"):
        td_interaction(video.half(), pos.half(), start, text.half(), bias, w)


def test_heads_not_a_power_of_two_rejected(no_launch):
    layer, start = td_layer(48, 3, use_tdem=True, seed=0)
    video, pos, text, mask = td_case(1, 4, 2, 48, seed=0)
    w = pack_weights(layer.weights(start), 3, 0.5, torch.float32)
    with pytest.raises(InputError, match=r"num_heads: expected a power of two >= 2 .* got 3"):
        td_interaction(video, pos, start, text, mask_to_bias(mask, torch.float32), w)


GOOD = LaunchConfig(block_l=16, block_k=32, block_n=32, num_warps=4, num_stages=2, kv_block_t=16,
                    kv_block_c=64, kv_num_warps=4)


@pytest.mark.parametrize("field,value,message", [
    ("block_l", 24, r"block_l: expected a power of two in \[16, 128\], got 24"),
    ("block_l", 256, r"block_l: expected a power of two in \[16, 128\], got 256"),
    ("block_l", 8, r"block_l: expected a power of two in \[16, 128\], got 8"),
    ("block_k", 64, r"block_k: expected a power of two in \[16, 32\], got 64"),
    ("block_n", 48, r"block_n: expected a power of two in \[16, 32\], got 48"),
    ("num_warps", 3, r"num_warps: expected a power of two in \[1, 16\], got 3"),
    ("kv_block_c", 128, r"kv_block_c: expected a power of two in \[16, 64\], got 128"),
    ("kv_block_t", 12, r"kv_block_t: expected a power of two in \[16, 128\], got 12"),
    ("kv_num_warps", 0, r"kv_num_warps: expected a power of two in \[1, 16\], got 0"),
    ("num_stages", 0, r"num_stages: expected an integer in \[1, 4\], got 0"),
    ("block_l", True, r"block_l: expected a power of two in \[16, 128\], got True"),
    ("head_groups", 8, r"head_groups: expected 2 or 4 dividing num_heads=4, got 8"),
    ("kv_num_stages", 5, r"kv_num_stages: expected an integer in \[1, 4\], got 5"),
])
def test_bad_tiles_rejected(case, no_launch, field, value, message):
    video, pos, start, text, bias, w = case
    cfg = LaunchConfig(**{**GOOD.__dict__, field: value})
    with pytest.raises(InputError, match=message):
        td_interaction(video, pos, start, text, bias, w, config=cfg)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch,video_len", [(1, 75), (32, 150), (256, 75), (1, 1)])
def test_default_tiles_are_valid(dtype, batch, video_len):
    cfg = default_config(dtype, batch, video_len, 32, 256, 8)
    check_config(cfg, 256, 8)
    programs = -(-batch * video_len // cfg.block_l)
    assert programs >= min(132, -(-batch * video_len // 16)), "the row split should fill the GPU"


@pytest.fixture
def triton39(monkeypatch):
    """The installed Triton reads 3.9.0 (the version the full AOT records were made with)."""
    import triton
    monkeypatch.setattr(triton, "__version__", "3.9.0")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16bit_row_tile_capped_at_32_below_sm90(dtype, triton39):
    """Triton 3.9: sm_80 spills with 64-row 16-bit tiles (mma.sync, no wgmma; the committed
    AOT records), so below sm_90 the default stops at 32 rows; sm_90 keeps 64 rows where the
    batch fills the GPU, and sizes that pick <= 32 rows anyway get the same tiles on both."""
    big = dict(batch=256, video_len=75, text_len=32, dim=256, num_heads=8)
    assert default_config(dtype, **big, arch=90).block_l == 64
    assert default_config(dtype, **big, arch=80).block_l == 32
    assert default_config(dtype, **big, arch=86).block_l == 32
    assert default_config(dtype, **big, arch=80).num_stages == 2  # the 32-row tiles' pipelining
    assert max(c.block_l for c in all_configs(dtype, 256, 8, arch=90)) == 64
    assert max(c.block_l for c in all_configs(dtype, 256, 8, arch=80)) == 32
    for batch, video_len, text_len in [(1, 75, 32), (32, 75, 32), (32, 150, 64), (8, 150, 5)]:
        assert default_config(dtype, batch, video_len, text_len, 256, 8, arch=80) == \
            default_config(dtype, batch, video_len, text_len, 256, 8, arch=90)


@pytest.mark.parametrize("arch", [90, 80])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16bit_tiles_follow_the_triton_version(dtype, arch, monkeypatch, tmp_path):
    """With the installed Triton reading 3.6 or 3.8 the default takes the tiles measured there (16
    rows on 8 warps; 32-column chunks and 1 stage at 64 keys; the AOT records
    kernels_aot_triton36.json / triton38.json); reading 3.9, the 3.9 ones; reading a version no
    one measured or probed (3.10), the same safe 16-row tiles until the probe has run."""
    import triton
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # no probe verdicts from this machine
    big = dict(batch=256, video_len=75, dim=256, num_heads=8)
    for version in ("3.6.0", "3.6.1+git1234", "3.8.0", "3.10.0"):
        monkeypatch.setattr(triton, "__version__", version)
        assert default_config(dtype, **big, text_len=32, arch=arch).name == "bl16_bk64_bn64_hg2_w8_s2"
        assert default_config(dtype, 1, 75, 5, 256, 8, arch=arch).name == "bl16_bk64_bn64_hg2_w8_s2"
        assert default_config(dtype, **big, text_len=64, arch=arch).name == "bl16_bk32_bn32_hg4_w8_s1"
        assert {c.name for c in all_configs(dtype, 256, 8, arch=arch)} == \
            {"bl16_bk64_bn64_hg2_w8_s2", "bl16_bk32_bn32_hg4_w8_s1"}
    for version in ("3.9.0", "3.9.1+git99"):
        monkeypatch.setattr(triton, "__version__", version)
        assert default_config(dtype, **big, text_len=32, arch=arch).name == \
            ("bl64_bk64_bn64_hg4_w8_s1" if arch == 90 else "bl32_bk64_bn64_hg2_w8_s2")
        assert default_config(dtype, 1, 75, 5, 256, 8, arch=arch).name == "bl16_bk64_bn64_hg2_w4_s2"
        assert default_config(dtype, **big, text_len=64, arch=arch).name == \
            ("bl64_bk64_bn64_hg4_w8_s1" if arch == 90 else "bl32_bk64_bn64_hg4_w8_s2")
    # an explicit version wins over the installed one
    assert default_config(dtype, **big, text_len=32, arch=arch, triton_version="3.6.0").block_l == 16


@pytest.mark.parametrize("tf32", [False, True])
@pytest.mark.parametrize("version", ["3.6.0", "3.9.0"])
def test_fp32_tiles_do_not_depend_on_arch_or_triton(tf32, version):
    configs = all_configs(torch.float32, 256, 8, tf32, arch=90, triton_version="3.9.0")
    assert all_configs(torch.float32, 256, 8, tf32, arch=80, triton_version=version) == configs
    assert all_configs(torch.float32, 256, 8, tf32, arch=90, triton_version=version) == configs


def test_default_arch_is_the_device_capability(monkeypatch, triton39):
    """``default_config`` without ``arch`` uses the current CUDA device's SM version (90 where
    there is none); ``device_arch`` of a CPU tensor (the interpreter) is 90."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert device_arch("cuda:0") == 80 and device_arch("cpu") == 90
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert device_arch() == 80
    assert default_config(torch.bfloat16, 256, 75, 32, 256, 8).block_l == 32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_arch() == 90
    assert default_config(torch.bfloat16, 256, 75, 32, 256, 8).block_l == 64


def test_launcher_picks_tiles_for_its_device(case, monkeypatch):
    """The launcher asks ``default_config`` for the SM version of the tensors' device."""
    seen = []
    monkeypatch.setattr(kernel_module, "device_arch", lambda device: seen.append(device) or 80)
    real = kernel_module.default_config
    monkeypatch.setattr(kernel_module, "default_config",
                        lambda *a, **k: seen.append(a[7] if len(a) > 7 else k["arch"]) or real(*a, **k))
    video, pos, start, text, bias, w = case
    td_interaction(video, pos, start, text, bias, w)
    assert seen == [video.device, 80]


def test_interpreter_takes_shape_1_loop_bounds():
    """The interpreter holds scalars as shape-(1,) arrays; Triton 3.6 turns a runtime loop bound
    into an int with int(array), which NumPy >= 2.4 refuses. After
    ``fix_interpreter_loop_bounds`` (run when the kernels are defined interpreted) every
    Triton's interpreter squeezes first, so ``range(b_lo, b_hi + 1)`` in the rows kernel works."""
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    fix_interpreter_loop_bounds()
    fix_interpreter_loop_bounds()  # idempotent
    scope = interpreter._LangPatchScope()
    interpreter._patch_lang_tensor(tl.tensor, scope)
    try:
        bound = tl.tensor(interpreter.TensorHandle(np.array([3], dtype=np.int32), tl.int32), tl.int32)
        assert list(range(1, bound)) == [1, 2]
    finally:
        scope.restore()


def test_cpu_without_interpreter_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(BackendUnavailableError, match=r"model is on CPU .* set TRITON_INTERPRET=1"):
        require_triton("cpu")


def test_missing_triton_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)  # makes `import triton` raise ImportError
    with pytest.raises(BackendUnavailableError, match=r"triton package is not installed; pip install "
                                                      r"triton \(or: pip install 'tdfast\[gpu\]'\)"):
        require_triton("cuda")


def test_launcher_reads_no_values(case, monkeypatch):
    """No host sync in the forward: the launcher never turns device data into Python values
    (no .item(), .nonzero(), .tolist(), bool()), so the model stays CUDA-graph capturable."""
    video, pos, start, text, bias, w = case
    def trap(*a, **k):
        raise AssertionError("the launcher read a tensor value (a GPU sync)")
    for name in ("item", "nonzero", "tolist", "__bool__", "any", "all"):
        monkeypatch.setattr(torch.Tensor, name, trap)
    td_interaction(video, pos, start, text, bias, w)
