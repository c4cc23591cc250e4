"""``tdfast export CKPT --format onnx|onnx-int8|onnx-fp16|tensorrt|triton-server --out DIR``.

Also reachable as ``python -m tdfast.export ...`` (same arguments). Exit codes: 0 written
and verified; 1 the artifact does not match eager PyTorch (table on stderr, nothing
replaced); 2 bad arguments or a missing optional dependency.
"""
from __future__ import annotations

import argparse
import sys

from tdfast.cli.choices import TableKeys
from tdfast.defaults import MAX_BATCH
from tdfast.export.options import (DEFAULT_MODEL_NAME, DEFAULT_PRECISION, EXPORTERS,
                                   PRECISIONS, ExportOptions)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ckpt", help="checkpoint directory (config.json + model.safetensors)")
    p.add_argument("--format", "-f", default="onnx", choices=TableKeys("tdfast.export.formats", "FORMATS"), metavar="FORMAT",
                   help="artifact to write: %(choices)s (default: onnx)")
    p.add_argument("--out", "-o", required=True, help="output directory")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18; >= 17)")
    p.add_argument("--exporter", choices=EXPORTERS, default=ExportOptions.exporter,
                   help="PyTorch ONNX exporter (default: dynamo; see docs/export.md)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the parity check against eager PyTorch")
    p.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                   help=f"TensorRT kernel precision (default: {DEFAULT_PRECISION})")
    p.add_argument("--max-batch", type=int, default=MAX_BATCH,
                   help=f"TensorRT profile max batch / Triton max_batch_size (default: {MAX_BATCH})")
    p.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="Triton model name")


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a checkpoint to ONNX / TensorRT / Triton",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from tdfast.export.formats import export
    from tdfast.export.summary import export_summary
    from tdfast.export.verify import ExportVerificationError

    from tdfast.cli.paths import check_writable_dir

    check_writable_dir("--out", args.out)  # before the (slow) export
    start = time.time()
    try:
        artifact = export(args.ckpt, args.format, args.out, ExportOptions(
            opset=args.opset, exporter=args.exporter, verify=args.verify, precision=args.precision,
            max_batch=args.max_batch, model_name=args.model_name))
    except ExportVerificationError as e:
        print(f"tdfast export: verification FAILED: {e}\nNo artifact was replaced; the failing graph "
              f"is kept as *.unverified.onnx in {args.out}", file=sys.stderr)
        return 1
    # The files this run wrote (the output dir may hold others); 1 s of slack for coarse mtimes.
    files = [p for p in Path(args.out).rglob("*")
             if p.is_file() and not p.name.startswith(".") and p.stat().st_mtime >= start - 1]
    print("\n" + export_summary(args.format, artifact, files))
    return 0
