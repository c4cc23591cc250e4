"""Which ONNX exporter: dynamo vs TorchScript export time, graph size and parity on unseen shapes.

    python benchmarks/bench_export.py [--ckpt DIR] [--out benchmarks/results/export_cpu.json]

For each exporter: seconds to export the qvhighlights-sized model (random init unless
--ckpt), ONNX graph nodes, and max |ONNX Runtime - eager| over 12 shapes none of which
was traced (B 1..16, L 1..75, M 1..32, ragged and not), with top-1 agreement.
Latency of ONNX Runtime fp32 / int8 against eager and the int8 top-1 agreement are
``tdfast bench --backends eager,onnxruntime --int8`` (one timing implementation).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch

from tdfast import TDDETR, TDDETRConfig
from tdfast.bench import machine_info, make_record, write_record
from tdfast.export import export_onnx
from tdfast.export.verify import Shape, verify_onnx

UNSEEN = [Shape(b, n, m, p) for b, n, m, p in [
    (1, 1, 1, False), (1, 5, 1, False), (1, 75, 32, False), (2, 3, 2, True), (3, 37, 11, True),
    (4, 64, 20, True), (5, 10, 32, True), (6, 75, 1, True), (8, 75, 32, True), (9, 50, 9, True),
    (12, 20, 30, True), (16, 75, 32, True)]]


def exporter_rows(model: TDDETR, tmp: Path) -> list[dict]:
    """One row per exporter: export seconds, graph nodes, worst |diff| per output, top-1."""
    import onnx

    rows = []
    for exporter in ("dynamo", "torchscript"):
        start = time.perf_counter()
        path = export_onnx(model, tmp / exporter, exporter=exporter, verify=False, log=None)
        seconds = time.perf_counter() - start
        checks = verify_onnx(path, model, shapes=UNSEEN, strict=False)
        rows.append({"exporter": exporter, "export_seconds": round(seconds, 1),
                     "graph_nodes": len(onnx.load(str(path)).graph.node),
                     **{f"max_abs_{k}": max(r.max_abs[k] for r in checks) for k in checks[0].max_abs},
                     "top1_same": f"{sum(r.top1_same for r in checks)}/{sum(r.shape.batch for r in checks)}",
                     "all_ok": all(r.ok for r in checks)})
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", help="qvhighlights-sized checkpoint (default: random init, seed 0)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "export_cpu.json")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    model = TDDETR.from_pretrained(args.ckpt) if args.ckpt else TDDETR(TDDETRConfig.from_name("qvhighlights"))
    machine = machine_info("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        rows = exporter_rows(model.eval(), Path(tmp))
    setup = {"model": args.ckpt or "qvhighlights preset, random init (seed 0)",
             "shapes": [dataclasses.asdict(s) for s in UNSEEN]}
    write_record(make_record("export", "ONNX export per exporter: seconds, graph nodes, parity with eager "
                             "on 12 untraced shapes", machine, setup, rows), args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
