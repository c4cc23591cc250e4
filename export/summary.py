"""The summary printed after ``tdfast export``: every file written, its size, and what it is.

Everything shown is read back from the artifacts themselves (ONNX ``metadata_props``,
the TensorRT sidecar, ``config.pbtxt``), so the summary describes what was written,
not what was asked for.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


def _parity(record: str | None) -> str:
    """One line from a ``verification`` record (see ``verify.verification_record``)."""
    if not record:
        return "not verified (--no-verify)"
    v = json.loads(record)
    worst = max(v["max_abs"].values())
    same, total = v["top1_same"]
    tol = "no tolerance: lossy by design" if v["atol"] is None else f"tolerance {v['atol']:g}"
    if "float64" in v.get("reference", []):  # eager fp32 itself was off by more than the tolerance
        tol += f"; shapes past it judged against float64, within {max(v['bounds'].values()):.1e}"
    verdict = "ok" if v["ok"] else "FAILED"
    nan = "NaN!" if v["nan"] else "no NaN"
    return (f"vs eager on {len(v['shapes'])} unseen shapes: worst max|diff| {worst:.2e} ({tol}), "
            f"top-1 {same}/{total}, {nan}: {verdict}")


def describe(path: Path) -> str:
    """What one written file is, from its own contents ('' for auxiliary files)."""
    if path.suffix == ".onnx":
        from tdfast.export.onnx_export import read_metadata

        meta = read_metadata(path)
        return (f"{meta.get('precision', 'fp32')}, opset {meta.get('opset', '?')}, "
                f"{meta.get('exporter', '?')} exporter; {_parity(meta.get('verification'))}")
    if path.name.endswith(".engine.json"):
        meta = json.loads(path.read_text())
        return (f"TensorRT {meta.get('tensorrt_version', '?')} {meta.get('precision', '?')} engine "
                f"settings, max batch {meta.get('max_batch', '?')}; {_parity(meta.get('verification'))}")
    if path.name == "config.pbtxt":
        from tdfast.export.triton_config import parse_model_config

        cfg = parse_model_config(path.read_text())
        batching = "off"
        if cfg.HasField("dynamic_batching"):
            batching = str(list(cfg.dynamic_batching.preferred_batch_size) or "on")
        return (f"Triton {cfg.backend} model {cfg.name!r}: max_batch_size {cfg.max_batch_size}, "
                f"{len(cfg.input)} inputs, {len(cfg.output)} outputs, dynamic batching {batching}")
    return ""


def export_summary(fmt: str, artifact: Path, files: Sequence[Path]) -> str:
    """The summary block: one line per file (size in MiB, description), then the artifact."""
    lines = [f"summary ({fmt}):"]
    for f in sorted(files):
        lines.append(f"  {f.stat().st_size / 2**20:9.2f} MiB  {f}")
        what = describe(f)
        if what:
            lines.append(f"                 {what}")
    lines.append(f"artifact: {artifact}")
    return "\n".join(lines)
