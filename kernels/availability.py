"""Can the Triton kernels run here? One place that says no, and how to fix it."""
from __future__ import annotations

import os

import torch

from tdfast.errors import BackendUnavailableError

INSTALL_HINT = "pip install triton (or: pip install 'tdfast[gpu]')"


def interpreting() -> bool:
    """True when ``TRITON_INTERPRET=1``: kernels run in Triton's (slow) CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")


def fix_interpreter_loop_bounds() -> None:
    """Let Triton 3.6's interpreter take a runtime loop bound (``range(b_lo, b_hi + 1)`` in the
    rows kernel) under NumPy >= 2.4.

    The interpreter holds every scalar as a shape-(1,) array and turns it into an int with
    ``int(array)``, which NumPy 2.4 refuses ("only 0-dimensional arrays can be converted to
    Python scalars"); Triton 3.9 squeezes the array first. This makes older interpreters do
    the same. Compiled kernels are untouched; a Triton without the hook is left alone.
    """
    from triton.runtime import interpreter

    patch = getattr(interpreter, "_patch_lang_tensor", None)
    if patch is None or getattr(patch, "_tdfast_squeezes", False):
        return

    def patched(tensor, scope) -> None:
        patch(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patched._tdfast_squeezes = True
    interpreter._patch_lang_tensor = patched


def require_triton(device: torch.device | str) -> None:
    """Raise ``BackendUnavailableError`` unless the fused kernels can run on ``device``.

    CUDA needs triton installed; CPU additionally needs ``TRITON_INTERPRET=1`` set before
    the kernels are first used (Triton decides compiled vs interpreted when a kernel is
    defined, i.e. on the first import of ``tdfast.kernels.td_interaction``).
    """
    device = torch.device(device)
    try:
        import triton  # noqa: F401
    except ImportError:
        raise BackendUnavailableError(
            f"triton backend: the triton package is not installed; {INSTALL_HINT}") from None
    if device.type not in ("cuda", "cpu"):
        raise BackendUnavailableError(
            f"triton backend: expected a CUDA device (or CPU with TRITON_INTERPRET=1), "
            f"got {device}")
    if device.type == "cpu" and not interpreting():
        raise BackendUnavailableError(
            "triton backend: the model is on CPU and Triton kernels need a CUDA GPU; "
            "to run them in Triton's slow CPU interpreter (tests, debugging) set "
            "TRITON_INTERPRET=1 before importing tdfast.kernels, or use backend='eager'")
    import sys

    kernel_module = sys.modules.get("tdfast.kernels.td_interaction")
    if kernel_module is not None and kernel_module.INTERPRETED != interpreting():
        raise BackendUnavailableError(
            f"triton backend: the kernels were defined with TRITON_INTERPRET="
            f"{int(kernel_module.INTERPRETED)} but it is now {int(interpreting())}; set "
            f"TRITON_INTERPRET before tdfast.kernels.td_interaction is first imported")
