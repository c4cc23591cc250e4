"""The ``triton`` backend for a whole model: swap each TD interaction for the fused kernels.

``fuse_model(model)`` replaces every ``TDCrossAttention`` inside ``model`` (one per
``TDInteractionLayer``, as ``layer.cross``) by a ``FusedTDCrossAttention`` that holds the very
same parameter tensors under the same names, so ``state_dict``, ``save_pretrained``, ``.to()``
and ``.half()`` behave exactly as before; only ``forward`` changes (same signature). Inference
only: the kernels have no backward, and asking for gradients through them is an error.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from tdfast.errors import BackendUnavailableError, InputError
from tdfast.kernels.availability import require_triton
from tdfast.kernels.packing import PackedTDWeights, pack_weights
from tdfast.model.config import VARIANT_FIELDS
from tdfast.model.td_interaction import TDCrossAttention


class FusedTDCrossAttention(TDCrossAttention):
    """``TDCrossAttention`` whose forward is the fused Triton kernels (same weights, same output).

    Built from an eager module, adopting its submodules and parameters (not copies). The
    packed kernel layout is cached per (dtype, device) and rebuilt when a parameter changes in
    place (optimizer step, ``load_state_dict``) or is replaced (``.to()``). The cache check
    reads only host-side counters, so a CUDA-graph replay never repacks (pack before capture:
    one warm-up call, as any capture needs).
    """

    def __init__(self, eager: TDCrossAttention) -> None:
        variant = [name for name in VARIANT_FIELDS if getattr(eager, name)]
        if variant:  # the kernels implement the official layer only (a LayerNorm first, no null slot)
            raise InputError(f"triton backend: the fused TD kernels implement the official TD layer; "
                             f"expected {', '.join(variant)}=false in the model's config, got true "
                             f"(use backend='eager', 'compile' or 'onnxruntime' for the opt-in variant)")
        nn.Module.__init__(self)  # not TDCrossAttention.__init__: adopt, don't re-create, weights
        self.num_heads, self.use_tdem, self.beta = eager.num_heads, eager.use_tdem, eager.beta
        for name, child in eager.named_children():
            self.add_module(name, child)
        for name, param in eager.named_parameters(recurse=False):
            self.register_parameter(name, param)
        self._packed: tuple[tuple, PackedTDWeights] | None = None

    def packed(self, dtype: torch.dtype, device: torch.device) -> PackedTDWeights:
        """The weights in kernel layout for activations of ``dtype`` on ``device`` (cached)."""
        params = list(self.parameters())
        key = (dtype, device, self.beta, tuple(p._version for p in params),
               tuple(p.data_ptr() for p in params))
        if self._packed is None or self._packed[0] != key:
            if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16):
                # Outside any CUDA-graph capture (packing precedes it): a Triton never measured
                # gets its 16-bit tiles probed here once, not silently spilling ones.
                from tdfast.kernels.launch_config import device_arch
                from tdfast.kernels.tile_probe import ensure_fit16

                ensure_fit16(device_arch(device))
            w = self.weights(None)  # the start token is passed to forward, not packed
            self._packed = (key, pack_weights(w, self.num_heads, self.beta, dtype, device))
        return self._packed[1]

    def forward(self, video: Tensor, pos: Tensor, start: Tensor | None, text: Tensor,
                text_bias: Tensor) -> Tensor:
        """video, pos [B, L, D]; start [D] (None without TDEM); text [B, M, D];
        text_bias [B, 1, 1, M] -> s [B, L, D] (``TDCrossAttention.forward``)."""
        from tdfast.kernels.td_interaction import td_interaction

        if torch.is_grad_enabled() and (video.requires_grad or text.requires_grad
                                        or any(p.requires_grad for p in self.parameters())):
            raise BackendUnavailableError(
                "triton backend: the fused TD kernels have no backward pass; run the model under "
                "torch.no_grad() or torch.inference_mode(), or use backend='eager' to train")
        # fp32 follows torch's own matmul precision switch, so fused and eager match.
        return td_interaction(video, pos, start, text, text_bias, self.packed(video.dtype, video.device))


def fuse_model(model: nn.Module) -> nn.Module:
    """Switch ``model`` (e.g. a ``TDDETR``) to the fused TD kernels, in place; returns ``model``.

    Every ``TDCrossAttention`` submodule becomes a ``FusedTDCrossAttention`` with the same
    parameters. Raises ``BackendUnavailableError`` when triton is missing or the model is
    on CPU without ``TRITON_INTERPRET=1``, and ``InputError`` when ``model`` has no TD
    interaction or uses the opt-in variant (``VARIANT_FIELDS``), which the kernels do not
    fuse. Calling it twice is harmless.
    """
    param = next(model.parameters(), None)
    require_triton(param.device if param is not None else "cpu")
    import tdfast.kernels.td_interaction  # noqa: F401  define the kernels now, under today's env

    found = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, TDCrossAttention):
                found += 1
                if not isinstance(child, FusedTDCrossAttention):
                    setattr(module, name, FusedTDCrossAttention(child))
    if not found:
        raise InputError(f"model: expected a module containing TDCrossAttention layers "
                         f"(a TDDETR), got {type(model).__name__} with none")
    return model
