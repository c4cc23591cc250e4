"""Triton kernels (``import tdfast.kernels``): the fused TD interaction and the ``triton``
backend switch. Importing this package does not import triton; ``td_interaction`` (the raw
launcher) is loaded on first access.

    from tdfast.kernels import fuse_model
    model = fuse_model(TDDETR.from_pretrained(ckpt, device="cuda"))   # in place
    with torch.inference_mode():
        out = model(video, video_mask, query, query_mask)

``python -m tdfast.kernels.aot --arch 90 --json OUT`` compiles the kernels for a GPU that is
not here and records registers, spills and shared memory (``tdfast.kernels.aot``).
"""
from tdfast.kernels.availability import interpreting, require_triton
from tdfast.kernels.fuse import FusedTDCrossAttention, fuse_model
from tdfast.kernels.launch_config import LaunchConfig, all_configs, check_config, default_config
from tdfast.kernels.packing import PackedTDWeights, pack_weights
from tdfast.kernels.validate import check_td_inputs


def __getattr__(name: str):
    if name == "td_interaction":  # imports triton; kept lazy so `import tdfast.kernels` is cheap
        from tdfast.kernels.td_interaction import td_interaction

        return td_interaction
    raise AttributeError(f"module 'tdfast.kernels' has no attribute {name!r}")


__all__ = ["FusedTDCrossAttention", "LaunchConfig", "PackedTDWeights", "all_configs",
           "check_config", "check_td_inputs", "default_config", "fuse_model", "interpreting",
           "pack_weights", "require_triton", "td_interaction"]
