"""Which PyTorch exporter: both run on the same model, checked against eager on 12 unseen shapes.

    python -m tdfast.export.compare [--preset qvhighlights] [--seed 0]

prints the table quoted in docs/export.md ("Which exporter, and why"): per exporter,
the worst max |onnx - eager| per output over the shapes, top-1 agreement, graph size
and export time (wall clock, one run: the same order of magnitude on any machine).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from tdfast.export.onnx_export import export_onnx
from tdfast.export.options import EXPORTERS
from tdfast.export.verify import Shape, verify_onnx
from tdfast.export.wrapper import OUTPUT_NAMES

# B 1..16, L 1..75, M 1..32, ragged and not; none is the trace's (B=2 L=17 M=7). Lengths are
# capped at the config's maxima by ``shapes_for``.
EXPORTER_SHAPES = [Shape(b, l, m, p) for b, l, m, p in [
    (1, 1, 1, False), (1, 5, 1, False), (1, 75, 32, False), (2, 3, 2, True), (3, 37, 11, True),
    (4, 64, 20, True), (5, 10, 32, True), (6, 75, 1, True), (8, 75, 32, True), (9, 50, 9, True),
    (12, 20, 30, True), (16, 75, 32, True)]]


def shapes_for(config) -> list[Shape]:
    """``EXPORTER_SHAPES`` with L and M capped at the config's max lengths."""
    return [Shape(s.batch, min(s.video_len, config.max_video_len), min(s.query_len, config.max_query_len),
                  s.padded) for s in EXPORTER_SHAPES]


def compare_exporters(model: nn.Module, out_dir: str | Path) -> dict[str, dict]:
    """Export ``model`` with each exporter into ``out_dir/<exporter>/`` and verify both on
    ``shapes_for(model.config)`` (no tolerance enforced: the numbers are the result).

    Returns per exporter: ``max_abs`` (output -> worst max |diff|), ``top1_same`` [same, rows],
    ``nan``, ``ok`` (all within 1e-4 with the same top-1), ``graph_nodes``, ``export_seconds``.
    """
    import onnx

    result = {}
    shapes = shapes_for(model.config)
    for exporter in EXPORTERS:
        start = time.perf_counter()
        path = export_onnx(model, Path(out_dir) / exporter, exporter=exporter, verify=False, log=None)
        seconds = time.perf_counter() - start
        rows = verify_onnx(path, model, shapes=shapes, strict=False)
        result[exporter] = {
            "max_abs": {n: max(r.max_abs[n] for r in rows) for n in OUTPUT_NAMES},
            "top1_same": [sum(r.top1_same for r in rows), sum(r.shape.batch for r in rows)],
            "nan": any(r.has_nan for r in rows),
            "ok": all(r.ok for r in rows),
            "graph_nodes": len(onnx.load(str(path), load_external_data=False).graph.node),
            "export_seconds": round(seconds, 1),
        }
    return result


def format_comparison(result: dict[str, dict]) -> str:
    """The comparison as a markdown table."""
    head = ("| exporter | " + " | ".join(f"max abs {n}" for n in OUTPUT_NAMES)
            + " | top-1 | NaN | all ok | graph nodes | export s |")
    lines = [head, "|" + "---|" * (len(OUTPUT_NAMES) + 6)]
    for name, r in result.items():
        diffs = " | ".join(f"{r['max_abs'][n]:.2e}" for n in OUTPUT_NAMES)
        lines.append(f"| {name} | {diffs} | {r['top1_same'][0]}/{r['top1_same'][1]} | "
                     f"{'yes' if r['nan'] else 'no'} | {'yes' if r['ok'] else 'no'} | "
                     f"{r['graph_nodes']} | {r['export_seconds']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from tdfast.model import TDDETR, TDDETRConfig

    ap = argparse.ArgumentParser(prog="python -m tdfast.export.compare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="qvhighlights", help="config preset (random init)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    model = TDDETR(TDDETRConfig.from_name(args.preset)).eval()
    # A fresh model's last span layer is zero (spans independent of the input); randomize it
    # so span parity is not trivially exact.
    torch.nn.init.normal_(model.span_head.layers[-1].weight, std=0.2)
    with tempfile.TemporaryDirectory() as tmp:
        print(format_comparison(compare_exporters(model, tmp)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
