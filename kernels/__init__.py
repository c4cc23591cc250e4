"""Triton kernels (``import tdfast.kernels``): the fused TD cross-attention and the
``triton`` backend switch. Importing this package does not import triton;
``td_cross_attention`` (the raw launcher) is loaded on first access.

    from tdfast.kernels import fuse_model
    model = fuse_model(TDDETR.from_pretrained(ckpt, device="cuda"))   # in place
    with torch.inference_mode():
        out = model(video, video_mask, query, query_mask)
"""
from tdfast.kernels.availability import interpreting, require_triton
from tdfast.kernels.fuse import FusedTDCrossAttention, fuse_model
from tdfast.kernels.packing import PackedTDWeights, pack_weights
from tdfast.kernels.validate import check_td_inputs


def __getattr__(name: str):
    if name == "td_cross_attention":  # imports triton; kept lazy so `import tdfast.kernels` is cheap
        from tdfast.kernels.td_attention import td_cross_attention

        return td_cross_attention
    raise AttributeError(f"module 'tdfast.kernels' has no attribute {name!r}")


__all__ = ["FusedTDCrossAttention", "PackedTDWeights", "check_td_inputs", "fuse_model",
           "interpreting", "pack_weights", "require_triton", "td_cross_attention"]
