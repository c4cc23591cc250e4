"""Deployment: ONNX (+ int8 / fp16 variants), TensorRT engines, Triton Inference Server repositories.

One table of formats (``formats.FORMATS``), each a plain function; every
artifact carries its metadata and is verified against eager PyTorch. Optional
heavy dependencies (onnx, onnxruntime, tensorrt) are imported only by the
functions that need them.
"""
from tdfast.export.formats import FORMATS, ensure_export, export
from tdfast.export.onnx_export import DEFAULT_OPSET, export_onnx, read_metadata
from tdfast.export.ort import OrtRunner, make_session
from tdfast.export.quantize import convert_fp16, quantize_int8
from tdfast.export.tensorrt import TrtRunner, build_tensorrt_engine
from tdfast.export.trt_check import check_tensorrt_compat
from tdfast.export.triton_server import write_triton_repository
from tdfast.export.verify import ExportVerificationError, ParityRow, format_table, verify_onnx
from tdfast.export.wrapper import INPUT_NAMES, OUTPUT_NAMES, ExportWrapper

__all__ = [
    "DEFAULT_OPSET", "FORMATS", "INPUT_NAMES", "OUTPUT_NAMES", "ExportVerificationError",
    "ExportWrapper", "OrtRunner", "ParityRow", "TrtRunner", "build_tensorrt_engine",
    "check_tensorrt_compat", "convert_fp16", "ensure_export", "export", "export_onnx",
    "format_table", "make_session", "quantize_int8", "read_metadata", "verify_onnx",
    "write_triton_repository",
]
