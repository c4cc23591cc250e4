"""Deployment: ONNX (+ int8 / fp16 variants), TensorRT engines, Triton Inference Server repositories.

One table of formats (``formats.FORMATS``), each a plain function; every
artifact carries its metadata and is verified against eager PyTorch. Optional
heavy dependencies (onnx, onnxruntime, tensorrt) are imported only by the
functions that need them.
"""
from tdfast.lazy import lazy_getattr

_LAZY = {  # public name -> module (imported on first use: tdfast.export.options stays torch-free)
    "FORMATS": "formats", "ensure_export": "formats", "export": "formats",
    "DEFAULT_OPSET": "options", "export_onnx": "onnx_export", "read_metadata": "onnx_export",
    "OrtRunner": "ort", "make_session": "ort", "convert_fp16": "quantize", "quantize_int8": "quantize",
    "TrtRunner": "tensorrt", "build_tensorrt_engine": "tensorrt", "check_tensorrt_compat": "trt_check",
    "write_triton_repository": "triton_server", "ExportVerificationError": "verify",
    "ParityRow": "verify", "format_table": "verify", "verify_onnx": "verify",
    "INPUT_NAMES": "wrapper", "OUTPUT_NAMES": "wrapper", "ExportWrapper": "wrapper",
    "ExportOptions": "options",
}


__getattr__ = lazy_getattr(__name__, {k: f"tdfast.export.{m}" for k, m in _LAZY.items()})

__all__ = [
    "DEFAULT_OPSET", "ExportOptions", "FORMATS", "INPUT_NAMES", "OUTPUT_NAMES", "ExportVerificationError",
    "ExportWrapper", "OrtRunner", "ParityRow", "TrtRunner", "build_tensorrt_engine",
    "check_tensorrt_compat", "convert_fp16", "ensure_export", "export", "export_onnx",
    "format_table", "make_session", "quantize_int8", "read_metadata", "verify_onnx",
    "write_triton_repository",
]
