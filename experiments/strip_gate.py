"""How often ``vsdc_strip_gate`` would strip: the moment dynamics ratio on a benchmark's training data.

``python -m tdfast.experiments.strip_gate --data NAME=DIR ... --thresholds 1.05,1.1 --record PATH``
reads each ``DIR/train.jsonl`` with its features as training does (``MomentDataset``: truncated,
L2-normalized with the ``tiny`` preset), takes every query's moment as VSDC does
(``protected_clips``: the clips its windows touch) and reports the distribution of
``moment_dynamics_ratio`` and, per threshold, the fraction of queries above it (the samples the
gate lets the strip-look reach). docs/fidelity.md, section 5, chose the threshold from it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def ratio_table(data: Path, config: Any) -> list[float]:
    """``moment_dynamics_ratio`` of every training query of ``data`` (a benchmark data dir with
    train.jsonl, video_feats/, text_feats/), one float each, in file order."""
    from tdfast.data.collate import collate
    from tdfast.data.dataset import MomentDataset
    from tdfast.training.vsdc import moment_dynamics_ratio, protected_clips

    dataset = MomentDataset(data / "train.jsonl", data / "video_feats", data / "text_feats", config)
    out: list[float] = []
    for i in range(len(dataset)):
        batch = collate([dataset[i]])
        out.extend(moment_dynamics_ratio(batch.video, protected_clips(batch)).tolist())
    return out


def gate_summary(ratios: list[float], thresholds: list[float]) -> dict[str, Any]:
    """Quantiles (``QUANTILES``) of ``ratios`` and, per threshold, the fraction above it."""
    import numpy as np

    r = np.asarray(ratios, dtype=np.float64)
    return {"queries": int(r.size), "zero": float((r == 0).mean()),
            "quantiles": {str(q): float(np.quantile(r, q)) for q in QUANTILES},
            "above": {str(t): float((r > t).mean()) for t in thresholds}}


def main(argv: list[str] | None = None) -> int:
    from tdfast.benchmarks.machine import machine_info
    from tdfast.errors import InputError
    from tdfast.experiments.ablation import parse_values
    from tdfast.experiments.shortcut import write_bench_record
    from tdfast.model.config import TDDETRConfig

    p = argparse.ArgumentParser(prog="python -m tdfast.experiments.strip_gate", description=__doc__)
    p.add_argument("--data", action="append", required=True, metavar="NAME=DIR",
                   help="a benchmark's data folder (repeatable)")
    p.add_argument("--thresholds", default="1.05,1.1,1.15,1.2")
    p.add_argument("--max-video-len", type=int, default=75)
    p.add_argument("--out", required=True, help="folder for <name>.json / .md")
    p.add_argument("--name", default="strip_gate")
    p.add_argument("--record", help="also copy the JSON record here")
    args = p.parse_args(argv)
    thresholds = parse_values(args.thresholds, "--thresholds")
    if not thresholds or not all(0 <= t < float("inf") for t in thresholds):
        raise InputError(f"--thresholds: expected finite numbers >= 0, got {args.thresholds!r}")
    config = TDDETRConfig.from_name("tiny", max_video_len=args.max_video_len)
    per_data: dict[str, Any] = {}
    for item in args.data:
        name, _, folder = item.partition("=")
        if not name or not folder or not (Path(folder) / "train.jsonl").is_file():
            raise InputError(f"--data: expected NAME=DIR with DIR/train.jsonl, got {item!r}")
        per_data[name] = gate_summary(ratio_table(Path(folder), config), thresholds)
    lines = ["| data | queries | ratio 0 % | median | " + " | ".join(f"> {t:g} %" for t in thresholds) + " |",
             "|---|---|---|---|" + "---|" * len(thresholds)]
    for name, s in per_data.items():
        above = " | ".join(f"{100 * s['above'][str(t)]:.1f}" for t in thresholds)
        lines.append(f"| {name} | {s['queries']} | {100 * s['zero']:.1f} | {s['quantiles']['0.5']:.3f} | {above} |")
    record = {"data": per_data, "thresholds": thresholds, "machine": machine_info("cpu"),
              "inputs": {"command": "python -m tdfast.experiments.strip_gate "
                                    + " ".join(sys.argv[1:] if argv is None else argv)},
              "table": []}
    write_bench_record(Path(args.out), record, args.name, "\n".join(lines) + "\n", args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
