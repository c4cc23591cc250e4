"""ONNX Runtime: session construction and a runner with the model's call signature.

``OrtRunner(path)(video, video_mask, query, query_mask)`` returns the same dict
keys as ``TDDETR.forward`` (numpy arrays). CPU execution provider by default;
``device="cuda"`` needs the ``onnxruntime-gpu`` wheel. Inputs are validated
with ``tdfast.retrieval.inputs.check_inputs`` against the config stored in the
file's metadata, so an all-padding query row raises ``InputError`` instead of
returning garbage.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from tdfast.errors import BackendUnavailableError, InputError
from tdfast.export.wrapper import INPUT_NAMES, OUTPUT_NAMES

OPT_LEVELS = ("disable", "basic", "extended", "all")


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailableError(
            "onnxruntime is not installed: pip install onnxruntime (CPU) or "
            "pip install onnxruntime-gpu (CUDA), or pip install 'tdfast[dev]'") from None
    return onnxruntime


def providers_for(device: str) -> list[str]:
    """Execution providers for ``device`` ("cpu" or "cuda"), best first."""
    ort = _ort()
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise BackendUnavailableError(
                f"device='cuda': ONNX Runtime has no CUDAExecutionProvider here (available: "
                f"{available}); pip uninstall onnxruntime && pip install onnxruntime-gpu, "
                f"and make sure a CUDA GPU and driver are present")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise InputError(f"device: expected 'cpu' or 'cuda', got {device!r}")


def make_session(path: str | Path, device: str = "cpu", threads: int | None = None,
                 opt_level: str = "all", spin: bool = False, profile_prefix: str | None = None):
    """An ``InferenceSession`` for ``path``.

    ``threads``: intra-op threads (None = ONNX Runtime's default, one per physical core);
    ``opt_level``: graph optimization level, one of ``OPT_LEVELS``; ``spin``: let idle
    intra-op threads busy-wait for the next call (ONNX Runtime's default). Off here: the
    spinning threads keep the cores busy after each call, which slows whatever runs next
    in the process (PyTorch postprocessing, another backend) on a machine with few cores.
    ``profile_prefix``: write ONNX Runtime's node profile there (``session.end_profiling()``).
    """
    ort = _ort()
    if opt_level not in OPT_LEVELS:
        raise InputError(f"opt_level: expected one of {OPT_LEVELS}, got {opt_level!r}")
    if not Path(path).is_file():
        raise InputError(f"path: ONNX file {str(path)!r} does not exist")
    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[opt_level]
    if threads is not None:
        if threads < 1:
            raise InputError(f"threads: expected >= 1, got {threads}")
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if profile_prefix is not None:
        so.enable_profiling, so.profile_file_prefix = True, profile_prefix
    so.log_severity_level = 3  # errors only; ORT's shape-inference warnings are noise here
    return ort.InferenceSession(str(path), sess_options=so, providers=providers_for(device))


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


class OrtRunner:
    """Callable ONNX Runtime model: ``(video, video_mask, query, query_mask) -> dict``.

    Inputs: numpy arrays or torch tensors, video [B, L, video_dim], video_mask [B, L]
    (bool or 0/1), query [B, M, text_dim], query_mask [B, M]. Output: ``pred_spans``
    [B, Q, 2], ``pred_logits`` [B, Q, 2], ``saliency_scores`` [B, L] as numpy arrays.
    """

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None,
                 opt_level: str = "all", check: bool = True) -> None:
        from tdfast.model.config import TDDETRConfig

        self.path = Path(path)
        self.device = device
        self.session = make_session(path, device, threads, opt_level)
        meta = self.session.get_modelmeta().custom_metadata_map
        if "config" not in meta:
            raise InputError(f"{self.path}: no tdfast config in the ONNX metadata; "
                             f"export it with tdfast.export.export_onnx")
        self.config = TDDETRConfig.from_json(meta["config"], source=f"{self.path} metadata")
        self.metadata = dict(meta)
        self.check = check
        names = [i.name for i in self.session.get_inputs()]
        if tuple(names) != INPUT_NAMES:
            raise InputError(f"{self.path}: expected graph inputs {INPUT_NAMES}, got {tuple(names)}")
        # fp16 variants keep float32 I/O, but read the declared types rather than assume.
        self._dtypes = {i.name: _NP_TYPES[i.type] for i in self.session.get_inputs()}

    def __call__(self, video: Any, video_mask: Any, query: Any, query_mask: Any) -> dict[str, np.ndarray]:
        arrays = [_to_numpy(x) for x in (video, video_mask, query, query_mask)]
        if self.check:
            from tdfast.retrieval.inputs import check_inputs

            check_inputs(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays), self.config)
        feed = {n: np.ascontiguousarray(a, dtype=self._dtypes[n]) if self._dtypes[n] != np.bool_
                else np.ascontiguousarray(a != 0) for n, a in zip(INPUT_NAMES, arrays)}
        outputs = self.session.run(list(OUTPUT_NAMES), feed)
        return dict(zip(OUTPUT_NAMES, outputs))

    def __repr__(self) -> str:
        return f"OrtRunner({str(self.path)!r}, providers={self.session.get_providers()})"


_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(bool)": np.bool_,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32}
